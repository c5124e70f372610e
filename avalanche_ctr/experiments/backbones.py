"""Backbones the comparison gives every image strategy: the same shape for all.

* :class:`MultiHeadMLP` -- ``Flatten → (Linear → ReLU) × layers`` and
  Avalanche's :class:`~avalanche.models.MultiHeadClassifier` (one head per task);
* :class:`MultiHeadConvNet` -- four 3x3 convolutions with ReLU and two max-pools,
  a Linear layer and the same heads (no BatchNorm, which Avalanche's PackNet
  cannot wrap).

PackNet wraps these backbones with :class:`avalanche_ctr.compat.PackNetMultiHead`.
"""

from __future__ import annotations

from avalanche.models import MultiHeadClassifier
from torch import Tensor, nn

from avalanche_ctr.compat import PaddedMultiTaskModule, widest_head
from avalanche_ctr.hub import HubModel

__all__ = ["multi_head", "MultiHeadMLP", "MaskedOutputMLP", "MultiHeadConvNet"]


def multi_head(feature_size: int, head_units: int | None = None) -> MultiHeadClassifier:
    """Avalanche's per-task heads.

    :param head_units: ``None``: heads as wide as their task's classes, units of
        classes a task never saw masked (Avalanche's default). ``N``: every head has
        ``N`` units, unmasked, so the units beyond the task's classes are
        *superfluous*: training pushes their logits down on the task's inputs,
        which SupSup's task inference reads (its SplitMNIST setting has 10 units
        for 2 classes; :mod:`avalanche_ctr.exssnet.task_inference`).
    """
    if head_units is None:
        return MultiHeadClassifier(feature_size)
    if head_units < 1:
        raise ValueError(f"head_units must be a positive number of units, got {head_units}")
    return MultiHeadClassifier(feature_size, initial_out_features=head_units, masking=False)


def _mlp_features(input_size: int, hidden_sizes: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    """``Flatten → (Linear → ReLU) × len(hidden_sizes)`` and its output width."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = input_size
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers), width


class _MultiHeadNet(PaddedMultiTaskModule):
    """A backbone ``features`` followed by one classification head per task."""

    features: nn.Module

    def __init__(self, features: nn.Module, feature_size: int, head_units: int | None) -> None:
        super().__init__()
        self.features = features
        self.classifier = multi_head(feature_size, head_units)
        widest_head(self)

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        return self.classifier(self.features(x), task_label)


class MultiHeadMLP(_MultiHeadNet, HubModel, model_type="multi_head_mlp"):
    """``Flatten → (Linear → ReLU) × len(hidden_sizes)`` with per-task heads.

    :param input_size: number of input features after flattening.
    :param hidden_sizes: width of each hidden layer.
    :param head_units: see :func:`multi_head`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: tuple[int, ...] = (256, 256),
        head_units: int | None = None,
    ) -> None:
        super().__init__(*_mlp_features(input_size, hidden_sizes), head_units)


class MaskedOutputMLP(nn.Module, HubModel, model_type="masked_output_mlp"):
    """``Flatten → (Linear → ReLU) × len(hidden_sizes) → Linear(·, outputs)``: one output
    layer shared by every task, no per-task heads.

    The supermask strategies mask the output layer per task like every other layer,
    as the official SupSup and ExSSNeT models do (``small.py``: every layer masked, no
    bias), so a task's classifier is its mask over the shared output weights; dense
    strategies train it as a single head shared by all tasks.

    :param input_size: number of input features after flattening.
    :param hidden_sizes: width of each hidden layer.
    :param outputs: output units (at least the classes of any task; more are
        superfluous units).
    """

    def __init__(
        self, input_size: int, hidden_sizes: tuple[int, ...] = (256, 256), outputs: int = 10
    ) -> None:
        super().__init__()
        if outputs < 1:
            raise ValueError(f"outputs must be a positive number of units, got {outputs}")
        self.features, width = _mlp_features(input_size, hidden_sizes)
        self.output = nn.Linear(width, outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))


class MultiHeadConvNet(_MultiHeadNet, HubModel, model_type="multi_head_convnet"):
    """Four 3x3 convolutions (``channels``, ``channels``, ``2·channels``, ``2·channels``)
    with ReLU, a 2x2 max-pool after the second and the fourth, then
    ``Linear(·, hidden_size) → ReLU`` and per-task heads.

    :param in_channels: image channels.
    :param image_size: image height and width (divisible by 4).
    :param channels: channels of the first two convolutions.
    :param hidden_size: width of the fully connected layer.
    :param head_units: see :func:`multi_head`.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        channels: int = 32,
        hidden_size: int = 256,
        head_units: int | None = None,
    ) -> None:
        wide = 2 * channels
        features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, wide, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(wide, wide, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(wide * (image_size // 4) ** 2, hidden_size),
            nn.ReLU(),
        )
        super().__init__(features, hidden_size, head_units)
