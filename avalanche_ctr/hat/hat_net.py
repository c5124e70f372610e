"""Conversion of a user's model into a HAT network, and the network itself (HAT, Serra
et al., ICML 2018, Sec. 2).

:func:`convert_to_hat` puts a :class:`HATLayer` in place of every ``Linear``,
``Conv1d`` and ``Conv2d`` layer: the layer as it was (its weights are kept and trained)
followed by a per-task HAT mask over its units (output features, or output channels),
the paper's ``h' = a_t ⊙ h`` after every hidden layer. The per-task heads
(:class:`~avalanche.models.MultiHeadClassifier`) stay as they are: HAT's own models
have one output layer per task. :class:`HATNet` wraps the converted model; it is a
:class:`~avalanche.models.MultiTaskModule`, so Avalanche passes it the task labels,
and before running the wrapped model for a task it sets that task's masks in every
layer.

The gate multiplies the layer's output, bias included, before whatever follows it
(activation, pooling, dropout). For ReLU, max-pooling and dropout this is HAT's mask
after the activation, in training as well: they commute with a factor ``m ≥ 0``. With
the binary test-time masks (:mod:`~avalanche_ctr.hat.masks`) a unit off for a task
outputs exactly 0, so its incoming weights do not reach that task, whatever follows.

**Protection without the model's wiring.** HAT freezes a weight when the unit it feeds
and the unit it reads are both used by an earlier task (Eq. 2, ``1 - min(a_out,
a_in)``); which unit a weight reads depends on how the model's ``forward`` connects its
layers (flattening, skip connections, concatenation), which a converted model does not
declare. :meth:`HATLayer.free_entries` therefore freezes every weight and bias of a
unit another task uses, whatever it reads. This is exact for any ``forward``: a unit a
task does not use outputs 0 for it, and the units it uses have every incoming weight
frozen. It freezes more than HAT: the weights from units no other task uses into
units another task uses, which HAT lets a later task train. A later task still trains
every weight of the units no other task uses and reuses the others as they are.
"""

from __future__ import annotations

from typing import Any

from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from avalanche_ctr.compat import PaddedMultiTaskModule, widest_head
from avalanche_ctr.exssnet.supermask import UnsupportedLayerError, refuse_unmaskable
from avalanche_ctr.exssnet.supermask_net import FrozenModule
from avalanche_ctr.hat.masks import HATMask, HATModel
from avalanche_ctr.hub import HubModel, backbone_entry, backbone_from
from avalanche_ctr.masking import PartialFreeze

__all__ = [
    "HATLayer",
    "HATNet",
    "SUPPORTED_LAYERS",
    "UnsupportedLayerError",
    "convert_to_hat",
]

SUPPORTED_LAYERS = (
    "Linear, Conv1d and Conv2d (their units masked per task), MultiHeadClassifier heads "
    "(one per task), FrozenModule parts (left as they are, e.g. a frozen encoder) and "
    "layers without parameters"
)
"""What :func:`convert_to_hat` accepts, as its errors say it."""

_MASKED = (nn.Linear, nn.Conv1d, nn.Conv2d)


class HATLayer(nn.Module):
    """A ``Linear`` / ``Conv1d`` / ``Conv2d`` layer followed by HAT's per-task mask over
    its units: ``layer(x) ⊙ m_t`` (HAT Sec. 2.1), broadcast over the spatial positions of
    a convolution's channels.

    :attr:`task` and :attr:`s` are set by :class:`HATNet` before every forward pass: the
    task's embedding index (``None``: a task never trained, every unit off) and the mask
    scale (``None``: the binary test-time mask).

    :param layer: the layer (kept, with its weights).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(layer, _MASKED):
            raise TypeError(f"HATLayer masks Linear, Conv1d or Conv2d, got {type(layer).__name__}")
        self.layer = layer
        units = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        self.mask = HATMask(units).to(layer.weight.device)
        self.task: int | None = None
        self.s: float | None = None

    @property
    def n_units(self) -> int:
        return self.mask.n_units

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer(x)
        if self.task is None:
            gate = out.new_zeros(self.n_units)
        else:
            gate = self.mask.mask(self.task, self.s)
        if isinstance(self.layer, nn.Linear):
            return out * gate
        return out * gate.view(-1, *([1] * (out.dim() - 2)))

    def free_entries(self) -> list[tuple[Tensor, Tensor]]:
        """``(parameter, free)`` pairs: the weights and bias of the units no other task
        uses are free, those of the others frozen (the module docstring says why the
        input side is not read)."""
        used = self.mask.reference_used()
        weight = self.layer.weight
        pairs = [(weight, ~used.view(-1, *([1] * (weight.dim() - 1))))]
        if self.layer.bias is not None:
            pairs.append((self.layer.bias, ~used))
        return pairs

    def extra_repr(self) -> str:
        return f"units={self.n_units}"


class HATNet(HATModel, PaddedMultiTaskModule, HubModel, model_type="hat"):
    """A model whose ``Linear`` / ``Conv1d`` / ``Conv2d`` layers carry HAT masks, with
    per-task heads. Build it with :func:`convert_to_hat`; train it with
    :class:`~avalanche_ctr.hat.lifecycle.HATPlugin` (or the
    :class:`~avalanche_ctr.hat.strategy.HAT` strategy).

    Each task owns one embedding per :class:`HATLayer` (``n_units`` floats) and its head;
    that is all a task adds to the model (``bytes added / task`` in ``compare``).

    :param net: the converted model.
    :param s_max: HAT's largest mask scale, reached at the end of every training epoch
        (the test-time masks are binary, so it does not change trained tasks).
    """

    def __init__(self, net: nn.Module, s_max: float = 400.0) -> None:
        super().__init__()
        if not s_max > 0:
            raise ValueError(f"s_max must be positive, got {s_max}")
        self.net = net
        self._layer_names = [n for n, m in net.named_modules() if isinstance(m, HATLayer)]
        self._head_names = [n for n, m in net.named_modules() if isinstance(m, MultiHeadClassifier)]
        # a plain tuple (not registered twice): the forward pass walks it on every call
        self._layers = tuple(net.get_submodule(n) for n in self._layer_names)
        if not self._layers:
            raise ValueError(
                "the model has no Linear, Conv1d or Conv2d layer outside its MultiHeadClassifier "
                "heads and FrozenModule parts: there is nothing to mask; give HAT a model with "
                "at least one such layer"
            )
        if not self._head_names or not isinstance(net, MultiTaskModule):
            raise ValueError(
                f"the model ({type(net).__name__}) has no per-task heads: HAT gives every task "
                "its own output layer (Serra et al. 2018, Sec. 4), and a shared output layer "
                "would be changed by every task. Give HAT an avalanche.models.MultiTaskModule "
                "that ends with a MultiHeadClassifier (e.g. avalanche.models.MTSimpleMLP)"
            )
        widest_head(self)
        self.s_max = float(s_max)
        self.s = float(s_max)
        self._register_task_state()

    # ------------------------------------------------------------ model folder
    def hub_arguments(self) -> dict[str, Any]:
        """``s_max`` and, over a backbone of ours, the backbone's type and arguments
        (:func:`~avalanche_ctr.hub.backbone_entry`); over any other backbone ``None``,
        and ``from_pretrained`` then takes the backbone."""
        return {"s_max": self.s_max, "backbone": backbone_entry(self.net)}

    @classmethod
    def hub_build(cls, arguments: dict[str, Any], *, backbone: nn.Module | None = None) -> HATNet:
        """The HAT network of :meth:`hub_arguments` before training: over ``backbone``
        (the user's model, unconverted, built as before training) or the stored one."""
        return convert_to_hat(
            backbone_from(arguments.get("backbone"), backbone, "HATNet"),
            s_max=arguments["s_max"],
        )

    # ----------------------------------------------------------------- layers
    @property
    def hat_layers(self) -> list[HATLayer]:
        return list(self._layers)

    @property
    def named_masks(self) -> list[tuple[str, HATMask]]:
        """Every HAT mask, named by its layer's path in the wrapped model."""
        names = self._layer_names
        return [(name, layer.mask) for name, layer in zip(names, self._layers, strict=True)]

    def masks(self) -> list[HATMask]:
        return [layer.mask for layer in self._layers]

    @property
    def heads(self) -> list[MultiHeadClassifier]:
        return [self.net.get_submodule(n) for n in self._head_names]

    @property
    def n_units(self) -> int:
        """Number of masked units; a task's embeddings are ``n_units`` floats."""
        return sum(layer.n_units for layer in self._layers)

    # -------------------------------------------------------- task lifecycle
    def _install_task(self, task: int) -> list[nn.Parameter]:
        self._append_task_label(task)
        return [mask.add_task() for mask in self.masks()]

    def set_trainable(self) -> None:
        """Only the training task's embeddings, the masked layers' weights (protected by
        :meth:`protection`) and the task's head in every head module are trainable."""
        task = self.training_task
        if task is None:
            raise RuntimeError("no task is in training; call start_task first")
        index = self.training_index
        self.requires_grad_(False)
        for layer in self._layers:
            layer.layer.requires_grad_(True)
            layer.mask.embeddings[index].requires_grad_(True)
        for head in self.heads:
            if str(task) in head.classifiers:
                head.classifiers[str(task)].requires_grad_(True)

    def protection(self) -> PartialFreeze:
        """Freeze of the weights and biases of every unit another task uses (HAT Eq. 2,
        exact for any wiring; see the module docstring)."""
        return PartialFreeze([pair for layer in self._layers for pair in layer.free_entries()])

    # --------------------------------------------------------------- forward
    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        """Logits of task ``task_label`` for ``x``: the wrapped model with the task's masks
        (soft ``σ(s e_t)`` in training, binary ``1[e_t > 0]`` in evaluation). A task never
        trained claims no unit: its head reads zeros."""
        task = int(task_label)
        for head in self.heads:
            if str(task) not in head.classifiers:
                raise ValueError(
                    f"task {task} was never trained by this model and has no head (trained "
                    f"tasks: {self.trained_tasks}); evaluate it with strategy.eval(...), "
                    "which gives an untrained task a temporary head, or train it first"
                )
        labels = self.task_labels
        index = labels.index(task) if task in labels else None
        s = self.s if self.training else None
        for layer in self._layers:
            layer.task, layer.s = index, s
        return self.net(x, task_label)


def _check_leaf(child: nn.Module, path: str) -> None:
    kind = type(child).__name__
    if isinstance(child, _BatchNorm):
        raise UnsupportedLayerError(
            f"layer '{path}' ({kind}) keeps statistics and parameters that every task would "
            f"change, and HAT cannot mask it; HAT models may contain {SUPPORTED_LAYERS} only "
            "(drop the BatchNorm, or wrap a pretrained part that stays fixed in "
            "avalanche_ctr.exssnet.FrozenModule)",
            kind,
        )
    refuse_unmaskable(child, path, "HAT", SUPPORTED_LAYERS)


def _convert_children(module: nn.Module, prefix: str) -> None:
    for name, child in list(module.named_children()):
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, (MultiHeadClassifier, HATLayer, FrozenModule)):
            continue
        if isinstance(child, _MASKED):
            setattr(module, name, HATLayer(child))
            continue
        _check_leaf(child, path)
        _convert_children(child, path)


def convert_to_hat(model: nn.Module, *, s_max: float = 400.0) -> HATNet:
    """Turn ``model`` into a :class:`HATNet`, in place.

    Every ``Linear``, ``Conv1d`` and ``Conv2d`` outside the per-task heads becomes a
    :class:`HATLayer` (the layer, its weights kept, and a HAT mask over its units);
    :class:`~avalanche.models.MultiHeadClassifier` heads stay per-task heads;
    :class:`~avalanche_ctr.exssnet.FrozenModule` parts are left as they are. Any other
    layer with parameters (BatchNorm, LayerNorm, Embedding, ...) or a layer that changes
    shape raises
    :class:`~avalanche_ctr.exssnet.supermask.UnsupportedLayerError` (a ``ValueError``)
    naming it and what is supported; so does a model without per-task heads.

    :param model: the user's model, a :class:`~avalanche.models.MultiTaskModule` with
        ``MultiHeadClassifier`` heads, such as ``MTSimpleMLP``.
    :param s_max: HAT's largest mask scale (:class:`HATNet`).
    """
    if isinstance(model, HATNet):
        return model
    if any(True for _ in model.parameters(recurse=False)) or isinstance(model, _MASKED):
        raise UnsupportedLayerError(
            f"the model ({type(model).__name__}) holds parameters directly and cannot be "
            "masked; put them in Linear / Conv1d / Conv2d submodules followed by "
            "MultiHeadClassifier heads",
            type(model).__name__,
        )
    _convert_children(model, "")
    return HATNet(model, s_max=s_max)
