"""Supermask layers (SupSup, Wortsman et al., NeurIPS 2020, Sec. 3.1; ExSSNeT,
Yadav & Bansal, ACL Findings 2023, Sec. 3).

A supermask layer holds one weight tensor shared by all tasks, fixed at a
signed-constant initialisation, and applies a per-task binary mask to it. The
mask of the task being trained comes from a real-valued score tensor through a
top-k selection with a straight-through estimator; the masks of finished tasks
are kept bit-packed by :class:`~avalanche_ctr.exssnet.supermask_net.SupermaskNet` and
pushed to the layers as masked-weight caches.

Departures from the reference code, chosen deliberately:

* Layers carry no bias. SupSup and ExSSNeT build their networks with
  ``bias=False``; a shared trainable bias would be moved by every task and
  break forgetting prevention.
* Only the scores of the task in training exist as floats; finished tasks keep
  1 bit per weight (the official code keeps every task's float scores).
* BatchNorm statistics and affine parameters are per task
  (:class:`TaskBatchNorm`), the fix SupSup published after release.
* The signed constant may be scaled (``weight_scale``, :func:`density_weight_scale`);
  the official code's is ``±gain / sqrt(fan_in)`` at every density.
* A masked output layer may keep ``k`` weights of every output unit, or the layer's
  top ``k`` with a floor per unit (:meth:`SupermaskLayer.set_topk_rule`), where the
  official code keeps the layer's top ``k``: a layer-wide top-k can leave a class
  unit without weights (``docs/exssnet.md``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche_ctr.masking import TOPK_RULES, TopKStraightThrough, apply_mask, n_kept, topk_mask

__all__ = [
    "SupermaskLayer",
    "refuse_unmaskable",
    "SupermaskLinear",
    "SupermaskConv1d",
    "SupermaskConv2d",
    "TaskBatchNorm",
    "UnsupportedLayerError",
    "signed_constant_",
    "density_weight_scale",
    "low_density_weight_scale",
    "LOW_DENSITY_THRESHOLD",
    "weight_scale_factor",
    "check_weight_scale",
    "WEIGHT_SCALES",
]

WEIGHT_SCALES: tuple[str, ...] = ("none", "density", "low_density")
"""The named rules of ``weight_scale`` (:func:`weight_scale_factor`): ``"none"``, factor 1
(the official code's weights); ``"density"``, :func:`density_weight_scale`;
``"low_density"``, :func:`low_density_weight_scale`. A positive number is the factor
itself."""

LOW_DENSITY_THRESHOLD: float = 0.1
"""The density at and above which :func:`low_density_weight_scale` is 1."""


def signed_constant_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """Signed-constant initialisation (edge-popup, Ramanujan et al. 2020, Sec. 4.1;
    SupSup Sec. 4): each weight is ``±scale · gain / sqrt(fan_in)`` with a random sign,
    ``gain`` being the ReLU gain ``sqrt(2)``. ``scale`` is 1 in edge-popup, SupSup and
    the official ExSSNeT code (:func:`density_weight_scale` for another). The signs are
    drawn the same whatever ``scale``, and the weights are exactly those of ``scale=1``
    multiplied by ``scale`` (so a run differs from one at factor 1 only by the factor)."""
    fan_in = nn.init._calculate_correct_fan(weight, "fan_in")
    std = nn.init.calculate_gain("relu") / math.sqrt(fan_in)
    with torch.no_grad():
        sign = torch.randint(0, 2, weight.shape, device=weight.device, dtype=weight.dtype)
        weight.copy_((sign * 2 - 1) * std)
        if scale != 1.0:
            weight.mul_(scale)
    return weight


def density_weight_scale(density: float, power: float = 0.25) -> float:
    """The factor ``density ** (-power)`` of the signed constant of every supermask layer
    (``weight_scale="density"``): 2.66 at density 0.02, 2.11 at 0.05, 1.78 at 0.1, 1 at 1.

    **A departure from the official code**, which uses ``±gain / sqrt(fan_in)`` with no
    density factor (prateeky2806/exessnet at ee2027d: ``conv_init: signed_constant``,
    ``--mode fan_in``, ``--nonlinearity relu``). Why: a mask keeping a fraction ``d`` of a
    layer's weights shrinks its pre-activations by about ``sqrt(d)``, and with no bias and
    ReLUs a factor ``c`` on a layer multiplies the logits by ``c``, so ``L`` layers at a
    low density give logits ``d^(L/2)`` times smaller: the softmax stays near uniform and
    the straight-through score gradients that learn the mask are small. A factor per
    layer is then a softmax temperature. ``power=0.5`` would restore the variance in each
    layer, but it overshoots (issue 27's stream at density 0.02: SupSup at chance, against
    24.6 % with factor 1 and 55.8 % with ``power=0.25``; ``benchmarks/RESULTS.md``).

    :param density: the supermask density, in (0, 1].
    :param power: the exponent, >= 0 (0: factor 1).
    :raises ValueError: for a density outside (0, 1] or a negative or non-finite power.
    """
    if (
        isinstance(density, bool)
        or not isinstance(density, (int, float))
        or not (0.0 < density <= 1.0)
    ):
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    if (
        isinstance(power, bool)
        or not isinstance(power, (int, float))
        or not (0.0 <= power < math.inf)
    ):
        raise ValueError(f"power must be a finite number >= 0, got {power!r}")
    return float(density) ** (-float(power))


def low_density_weight_scale(
    density: float, threshold: float = LOW_DENSITY_THRESHOLD, power: float = 0.25
) -> float:
    """The factor ``min(1, density / threshold) ** (-power)`` of the signed constant of
    every supermask layer (``weight_scale="low_density"``): :func:`density_weight_scale`
    relative to ``threshold``, so 1 at ``threshold`` (0.1) and above, 1.19 at 0.05, 1.50
    at 0.02.

    **A departure from the official code** (no density factor;
    :func:`density_weight_scale` says why a factor helps at a low density). Unlike
    ``"density"`` it leaves every density from ``threshold`` up as the official code has
    it: ``"density"``'s factor (1.78 at 0.1, 1.35 at 0.3) measurably cost task inference
    and a small text model there (``benchmarks/RESULTS.md``, issue 27), where nothing
    needed it.

    :param density: the supermask density, in (0, 1].
    :param threshold: the density from which the factor is 1, in (0, 1].
    :param power: the exponent, >= 0 (0: factor 1).
    :raises ValueError: for a density or threshold outside (0, 1] or a negative or
        non-finite power.
    """
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not (0.0 < threshold <= 1.0)
    ):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    scale = density_weight_scale(density, power)
    return max(1.0, scale / density_weight_scale(threshold, power))


def check_weight_scale(weight_scale: str | float) -> str | float:
    """Validate a ``weight_scale``: one of :data:`WEIGHT_SCALES` or a positive finite
    number (the factor). Returns it, a number as a float.

    :raises ValueError: naming the valid values otherwise.
    """
    if isinstance(weight_scale, str):
        if weight_scale in WEIGHT_SCALES:
            return weight_scale
    elif (
        not isinstance(weight_scale, bool)
        and isinstance(weight_scale, (int, float))
        and 0.0 < weight_scale < math.inf
    ):
        return float(weight_scale)
    raise ValueError(
        f"weight_scale must be 'none' (factor 1, the official code's weights), 'density' "
        f"(density^(-1/4)), 'low_density' (min(1, density / {LOW_DENSITY_THRESHOLD})^(-1/4)) "
        f"or a positive finite factor, got {weight_scale!r}"
    )


def weight_scale_factor(weight_scale: str | float, density: float) -> float:
    """The factor on the signed constant that ``weight_scale`` gives at ``density``:
    1 for ``"none"``, :func:`density_weight_scale` for ``"density"``,
    :func:`low_density_weight_scale` for ``"low_density"``, else the number.

    :raises ValueError: for a value :func:`check_weight_scale` refuses.
    """
    weight_scale = check_weight_scale(weight_scale)
    if weight_scale == "none":
        return 1.0
    if weight_scale == "density":
        return density_weight_scale(density)
    if weight_scale == "low_density":
        return low_density_weight_scale(density)
    return weight_scale


class SupermaskLayer(nn.Module):
    """Common part of the supermask layers: shared weight, per-task masks.

    :param weight_shape: shape of the shared weight tensor.
    :param density: fraction of the layer's weights each task's mask keeps.
    :param max_cached_tasks: number of finished tasks whose masked weights stay
        cached for evaluation (the cache is rebuilt whenever the weight changes).
    :param weight_scale: the factor on the signed constant (:func:`signed_constant_`;
        :func:`weight_scale_factor` turns a rule into one), a positive finite number.

    A mask keeps the top ``k`` scores of the whole layer (edge-popup), or another
    rule after :meth:`set_topk_rule` (a masked output layer, where a unit the
    layer-wide top-k leaves empty is a class the task cannot predict).
    """

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        density: float,
        max_cached_tasks: int = 4,
        weight_scale: float = 1.0,
    ):
        super().__init__()
        factor = check_weight_scale(weight_scale)
        if isinstance(factor, str):
            raise ValueError(
                f"a layer's weight_scale is the factor itself, got {weight_scale!r}; turn a "
                "rule into a factor with weight_scale_factor(rule, density)"
            )
        self.weight = nn.Parameter(torch.empty(weight_shape), requires_grad=False)
        signed_constant_(self.weight, factor)
        self.weight_scale = factor
        self.density = density
        self.k = n_kept(self.weight.numel(), density)
        self.topk_rule = "layer"
        self.floor = 0
        self.scores: nn.Parameter | None = None
        self.training_task: int | None = None
        self.active_task: int | None = None
        self.fixed_mask: Tensor | None = None
        self._fixed_at = 0
        self.max_cached_tasks = max_cached_tasks
        self._cache: OrderedDict[Hashable, tuple[int, Tensor]] = OrderedDict()
        self._active: tuple[int, Tensor] | None = None

    def set_topk_rule(self, rule: str, floor: int = 0) -> None:
        """How every mask of this layer spends its weights
        (:func:`~avalanche_ctr.masking.topk_mask`): ``"layer"``, the top ``density`` of
        the layer (edge-popup); ``"unit"``, the top ``density`` of each output unit's
        fan-in, so that no unit is left without weights; ``"layer_floor"``, the top
        ``density`` of the layer with at least ``floor`` weights in every unit (and at
        least ``floor`` per unit in all, as a layer keeps at least one weight:
        ``k = max(round(density · weights), floor · units)``).
        :class:`~avalanche_ctr.exssnet.supermask_net.SupermaskNet` sets it on a masked
        output layer. Call it before any task is trained.

        :raises ValueError: for an unknown rule, or a floor outside ``0 .. fan_in``.
        """
        if rule not in TOPK_RULES:
            raise ValueError(f"unknown top-k rule {rule!r}; use one of {', '.join(TOPK_RULES)}")
        units, fan_in = self.weight.shape[0], self.weight[0].numel()
        floor = floor if rule == "layer_floor" else 0
        if isinstance(floor, bool) or not isinstance(floor, int) or not 0 <= floor <= fan_in:
            raise ValueError(
                f"output_floor must be a number of weights per unit between 0 and the "
                f"fan-in {fan_in}, got {floor!r}"
            )
        if rule == "unit":
            k = n_kept(fan_in, self.density)
        else:
            k = max(n_kept(self.weight.numel(), self.density), floor * units)
        self.topk_rule, self.floor, self.k = rule, floor, k

    def _topk(self, scores: Tensor) -> Tensor:
        return topk_mask(scores, self.k, rule=self.topk_rule, floor=self.floor)

    def init_scores(self, task: int) -> nn.Parameter:
        """Create the float scores of the task about to be trained (edge-popup's
        Kaiming-uniform score initialisation)."""
        scores = torch.empty_like(self.weight)
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
        self.forget(task)
        self.scores = nn.Parameter(scores)
        self.training_task = task
        self.fixed_mask = None
        return self.scores

    def untrained_mask(self, generator: torch.Generator) -> Tensor:
        """A mask chosen without training: the top-k of scores drawn like
        :meth:`init_scores` but from ``generator`` (on the CPU), so the global random
        streams are not touched."""
        bound = 1 / math.sqrt(nn.init._calculate_correct_fan(self.weight, "fan_in"))
        scores = torch.empty(self.weight.shape).uniform_(-bound, bound, generator=generator)
        return self._topk(scores).to(self.weight.device)

    def fix_mask(self) -> None:
        """Freeze the mask of the task in training at the top-k of its scores (end of
        ExSSNeT's mask phase)."""
        self.fixed_mask = self._topk(self.scores)
        self._fixed_at = self.scores._version

    def current_mask(self) -> Tensor:
        """Boolean mask of the task in training, from its scores or fixed mask.

        A fixed mask follows its scores if they were overwritten since it was fixed
        (e.g. ``EarlyStoppingPlugin`` loading the best state of the mask phase)."""
        if self.fixed_mask is not None:
            if self.scores is not None and self.scores._version != self._fixed_at:
                self.fix_mask()
            return self.fixed_mask
        if self.scores is None:
            raise RuntimeError("no task is being trained by this layer")
        return self._topk(self.scores)

    def release_scores(self) -> None:
        """Drop the float scores once the task's mask has been stored."""
        self.scores = None
        self.training_task = None
        self.fixed_mask = None

    def has_cached(self, task: Hashable) -> bool:
        entry = self._cache.get(task)
        return entry is not None and entry[0] == self.weight._version

    def cache_task(self, task: Hashable, mask: Tensor) -> None:
        """Cache ``W ⊙ M`` of a finished (or an untrained) task for fast evaluation, by
        selection (:func:`~avalanche_ctr.masking.apply_mask`): the task's weight ignores
        every entry outside its boolean ``mask``, even a NaN."""
        self._cache[task] = (self.weight._version, apply_mask(self.weight.detach(), mask))
        self._cache.move_to_end(task)
        while len(self._cache) > self.max_cached_tasks:
            self._cache.popitem(last=False)

    def forget(self, task: int) -> None:
        """Drop ``task``'s cached weight and selection (its mask is about to change)."""
        self._cache.pop(task, None)
        if self.active_task == task:
            self.active_task, self._active = None, None

    def cache_state(self) -> tuple:
        """The cache and the selection, to be put back by :meth:`load_cache_state`."""
        return OrderedDict(self._cache), self.active_task, self._active

    def load_cache_state(self, state: tuple) -> None:
        cache, self.active_task, self._active = state
        self._cache = OrderedDict(cache)

    def is_selected(self, task: Hashable) -> bool:
        """Whether finished task ``task`` is selected and its cached weight still valid."""
        active = self._active
        return (
            self.active_task == task and active is not None and (active[0] == self.weight._version)
        )

    def select(self, task: Hashable) -> None:
        """Make ``task`` the active task; a finished task must be cached first."""
        self.active_task = task
        if task == self.training_task:
            self._active = None
            return
        self._active = self._cache[task]
        self._cache.move_to_end(task)

    def masked_weight(self) -> Tensor:
        """The weight of the active task: ``W ⊙ M_task``."""
        if self.training_task is not None and self.active_task == self.training_task:
            if self.fixed_mask is not None:
                return self.weight * self.current_mask()
            return self.weight * TopKStraightThrough.apply(
                self.scores, self.k, self.topk_rule, self.floor
            )
        if self._active is None or self._active[0] != self.weight._version:
            raise RuntimeError(
                "supermask layer used outside SupermaskNet: call the converted model, "
                "which selects the task's mask"
            )
        return self._active[1]


class SupermaskLinear(SupermaskLayer):
    """Supermask version of :class:`torch.nn.Linear` (no bias, see module notes)."""

    def __init__(self, in_features: int, out_features: int, density: float, **kwargs) -> None:
        super().__init__((out_features, in_features), density, **kwargs)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"density={self.density}"
        )


class _SupermaskConv(SupermaskLayer):
    """Supermask version of a convolution (no bias, see module notes)."""

    _conv: Callable[..., Tensor]

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, density: float, **kwargs) -> None:
        if conv.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"{type(conv).__name__} with padding_mode={conv.padding_mode!r} cannot be "
                "masked; use padding_mode='zeros'"
            )
        super().__init__(tuple(conv.weight.shape), density, **kwargs)
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(
            x, self.masked_weight(), None, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}, stride={self.stride}, density={self.density}"


class SupermaskConv1d(_SupermaskConv):
    """Supermask version of :class:`torch.nn.Conv1d` (no bias, see module notes), e.g.
    the convolutions of ExSSNeT's Kim-CNN text model (Sec. 4.1)."""

    _conv = staticmethod(F.conv1d)


class SupermaskConv2d(_SupermaskConv):
    """Supermask version of :class:`torch.nn.Conv2d` (no bias, see module notes)."""

    _conv = staticmethod(F.conv2d)


class UnsupportedLayerError(ValueError):
    """A layer with weights that the supermask conversion cannot mask.

    :param message: what is wrong and what is supported instead.
    :param layer_type: the class name of the layer.
    """

    def __init__(self, message: str, layer_type: str | None = None) -> None:
        super().__init__(message)
        self.layer_type = layer_type


def refuse_unmaskable(child: nn.Module, path: str, models: str, supported: str) -> None:
    """Raise :class:`UnsupportedLayerError` for a layer a mask conversion leaves neither
    converted nor skipped that it cannot keep as it is: one that changes shape (an
    Avalanche ``DynamicModule`` other than the per-task heads) or one with parameters
    of its own. ``models`` names the converted models in the message ("supermask",
    "HAT"), ``supported`` the layers they may contain."""
    from avalanche.models import DynamicModule, MultiTaskModule

    kind = type(child).__name__
    if isinstance(child, DynamicModule) and not isinstance(child, MultiTaskModule):
        raise UnsupportedLayerError(
            f"layer '{path}' ({kind}) changes shape during training and cannot be masked; "
            "use avalanche.models.MultiHeadClassifier for per-task heads",
            kind,
        )
    if any(True for _ in child.parameters(recurse=False)):
        raise UnsupportedLayerError(
            f"layer '{path}' ({kind}) has parameters and cannot be masked; {models} models may "
            f"contain {supported} only (wrap a pretrained part that stays fixed in "
            "avalanche_ctr.exssnet.FrozenModule)",
            kind,
        )


class TaskBatchNorm(nn.Module):
    """One BatchNorm (statistics and affine parameters) per task.

    A single BatchNorm shared by tasks would have its running statistics moved
    by every later task; SupSup's post-release fix keeps them per task.

    :param template: the user's BatchNorm layer, whose configuration is copied.
    """

    def __init__(self, template: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.template_cls = type(template)
        self.config = {
            "num_features": template.num_features,
            "eps": template.eps,
            "momentum": template.momentum,
            "affine": template.affine,
            "track_running_stats": template.track_running_stats,
        }
        self.per_task = nn.ModuleDict()
        self.active_task: int | None = None

    def add_task(self, task: int, device: torch.device) -> nn.Module:
        bn = self.template_cls(**self.config).to(device)
        self.per_task[str(task)] = bn
        return bn

    def forward(self, x: Tensor) -> Tensor:
        key = str(self.active_task)
        if key in self.per_task:
            return self.per_task[key](x)
        if self.training:
            raise RuntimeError(f"no BatchNorm for task {self.active_task}")
        return self.untrained(x)

    def untrained(self, x: Tensor) -> Tensor:
        """What a freshly built BatchNorm does in evaluation (running mean 0, variance 1,
        scale 1, shift 0): the normalisation of a task that was never trained."""
        c = self.config
        zeros = x.new_zeros(c["num_features"])
        return F.batch_norm(
            x,
            zeros,
            torch.ones_like(zeros),
            training=not c["track_running_stats"],
            eps=c["eps"],
        )
