"""Conversion of a user's model into a supermask network, and the network itself.

:class:`SupermaskNet` wraps the converted model. It is a
:class:`~avalanche.models.MultiTaskModule`, so Avalanche passes it the task
labels; before running the wrapped model for a task it selects that task's
mask in every supermask layer and that task's BatchNorm.

Finished tasks keep their masks as one bit-packed buffer per task over all
maskable weights (``task_mask_<t>``): ``ceil(N / 8)`` bytes for ``N`` maskable
weights (ExSSNeT, Sec. 3: "the masks are binary and can be stored with 1 bit
per parameter").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from avalanche_ctr.compat import PaddedMultiTaskModule, widest_head
from avalanche_ctr.exssnet.supermask import (
    SupermaskConv1d,
    SupermaskConv2d,
    SupermaskLayer,
    SupermaskLinear,
    TaskBatchNorm,
    UnsupportedLayerError,
    check_weight_scale,
    refuse_unmaskable,
    weight_scale_factor,
)
from avalanche_ctr.hub import HubModel, backbone_entry, backbone_from
from avalanche_ctr.masking import pack_mask, unpack_mask

__all__ = [
    "SupermaskNet",
    "FrozenModule",
    "UnsupportedLayerError",
    "SUPPORTED_LAYERS",
    "convert_to_supermask",
    "check_density",
    "warn_sparse_layers",
    "OUTPUT_TOPK_DEFAULT",
    "OUTPUT_FLOOR_DEFAULT",
    "WEIGHT_SCALE_DEFAULT",
]

_MASK_PREFIX = "task_mask_"
_CLASSES_PREFIX = "task_classes_"
_INPUTS_PREFIX = "task_input_sums_"
_SCORES_PREFIX = "task_scores_"
_UNTRAINED = "untrained"

OUTPUT_TOPK_DEFAULT = "unit"
"""The default top-k rule of a masked output layer (:func:`convert_to_supermask`)."""
OUTPUT_FLOOR_DEFAULT = 1
"""The default floor of the ``"layer_floor"`` rule (weights per output unit)."""
WEIGHT_SCALE_DEFAULT: str | float = "none"
"""The default ``weight_scale`` of :func:`convert_to_supermask` and the strategies
(:func:`~avalanche_ctr.exssnet.supermask.weight_scale_factor`)."""


def check_density(density: float) -> float:
    """Validate a supermask density (fraction of weights each task keeps)."""
    if not isinstance(density, (int, float)) or not 0.0 < float(density) <= 1.0:
        raise ValueError(
            f"density must be in (0, 1] (the fraction of weights each task's mask keeps), "
            f"got {density!r}; e.g. density=0.1 keeps 10% of the weights"
        )
    return float(density)


SUPPORTED_LAYERS = (
    "Linear, Conv1d and Conv2d (masked per task), BatchNorm (one per task), "
    "MultiHeadClassifier heads (dense, one per task), FrozenModule parts (left as they "
    "are, e.g. a frozen encoder) and layers without parameters"
)
"""What :func:`convert_to_supermask` accepts, as its errors say it."""


class FrozenModule(nn.Module):
    """A part of a model that no task trains and :func:`convert_to_supermask` leaves as
    it is, e.g. the frozen pretrained encoder under ExSSNeT's text model (Sec. 4.1:
    a Kim-CNN over frozen token representations).

    Its parameters are frozen here and stay frozen (:meth:`SupermaskNet.set_trainable`
    only ever enables supermask scores and weights, per-task BatchNorms and heads), and
    it stays in evaluation mode (no dropout) when the model trains, so its outputs are
    the same for every task and epoch.

    :param module: the frozen part.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FrozenModule:
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class SupermaskNet(PaddedMultiTaskModule, HubModel, model_type="supermask"):
    """A model whose Linear / Conv1d / Conv2d layers are supermask layers.

    Build it with :func:`convert_to_supermask`.

    :param net: the converted model.
    :param density: fraction of each layer's weights a task's mask keeps.
    :param output_topk: the top-k rule of a masked output layer (see
        :func:`convert_to_supermask`).
    :param output_floor: weights every output unit keeps under ``"layer_floor"``.
    :param keep_scores: keep every finished task's float scores
        (``task_scores_<t>``, 32 bits per maskable weight), what KKT's
        ``"copy_scores"`` initialisation reads; may be switched on before any task.
    :param weight_scale: the rule the layers' signed constants were scaled by
        (:func:`convert_to_supermask` scales them; recorded here so that a saved model is
        rebuilt with it).
    """

    def __init__(
        self,
        net: nn.Module,
        density: float,
        *,
        output_topk: str = OUTPUT_TOPK_DEFAULT,
        output_floor: int = OUTPUT_FLOOR_DEFAULT,
        keep_scores: bool = False,
        weight_scale: str | float = WEIGHT_SCALE_DEFAULT,
    ) -> None:
        super().__init__()
        self.net = net
        self.density = density
        self.weight_scale = check_weight_scale(weight_scale)
        self.output_topk, self.output_floor = output_topk, output_floor
        self.keep_scores = keep_scores
        self.training_task: int | None = None
        self._layer_names = [n for n, m in net.named_modules() if isinstance(m, SupermaskLayer)]
        self._bn_names = [n for n, m in net.named_modules() if isinstance(m, TaskBatchNorm)]
        self._head_names = [n for n, m in net.named_modules() if isinstance(m, MultiHeadClassifier)]
        # plain tuples (not registered twice): the forward pass walks them on every call
        self._layers = tuple(net.get_submodule(n) for n in self._layer_names)
        self._bns = tuple(net.get_submodule(n) for n in self._bn_names)
        if not self._layer_names:
            raise ValueError(
                "the model has no Linear, Conv1d or Conv2d layer outside its MultiHeadClassifier "
                "heads and FrozenModule parts: there is nothing to mask; give ExSSNeT/SupSup a "
                "model with at least one such layer"
            )
        widest_head(self)
        output = self._layers[-1]
        if not self._head_names and isinstance(output, SupermaskLinear):
            # a masked output layer: batches of several tasks need all of its units; its
            # rule may keep weights in every unit (a layer-wide top-k can leave a class
            # unit empty, and ExSSNeT's weight phase cannot revive it; docs/exssnet.md)
            self.max_class_label = max(self.max_class_label, output.out_features)
            output.set_topk_rule(output_topk, output_floor)
        warn_sparse_layers(dict(zip(self._layer_names, self._layers, strict=True)), density)
        feature_name = self._head_names[-1] if self._head_names else self._layer_names[-1]
        self._capture: str | None = None
        self._features: Tensor | None = None
        net.get_submodule(feature_name).register_forward_pre_hook(self._keep_input)
        # the layer whose output (before its non-linearity) feeds the feature point
        before = self._layers[-1] if self._head_names else None
        if before is None and len(self._layers) > 1:
            before = self._layers[-2]
        # a plain tuple (not a second registration of the layer in the state dict)
        self._pre_activation_layer = (before,)
        if isinstance(before, SupermaskLinear):
            before.register_forward_hook(self._keep_output)

    # ------------------------------------------------------------ model folder
    def hub_arguments(self) -> dict[str, Any]:
        """The density, the signed constant's ``weight_scale``, the mask cache, the output
        layer's top-k rule, whether finished tasks keep their scores (KKT's
        ``copy_scores``) and, over a backbone of ours
        (:data:`~avalanche_ctr.hub.MODEL_TYPES`), the backbone's type and constructor
        arguments (:mod:`avalanche_ctr.hub`); over any other backbone ``None``, and
        ``from_pretrained`` then takes the backbone."""
        return {
            "density": self.density,
            "weight_scale": self.weight_scale,
            "max_cached_tasks": self._layers[0].max_cached_tasks,
            "output_topk": self.output_topk,
            "output_floor": self.output_floor,
            "keep_scores": self.keep_scores,
            "backbone": backbone_entry(self.net),
        }

    @classmethod
    def hub_build(
        cls, arguments: dict[str, Any], *, backbone: nn.Module | None = None
    ) -> SupermaskNet:
        """The supermask network of :meth:`hub_arguments` before training: over
        ``backbone`` (the user's model, unconverted, built as before training) or, when
        it is ``None``, over the stored backbone of ours. A folder saved before
        ``weight_scale`` existed had factor 1 (``"none"``)."""
        net = convert_to_supermask(
            backbone_from(arguments.get("backbone"), backbone, "SupermaskNet"),
            density=arguments["density"],
            max_cached_tasks=arguments["max_cached_tasks"],
            output_topk=arguments.get("output_topk", OUTPUT_TOPK_DEFAULT),
            output_floor=arguments.get("output_floor", OUTPUT_FLOOR_DEFAULT),
            weight_scale=arguments.get("weight_scale", "none"),
        )
        net.keep_scores = arguments.get("keep_scores", False)
        return net

    # ----------------------------------------------------------------- layers
    @property
    def supermask_layers(self) -> list[SupermaskLayer]:
        return list(self._layers)

    @property
    def batchnorms(self) -> list[TaskBatchNorm]:
        return list(self._bns)

    @property
    def heads(self) -> list[MultiHeadClassifier]:
        return [self.net.get_submodule(n) for n in self._head_names]

    @property
    def n_maskable(self) -> int:
        """Number of maskable weights (``N``); a finished task stores ``ceil(N/8)`` bytes."""
        return sum(layer.weight.numel() for layer in self.supermask_layers)

    @property
    def trained_tasks(self) -> list[int]:
        """Task labels whose masks are stored, in training order."""
        return [
            int(name[len(_MASK_PREFIX) :])
            for name in self._buffers
            if name.startswith(_MASK_PREFIX)
        ]

    # ------------------------------------------------------------ task masks
    def task_masks(self, task: int) -> list[Tensor]:
        """Unpacked boolean masks of a finished task, one per supermask layer."""
        return self._split(getattr(self, f"{_MASK_PREFIX}{task}"))

    def task_classes(self, task: int) -> list[int]:
        """Class labels a finished task was trained on: stored by :meth:`finish_task`
        for unmasked heads, else the active units of a masked head (empty for a task
        not trained). Task inference reads them to tell a head's real output units
        from its superfluous ones."""
        stored = self._buffers.get(f"{_CLASSES_PREFIX}{task}")
        if stored is not None:
            return [int(c) for c in stored.tolist()]
        for head in self.heads:
            units = getattr(head, f"active_units_T{task}", None)
            if head.masking and units is not None:
                return [int(c) for c in units.nonzero().flatten().tolist()]
        return []

    def add_input_sums(self, task: int, sums: Tensor) -> None:
        """Add input sums of ``task`` (see :func:`input_sums`) to what the model
        stores for it (:meth:`input_sums`)."""
        name = f"{_INPUTS_PREFIX}{task}"
        stored = self._buffers.get(name)
        total = sums.to(self._device, torch.float64)
        self.register_buffer(name, total if stored is None else merge_input_sums(stored, total))

    def input_sums(self, task: int) -> Tensor | None:
        """The input sums recorded for ``task`` (:func:`input_sums`), or ``None`` when
        none were (``ExSSNeTPlugin(input_statistics=True)`` records them)."""
        return self._buffers.get(f"{_INPUTS_PREFIX}{task}")

    def used_masks(self, *, exclude: int | None = None) -> list[Tensor]:
        """Union of the finished tasks' masks (all but ``exclude``), one boolean tensor
        per layer."""
        union = None
        for task in self.trained_tasks:
            if task == exclude:
                continue
            packed = getattr(self, f"{_MASK_PREFIX}{task}")
            union = packed.clone() if union is None else union.bitwise_or_(packed)
        if union is None:
            return [torch.zeros_like(w.weight, dtype=torch.bool) for w in self.supermask_layers]
        return self._split(union)

    def _split(self, packed: Tensor) -> list[Tensor]:
        flat = unpack_mask(packed, (self.n_maskable,))
        sizes = [layer.weight.numel() for layer in self.supermask_layers]
        return [
            part.view_as(layer.weight)
            for part, layer in zip(flat.split(sizes), self.supermask_layers, strict=True)
        ]

    def grow_for_state(self, state: dict[str, Tensor], prefix: str = "") -> None:
        """Register the packed masks and per-task BatchNorms of the finished tasks in a
        state dict of this model trained further, so that it can be loaded."""
        for key, value in state.items():
            name = key[len(prefix) :]
            per_task = name.startswith(
                (_MASK_PREFIX, _CLASSES_PREFIX, _INPUTS_PREFIX, _SCORES_PREFIX)
            )
            if key.startswith(prefix) and per_task and "." not in name:
                if name not in self._buffers:
                    self.register_buffer(name, torch.empty_like(value, device=self._device))
        for bn_name, bn in zip(self._bn_names, self._bns, strict=True):
            start = f"{prefix}net.{bn_name}.per_task."
            for key in state:
                if key.startswith(start):
                    task = key[len(start) :].split(".")[0]
                    if task not in bn.per_task:
                        bn.add_task(int(task), self._device)

    # -------------------------------------------------------- task lifecycle
    def start_task(self, task: int) -> None:
        """Install float scores and a BatchNorm for ``task`` (random mask).

        A task that was trained before continues: its scores start at its stored
        mask (:meth:`init_scores_from_task`) and it keeps its BatchNorm, so it goes
        on from where it stopped. Other tasks' masks and BatchNorms are untouched.
        """
        continuing = task in self.trained_tasks
        self.training_task = task
        for layer in self.supermask_layers:
            layer.init_scores(task)
        for bn in self.batchnorms:
            if not continuing:
                bn.add_task(task, self._device)
        if continuing:
            self.init_scores_from_task(task)

    def init_scores_from_task(
        self, source: int, *, copy_scores: bool = False, lift: float | Sequence[float] = 1.0
    ) -> None:
        """Start the training task's scores from a finished task (KKT).

        By default the new scores are the magnitudes of the fresh random scores with
        ``lift`` times their largest magnitude added at the source mask's entries, so
        those rise above every other entry: the initial top-k mask equals the source
        task's mask, and training can move away from it, the later the larger
        ``lift`` (one number, or one per supermask layer:
        :func:`~avalanche_ctr.exssnet.kkt.steps_lift`). With ``copy_scores``
        they are a copy of the source task's float scores (the official code's
        ``score_transfer``), kept when the model has ``keep_scores``.

        :raises ValueError: with ``copy_scores``, if the source's scores were not kept;
            for a sequence of lifts whose length is not the number of supermask layers.
        """
        if copy_scores:
            stored = self._buffers.get(f"{_SCORES_PREFIX}{source}")
            if stored is None:
                raise ValueError(
                    f"task {source}'s float scores were not kept, so they cannot be copied; "
                    "use kkt_init='lift_mask', or train with kkt_init='copy_scores' from "
                    "the first task (the model keeps every task's scores then)"
                )
            sizes = [layer.weight.numel() for layer in self.supermask_layers]
            for layer, part in zip(self.supermask_layers, stored.split(sizes), strict=True):
                with torch.no_grad():
                    layer.scores.copy_(part.view_as(layer.scores))
            return
        layers = self.supermask_layers
        lifts = [lift] * len(layers) if isinstance(lift, (int, float)) else list(lift)
        if len(lifts) != len(layers):
            raise ValueError(f"lift needs one number per supermask layer ({len(layers)})")
        for layer, mask, by in zip(layers, self.task_masks(source), lifts, strict=True):
            with torch.no_grad():
                magnitude = layer.scores.abs()
                layer.scores.copy_(magnitude + mask * (by * magnitude.max()))

    def fix_mask(self) -> None:
        """Freeze the training task's mask (end of ExSSNeT's mask phase)."""
        for layer in self.supermask_layers:
            layer.fix_mask()

    def finish_task(self, classes: Sequence[int] = ()) -> None:
        """Store the training task's mask bit-packed and drop its float scores.

        :param classes: the class labels the task was trained on. A model with an
            unmasked :class:`MultiHeadClassifier` stores them (:meth:`task_classes`;
            a continued task keeps its earlier ones); a masked head records them
            itself, so nothing else is stored and a task adds exactly its bit-packed
            mask and its head.
        """
        task = self._require_training_task()
        masks = [layer.current_mask().reshape(-1) for layer in self.supermask_layers]
        self.register_buffer(f"{_MASK_PREFIX}{task}", pack_mask(torch.cat(masks)))
        if self.keep_scores:
            scores = [layer.scores.detach().reshape(-1) for layer in self.supermask_layers]
            self.register_buffer(f"{_SCORES_PREFIX}{task}", torch.cat(scores).clone())
        if any(not head.masking for head in self.heads):
            known = set(self.task_classes(task)) | {int(c) for c in classes}
            self.register_buffer(
                f"{_CLASSES_PREFIX}{task}",
                torch.tensor(sorted(known), dtype=torch.long, device=self._device),
            )
        for layer in self.supermask_layers:
            layer.release_scores()
        self.training_task = None

    def set_trainable(self, *, scores: bool, weights: bool) -> None:
        """Make only the training task's parameters trainable.

        Always trainable: the task's BatchNorm and its head in every
        :class:`MultiHeadClassifier`. ``scores`` / ``weights`` select the
        supermask scores (mask phase) or the shared weights (weight phase).
        """
        task = self._require_training_task()
        for param in self.parameters():
            param.requires_grad_(False)
        for layer in self.supermask_layers:
            layer.scores.requires_grad_(scores)
            layer.weight.requires_grad_(weights)
        for bn in self.batchnorms:
            bn.per_task[str(task)].requires_grad_(True)
        for head in self.heads:
            if str(task) in head.classifiers:
                head.classifiers[str(task)].requires_grad_(True)

    def _require_training_task(self) -> int:
        if self.training_task is None:
            raise RuntimeError("no task is being trained; call start_task first")
        return self.training_task

    @property
    def _device(self) -> torch.device:
        return self.supermask_layers[0].weight.device

    # --------------------------------------------------------------- forward
    def activate(self, task: int) -> None:
        """Select ``task``'s masks and BatchNorm in every layer (nothing to do when a
        finished ``task`` is still selected with valid cached weights, as in evaluation,
        which calls this for every mini-batch).

        A task that was never trained gets :meth:`untrained_masks` and the BatchNorm
        of a fresh layer (see :meth:`TaskBatchNorm.untrained`)."""
        if task == self.training_task:
            for layer in self._layers:
                layer.select(task)
        else:
            key = task if f"{_MASK_PREFIX}{task}" in self._buffers else (_UNTRAINED, task)
            if all(layer.is_selected(key) for layer in self._layers):
                return
            masks = None
            for index, layer in enumerate(self._layers):
                if not layer.has_cached(key):
                    if masks is None:
                        masks = self.task_masks(task) if key == task else self.untrained_masks(task)
                    layer.cache_task(key, masks[index])
                layer.select(key)
        for bn in self._bns:
            bn.active_task = task

    def untrained_masks(self, task: int) -> list[Tensor]:
        """The masks of a task that was never trained, one per supermask layer: the
        top-k of scores initialised as for training, drawn from a generator seeded by
        the task label alone. They are deterministic, change no state and touch no
        global random stream; with an untrained head they predict at chance."""
        generator = torch.Generator().manual_seed(int(task))
        return [layer.untrained_mask(generator) for layer in self._layers]

    def eval_state(self) -> list:
        """The mask caches and selections of every layer and BatchNorm (evaluation
        changes them; :class:`~avalanche_ctr.tasks.TaskIncrementalPlugin` puts them back)."""
        return [layer.cache_state() for layer in self._layers] + [
            bn.active_task for bn in self._bns
        ]

    def load_eval_state(self, state: list) -> None:
        n = len(self._layers)
        for layer, saved in zip(self._layers, state[:n], strict=True):
            layer.load_cache_state(saved)
        for bn, active in zip(self._bns, state[n:], strict=True):
            bn.active_task = active

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        task = int(task_label)
        for head in self.heads:
            if str(task) not in head.classifiers:
                raise ValueError(
                    f"task {task} was never trained by this model and has no head (trained "
                    f"tasks: {self.trained_tasks}); evaluate it with strategy.eval(...), "
                    "which gives an untrained task a temporary head, or train it first"
                )
        self.activate(task)
        if isinstance(self.net, MultiTaskModule):
            return self.net(x, task_label)
        return self.net(x)

    def features(self, x: Tensor, task: int, *, point: str = "post_activation") -> Tensor:
        """Penultimate representation of ``x`` under ``task``'s mask.

        :param point: ``"post_activation"``: the input of the last
            :class:`MultiHeadClassifier` or, without one, of the last supermask layer;
            ``"pre_activation"``: the output of the Linear supermask layer that feeds
            it, before its non-linearity (the official KKT's ``linear[:3]``).
        :raises ValueError: for ``"pre_activation"`` when no Linear supermask layer
            feeds the feature point (:meth:`check_feature_point`).
        """
        self.check_feature_point(point)
        self._capture = point
        try:
            self.forward_single_task(x, task)
        finally:
            self._capture = None
        features, self._features = self._features, None
        return features.flatten(1)

    def check_feature_point(self, point: str) -> None:
        """Raise a ``ValueError`` naming the fix if :meth:`features` cannot read ``point``."""
        if point not in ("post_activation", "pre_activation"):
            raise ValueError(
                f"unknown feature point {point!r}; use 'post_activation' or 'pre_activation'"
            )
        if point == "pre_activation" and not isinstance(
            self._pre_activation_layer[0], SupermaskLinear
        ):
            raise ValueError(
                "kkt_features='pre_activation' reads the output of the Linear layer before "
                "the output layer (or the heads), and this model has none there; use "
                "kkt_features='post_activation'"
            )

    def _keep_input(self, _module: nn.Module, args: tuple) -> None:
        if self._capture == "post_activation":
            self._features = args[0]

    def _keep_output(self, _module: nn.Module, _args: tuple, output: Tensor) -> None:
        if self._capture == "pre_activation":
            self._features = output


def input_sums(x: Tensor, y: Tensor, n_classes: int | None = None) -> Tensor:
    """Sufficient statistics of a mini-batch for task inference by input statistics,
    float64 of shape ``(C + 1, D + 1)`` for ``C`` classes (``n_classes``, default
    ``max(y) + 1``) and ``D`` input features: row ``c < C`` is
    ``[n_c, Σ_{y_i=c} x_i]``, the last row ``[n, Σ_i x_i²]``. Sums of batches add
    (:func:`merge_input_sums`)."""
    flat = x.detach().flatten(1).to(torch.float64)
    labels = y.detach().long().to(flat.device)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    sums = flat.new_zeros(n_classes + 1, flat.shape[1] + 1)
    sums[:n_classes, 0] = torch.bincount(labels, minlength=n_classes).to(flat.dtype)
    sums[:n_classes, 1:].index_add_(0, labels, flat)
    sums[n_classes, 0] = flat.shape[0]
    sums[n_classes, 1:] = flat.pow(2).sum(0)
    return sums


def merge_input_sums(a: Tensor, b: Tensor) -> Tensor:
    """The input sums of two sets of inputs together (their class rows aligned)."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"input sums of {a.shape[1] - 1} and {b.shape[1] - 1} input features cannot be "
            "merged: every input of a task must have the same size"
        )
    n_classes = max(a.shape[0], b.shape[0]) - 1
    merged = a.new_zeros(n_classes + 1, a.shape[1])
    merged[: a.shape[0] - 1] += a[:-1]
    merged[: b.shape[0] - 1] += b[:-1].to(a)
    merged[-1] = a[-1] + b[-1].to(a)
    return merged


def _convertible_leaf(
    module: nn.Module, density: float, max_cached_tasks: int, scale: float = 1.0
) -> nn.Module | None:
    options = {"max_cached_tasks": max_cached_tasks, "weight_scale": scale}
    if isinstance(module, nn.Linear):
        return SupermaskLinear(module.in_features, module.out_features, density, **options).to(
            module.weight.device
        )
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        layer = SupermaskConv1d if isinstance(module, nn.Conv1d) else SupermaskConv2d
        return layer(module, density, **options).to(module.weight.device)
    if isinstance(module, _BatchNorm):
        return TaskBatchNorm(module)
    return None


def _convert_children(
    module: nn.Module, prefix: str, density: float, cache: int, scale: float
) -> None:
    for name, child in list(module.named_children()):
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, (MultiHeadClassifier, SupermaskLayer, TaskBatchNorm, FrozenModule)):
            continue
        new = _convertible_leaf(child, density, cache, scale)
        if new is not None:
            setattr(module, name, new)
            continue
        refuse_unmaskable(child, path, "supermask", SUPPORTED_LAYERS)
        _convert_children(child, path, density, cache, scale)


def warn_sparse_layers(layers: dict[str, SupermaskLayer], density: float) -> None:
    """Warn if a layer's masks keep fewer weights than the layer has output units.

    With a layer-wide top-k (edge-popup, ExSSNeT Sec. 3) such a mask leaves some units
    without any input weight, and a task can train to chance; the warning names the
    layers and the density at which every layer keeps one weight per unit (a degenerate
    density, e.g. ``1e-12``, is in (0, 1] and would otherwise run silently).
    """
    sparse = [
        f"{name}: {layer.k} of {layer.weight.numel():,} weights for {layer.weight.shape[0]:,} units"
        for name, layer in layers.items()
        if layer.topk_rule != "unit" and layer.floor < 1 and layer.k < layer.weight.shape[0]
    ]
    if sparse:
        needed = max(layer.weight.shape[0] / layer.weight.numel() for layer in layers.values())
        warnings.warn(
            f"density {density:g} keeps fewer weights than output units in {len(sparse)} "
            f"layer(s) ({'; '.join(sparse)}): some units get no input in a task's mask and "
            f"the task may train to chance; use a density of at least {needed:.3g} (one "
            "weight per unit in every layer)",
            UserWarning,
            stacklevel=3,
        )


def convert_to_supermask(
    model: nn.Module,
    *,
    density: float = 0.1,
    max_cached_tasks: int = 4,
    output_topk: str = OUTPUT_TOPK_DEFAULT,
    output_floor: int = OUTPUT_FLOOR_DEFAULT,
    weight_scale: str | float = WEIGHT_SCALE_DEFAULT,
) -> SupermaskNet:
    """Turn ``model`` into a :class:`SupermaskNet`, in place.

    Every ``Linear``, ``Conv1d`` and ``Conv2d`` becomes a supermask layer with fresh
    signed-constant weights and no bias; every BatchNorm becomes a per-task
    BatchNorm; :class:`~avalanche.models.MultiHeadClassifier` heads stay dense
    per-task heads; :class:`FrozenModule` parts are left as they are. Any other
    layer with parameters raises :class:`UnsupportedLayerError` (a ``ValueError``)
    naming it and what is supported.

    :param model: the user's model (a ``MultiTaskModule`` such as
        ``MTSimpleMLP``, or a plain module whose last layer is then masked per task).
    :param density: fraction of each layer's weights a task's mask keeps, in (0, 1].
    :param max_cached_tasks: finished tasks whose masked weights stay cached
        for evaluation in each layer.
    :param output_topk: how a masked output layer (the last Linear of a model without
        ``MultiHeadClassifier`` heads) spends its weights
        (:data:`~avalanche_ctr.masking.TOPK_RULES`): ``"unit"``, ``density`` of each
        output unit's fan-in; ``"layer"``, ``density`` of the whole layer (the
        official code, edge-popup); ``"layer_floor"``, ``density`` of the layer with at
        least ``output_floor`` weights in every unit. Hidden layers always keep
        ``density`` of the layer.
    :param output_floor: weights every output unit keeps under ``"layer_floor"``.
    :param weight_scale: the factor on every supermask layer's signed constant
        (:func:`~avalanche_ctr.exssnet.supermask.weight_scale_factor`): ``"none"``, factor
        1 (the official code's ``±gain / sqrt(fan_in)``); ``"density"``,
        ``density^(-1/4)``
        (:func:`~avalanche_ctr.exssnet.supermask.density_weight_scale`, a departure from
        the official code, ``docs/exssnet.md``); or a positive number, the factor itself.
        The signs drawn are the same whatever the scale. A model that is already a
        :class:`SupermaskNet` is returned as it is.
    :raises ValueError: for a density outside (0, 1] or a ``weight_scale`` that is none of
        these.
    """
    density = check_density(density)
    scale = weight_scale_factor(weight_scale, density)
    if isinstance(model, SupermaskNet):
        return model
    if _convertible_leaf(model, density, max_cached_tasks, scale) is not None:
        model = nn.Sequential(model)
    elif any(True for _ in model.parameters(recurse=False)):
        raise UnsupportedLayerError(
            f"the model ({type(model).__name__}) holds parameters directly and cannot be "
            "masked; put them in Linear / Conv1d / Conv2d / BatchNorm submodules",
            type(model).__name__,
        )
    _convert_children(model, "", density, max_cached_tasks, scale)
    return SupermaskNet(
        model,
        density,
        output_topk=output_topk,
        output_floor=output_floor,
        weight_scale=weight_scale,
    )
