"""convert_to_hat masks the units of every Linear / Conv layer and keeps the weights,
refuses what it cannot mask with an error naming the layer and the fix, and its
protection freezes exactly the units other tasks use."""

import re

import pytest
import torch
from avalanche.models import IncrementalClassifier, MTSimpleMLP, MultiHeadClassifier
from torch import nn

from avalanche_ctr.compat import PaddedMultiTaskModule
from avalanche_ctr.hat import HATLayer, HATNet, UnsupportedLayerError, convert_to_hat


class TinyConvNet(PaddedMultiTaskModule):
    def __init__(self, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            *([norm] if norm is not None else []),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 6),
            nn.ReLU(),
        )
        self.classifier = MultiHeadClassifier(6)

    def forward_single_task(self, x, task_label):
        return self.classifier(self.features(x), task_label)


def test_every_linear_and_conv_gets_a_mask_over_its_units_and_keeps_its_weights():
    model = TinyConvNet()
    conv, fc = model.features[0].weight.clone(), model.features[4].weight.clone()
    net = convert_to_hat(model)
    assert isinstance(net, HATNet)
    layers = net.hat_layers
    assert [type(layer.layer) for layer in layers] == [nn.Conv2d, nn.Linear]
    assert [layer.n_units for layer in layers] == [4, 6]  # channels, features
    assert torch.equal(layers[0].layer.weight, conv) and torch.equal(layers[1].layer.weight, fc)
    assert isinstance(net.net.classifier, MultiHeadClassifier)  # the heads stay per task
    assert net.n_units == 10
    assert convert_to_hat(net) is net


def test_a_task_sees_only_its_units_and_an_untrained_task_none():
    net = convert_to_hat(TinyConvNet())
    net.start_task(0)
    conv = net.hat_layers[0]
    with torch.no_grad():
        conv.mask.embeddings[0].copy_(torch.tensor([1.0, -1.0, 2.0, -0.5]))
    x = torch.randn(3, 1, 8, 8)
    conv.task, conv.s = 0, None
    out = conv(x)
    expected = conv.layer(x) * torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, -1, 1, 1)
    assert torch.equal(out, expected)
    conv.s = 400.0  # training: sigma(s e)
    soft = torch.sigmoid(400.0 * conv.mask.embeddings[0]).view(1, -1, 1, 1)
    assert torch.equal(conv(x), conv.layer(x) * soft)
    conv.task = None  # a task never trained: every unit off
    assert torch.equal(conv(x), torch.zeros_like(out))


def test_protection_freezes_the_weights_and_bias_of_units_another_task_uses():
    net = convert_to_hat(MTSimpleMLP(input_size=8, hidden_size=6))
    net.start_task(0)
    with torch.no_grad():
        net.hat_layers[0].mask.embeddings[0].copy_(torch.tensor([1.0, -1, 1, -1, -1, 1]))
    net.finish_task()
    net.start_task(1)
    freeze = net.protection()
    layer = net.hat_layers[0].layer
    before = [layer.weight.detach().clone(), layer.bias.detach().clone()]
    with torch.no_grad():
        layer.weight.add_(1.0)
        layer.bias.add_(1.0)
    freeze.restore()
    used = torch.tensor([True, False, True, False, False, True])
    assert torch.equal(layer.weight[used], before[0][used])
    assert torch.equal(layer.bias[used], before[1][used])
    assert torch.equal(layer.weight[~used], before[0][~used] + 1)
    assert torch.equal(layer.bias[~used], before[1][~used] + 1)


@pytest.mark.parametrize(
    ("model", "said"),
    [
        (
            TinyConvNet(nn.BatchNorm2d(4)),
            "layer 'features.1' (BatchNorm2d) keeps statistics and parameters that every "
            "task would change",
        ),
        (TinyConvNet(nn.GroupNorm(2, 4)), "layer 'features.1' (GroupNorm) has parameters"),
        (
            TinyConvNet(IncrementalClassifier(4)),
            "layer 'features.1' (IncrementalClassifier) changes shape during training",
        ),
    ],
)
def test_layers_it_cannot_mask_are_refused_naming_them(model, said):
    with pytest.raises(UnsupportedLayerError, match=re.escape(said)) as error:
        convert_to_hat(model)
    assert "MultiHeadClassifier" in str(error.value)  # what to use instead


def test_a_model_without_per_task_heads_is_refused():
    with pytest.raises(ValueError, match="has no per-task heads: HAT gives every task its own"):
        convert_to_hat(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    with pytest.raises(UnsupportedLayerError, match="holds parameters directly"):
        convert_to_hat(nn.Linear(4, 2))
    heads_only = TinyConvNet()
    heads_only.features = nn.Flatten()
    with pytest.raises(ValueError, match="nothing to mask"):
        convert_to_hat(heads_only)


def test_hat_layer_refuses_other_layers():
    with pytest.raises(TypeError, match="HATLayer masks Linear, Conv1d or Conv2d, got Embedding"):
        HATLayer(nn.Embedding(3, 2))
