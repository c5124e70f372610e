"""Conv1d supermasks, the error for layers that cannot be masked, and ExSSNeT's text
model (a Kim-CNN over a frozen encoder's token states) end to end."""

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import LENGTH, task_data, tiny_bert
from avalanche.benchmarks import tensors_benchmark
from torch import nn

from avalanche_ctr.benchmarks import text_benchmark
from avalanche_ctr.exssnet import (
    FrozenModule,
    SupermaskConv1d,
    UnsupportedLayerError,
    convert_to_supermask,
)
from avalanche_ctr.models import FrozenTokenStates, KimCNN
from avalanche_ctr.training import ExSSNeT, SupSup


def sequence_task(channel: int, seed: int, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of 4 channels x 12 steps; the label says whether ``channel`` has a
    peak of three rising steps somewhere (a local pattern a Conv1d finds)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 12, generator=generator) * 0.3
    y = torch.arange(n) % 2
    starts = torch.randint(0, 10, (n,), generator=generator)
    for i in torch.nonzero(y).flatten():
        s = int(starts[i])
        x[i, channel, s : s + 3] += torch.tensor([1.0, 2.0, 3.0])
    return x, y


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(4, 32, 3),
        nn.ReLU(),
        nn.AdaptiveMaxPool1d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


def test_conv1d_is_masked_per_task_and_task_0_is_kept_bit_for_bit():
    tasks = [sequence_task(0, seed=0), sequence_task(1, seed=1)]
    benchmark = tensors_benchmark(train_tensors=tasks, test_tensors=tasks, task_labels=[0, 1])
    model = conv_net()
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.3,
        mask_epochs=3,
        weight_epochs=2,
        train_mb_size=32,
        evaluator=quiet_evaluator(),
    )
    net = strategy.model
    conv = net.supermask_layers[0]
    assert isinstance(conv, SupermaskConv1d) and not hasattr(conv, "bias")
    assert conv.weight.shape == (32, 4, 3)
    assert conv.weight.abs().unique().numel() == 1  # signed constant
    x0, y0 = experience_tensors(benchmark.test_stream[0])
    strategy.train(benchmark.train_stream[0])
    after_own = task_logits(net, x0, 0)
    conv_weight = conv.weight.detach().clone()
    strategy.train(benchmark.train_stream[1])
    assert not torch.equal(conv.weight, conv_weight)  # task 1 trained its free weights
    assert torch.equal(task_logits(net, x0, 0), after_own)
    assert (after_own.argmax(1) == y0).float().mean() >= 0.9
    x1, y1 = experience_tensors(benchmark.test_stream[1])
    assert (task_logits(net, x1, 1).argmax(1) == y1).float().mean() >= 0.9
    assert not torch.equal(net.task_masks(0)[0], net.task_masks(1)[0])


def test_a_layer_with_weights_that_cannot_be_masked_is_a_typed_error():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(8, 2))
    message = r"layer '0' \(Embedding\) has parameters"
    with pytest.raises(UnsupportedLayerError, match=message) as info:
        convert_to_supermask(model)
    assert info.value.layer_type == "Embedding"
    assert "Linear, Conv1d and Conv2d" in str(info.value) and "FrozenModule" in str(info.value)
    assert isinstance(info.value, ValueError)
    circular = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1, padding_mode="circular"))
    with pytest.raises(UnsupportedLayerError, match="padding_mode='circular'"):
        convert_to_supermask(circular)


def test_a_frozen_module_is_left_as_it_is():
    frozen = nn.Linear(4, 4)
    weight = frozen.weight.detach().clone()
    net = convert_to_supermask(nn.Sequential(FrozenModule(frozen), nn.Linear(4, 2)))
    assert net.net[0].module is frozen and torch.equal(frozen.weight, weight)
    assert len(net.supermask_layers) == 1 and not frozen.weight.requires_grad
    net.train()
    assert not frozen.training


@pytest.fixture(scope="module")
def text_stream(tokenizer):
    """Two sentiment tasks (books, kitchen): 256 training and 40 test sentences each."""
    train = [task_data("books", 256, seed=0), task_data("kitchen", 256, seed=1)]
    test = [task_data("books", 40, seed=100), task_data("kitchen", 40, seed=101)]
    return text_benchmark(train, test, tokenizer=tokenizer, max_length=LENGTH)


@pytest.mark.parametrize("cls", [ExSSNeT, SupSup])
def test_kim_cnn_over_a_frozen_encoder_learns_two_tasks_and_keeps_task_0(
    cls, tokenizer, text_stream
):
    encoder = tiny_bert(tokenizer)
    encoder_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = KimCNN(encoder, outputs=2, n_filters=32)
    epochs = {"mask_epochs": 4, "weight_epochs": 2} if cls is ExSSNeT else {"train_epochs": 6}
    strategy = cls(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.3,
        train_mb_size=16,
        eval_mb_size=64,
        evaluator=quiet_evaluator(),
        **epochs,
    )
    net = strategy.model
    kinds = [type(layer).__name__ for layer in net.supermask_layers]
    assert kinds == ["SupermaskConv1d"] * 3 + ["SupermaskLinear"]
    x0, y0 = experience_tensors(text_stream.test_stream[0])
    strategy.train(text_stream.train_stream[0])
    after_own = task_logits(net, x0, 0)
    assert (after_own.argmax(1) == y0).float().mean() >= 0.75  # chance: 0.5
    strategy.train(text_stream.train_stream[1])
    assert torch.equal(task_logits(net, x0, 0), after_own)
    x1, y1 = experience_tensors(text_stream.test_stream[1])
    assert (task_logits(net, x1, 1).argmax(1) == y1).float().mean() >= 0.75
    # the encoder is untouched, and no text went through it twice
    assert all(torch.equal(v, encoder_state[k]) for k, v in encoder.state_dict().items())
    states = model.token_states
    assert states.misses <= 2 * (256 + 40) and states.hits > 4 * states.misses


def test_token_state_cache_gives_the_states_the_encoder_gives(tokenizer, text_stream):
    x, _ = experience_tensors(text_stream.test_stream[0])
    encoder = tiny_bert(tokenizer)
    cached = FrozenTokenStates(encoder)
    uncached = FrozenTokenStates(encoder, cache_mb=0)
    first = cached(x)
    again = cached(torch.cat([x[5:], x[:5]]))  # other batches, other padding
    assert cached.misses == len(x) and cached.hits == len(x) and cached.cached_bytes > 0
    expected = uncached(x)
    assert torch.allclose(first, expected, atol=1e-5)
    assert torch.allclose(again[-5:, : first.shape[1]], first[:5], atol=1e-5)
    real = x[:, 1, : first.shape[1]].bool()
    assert not first[~real].any()  # zero at padding
    assert uncached.cached_bytes == 0 and uncached.misses == 0
    with pytest.raises(ValueError, match="cache_mb must be 0"):
        FrozenTokenStates(encoder, cache_mb=-1)


def test_token_states_of_a_chosen_layer_are_that_layers_hidden_states(tokenizer, text_stream):
    x, _ = experience_tensors(text_stream.test_stream[0])
    encoder = tiny_bert(tokenizer).eval()
    ids, mask, types = x[:, 0], x[:, 1], x[:, 2]
    with torch.no_grad():
        hidden = encoder(
            input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True
        ).hidden_states
    real = mask.bool().unsqueeze(-1)
    for layer in (0, 1, -1):
        states = FrozenTokenStates(encoder, layer=layer)(x)
        assert torch.allclose(states, (hidden[layer] * real)[:, : states.shape[1]], atol=1e-5)
    assert not torch.allclose(
        FrozenTokenStates(encoder, layer=1)(x), FrozenTokenStates(encoder, layer=0)(x)
    )
    layers = encoder.config.num_hidden_layers
    for bad in (layers + 1, -(layers + 2)):
        with pytest.raises(ValueError, match=f"out of range for an encoder with {layers} layers"):
            KimCNN(encoder, layer=bad)
    with pytest.raises(TypeError, match="layer must be an int"):
        FrozenTokenStates(encoder, layer=1.5)
