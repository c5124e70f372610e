"""AdapterBERT: frozen encoder, shared adapters, per-task heads, trained by Avalanche's
own strategies on a tiny random BERT (no download)."""

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import LENGTH, task_data, tiny_bert
from avalanche.models.dynamic_modules import avalanche_model_adaptation
from avalanche.training import EWC, Naive

from avalanche_ctr.benchmarks import text_benchmark
from avalanche_ctr.models import Adapter, AdapterBERT
from avalanche_ctr.text_encoder import PluggedOutput


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these tiny models run several times faster than with two
    threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stream(tokenizer):
    """Two sentiment tasks (books, then kitchen with flipped labels): 128 training and
    40 test sentences each."""
    train = [task_data("books", 128, 0), task_data("kitchen", 128, 1, flip=True)]
    test = [task_data("books", 40, 100), task_data("kitchen", 40, 101, flip=True)]
    return text_benchmark(train, test, tokenizer=tokenizer, max_length=LENGTH)


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def naive(model: AdapterBERT, **kwargs) -> Naive:
    return Naive(
        model=model,
        optimizer=torch.optim.Adam(trainable(model), lr=0.01),
        train_mb_size=16,
        train_epochs=12,
        eval_mb_size=64,
        evaluator=quiet_evaluator(),
        **kwargs,
    )


def accuracy(model: AdapterBERT, experience, task: int) -> float:
    x, y = experience_tensors(experience)
    return (task_logits(model, x, task).argmax(1) == y).float().mean().item()


def add_heads(model: AdapterBERT, stream) -> None:
    for experience in stream.train_stream:
        avalanche_model_adaptation(model, experience)


def test_encoder_frozen_adapters_trainable_and_shared(tokenizer, stream):
    model = AdapterBERT(tiny_bert(tokenizer), bottleneck=8)
    layers = model.encoder.encoder.layer
    assert len(model.adapters) == 2 * len(layers)
    for layer in layers:
        for sublayer in (layer.attention.output, layer.output):
            assert isinstance(sublayer, PluggedOutput)
            assert isinstance(sublayer.plugin, Adapter)
            assert not any(p.requires_grad for p in sublayer.sublayer.parameters())
    adapter_params = {id(p) for a in model.adapters for p in a.parameters()}
    encoder_own = [p for p in model.encoder.parameters() if id(p) not in adapter_params]
    assert encoder_own and not any(p.requires_grad for p in encoder_own)
    assert all(p.requires_grad for a in model.adapters for p in a.parameters())
    # one adapter per place, whatever the number of tasks: both tasks' losses reach it
    x = torch.randint(5, len(tokenizer.get_vocab()), (4, 3, LENGTH))
    x[:, 1], x[:, 2] = 1, 0
    add_heads(model, stream)
    model.train()
    for task in (0, 1):
        model.zero_grad()
        model(x, task).sum().backward()
        assert all(a.fc1.weight.grad is not None for a in model.adapters)
    assert len(model.adapters) == 2 * len(layers)
    # state_dict holds each adapter once
    keys = [k for k in model.state_dict() if k.endswith("fc1.weight")]
    assert len(keys) == len(model.adapters)


def test_without_adapters_only_heads_train(tokenizer, stream):
    model = AdapterBERT(tiny_bert(tokenizer), adapters=False)
    assert model.adapters == []
    add_heads(model, stream)
    params = trainable(model)
    heads = list(model.classifier.parameters())
    assert params and {id(p) for p in params} == {id(p) for p in heads}


def test_bad_input_and_pooling(tokenizer):
    with pytest.raises(ValueError, match="pooling"):
        AdapterBERT(tiny_bert(tokenizer), pooling="max")
    model = AdapterBERT(tiny_bert(tokenizer), bottleneck=8, pooling="cls")
    with pytest.raises(ValueError, match=r"AdapterBERT expects \(batch, 3, length\)"):
        model(torch.zeros(2, LENGTH, dtype=torch.long), 0)


@pytest.mark.parametrize("adapters", [True, False])
def test_naive_learns_and_adapters_drift(tokenizer, stream, adapters):
    model = AdapterBERT(tiny_bert(tokenizer), bottleneck=16, adapters=adapters)
    strategy = naive(model)
    encoder_before = {
        k: v.clone() for k, v in model.encoder.state_dict().items() if ".plugin." not in k
    }
    x0, _ = experience_tensors(stream.test_stream[0])
    strategy.train(stream.train_stream[0])
    logits_after_0 = task_logits(model, x0, 0)
    assert accuracy(model, stream.test_stream[0], 0) > 0.7
    strategy.train(stream.train_stream[1])
    assert accuracy(model, stream.test_stream[1], 1) > 0.7
    drift = (task_logits(model, x0, 0) - logits_after_0).abs().max().item()
    if adapters:
        assert drift > 0  # the shared adapters moved for task 1: naive drifts
    else:
        assert drift == 0  # frozen encoder, task 0's head untouched
    for k, v in model.encoder.state_dict().items():
        if k in encoder_before:
            assert torch.equal(v, encoder_before[k]), k
    results = strategy.eval(stream.test_stream)
    assert "Top1_Acc_Stream/eval_phase/test_stream/Task001" in results


def test_avalanche_ewc_runs(tokenizer, stream):
    model = AdapterBERT(tiny_bert(tokenizer), bottleneck=8)
    strategy = EWC(
        model=model,
        optimizer=torch.optim.Adam(trainable(model), lr=0.01),
        criterion=torch.nn.CrossEntropyLoss(),
        ewc_lambda=100.0,
        train_mb_size=32,
        train_epochs=1,
        eval_mb_size=64,
        evaluator=quiet_evaluator(),
    )
    for experience in stream.train_stream:
        strategy.train(experience)
    strategy.eval(stream.test_stream)
    importances = strategy.plugins[0].importances[1]
    adapter_names = [k for k in importances if ".plugin.fc1." in k]
    assert adapter_names and any(importances[k].data.abs().sum() > 0 for k in adapter_names)
