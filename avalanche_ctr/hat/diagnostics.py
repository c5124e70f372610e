"""Where HAT's capacity goes, as Avalanche metrics (TensorBoard and ``runs.json``).

HAT (Serra et al., ICML 2018) lets each task claim units with its masks; what it
claims no later task can retrain. :class:`HATDiagnostics` reports, after each training
experience of task ``t`` of a :class:`~avalanche_ctr.hat.hat_net.HATNet`, for every
masked layer (named by its path in the wrapped model, e.g. ``features.1``):

* ``HAT_FreeFraction``: the fraction of the layer's units no task uses yet, once task
  ``t`` is folded into the cumulative mask (HAT Eq. 4). A unit counts as used exactly
  when the code freezes the weights behind it: some task's binary test-time mask
  ``1[e > 0]`` is 1 there (:mod:`~avalanche_ctr.hat.masks`). It can only shrink from
  one task to the next;
* ``HAT_TaskUse``: the fraction of the layer's units task ``t`` itself uses (its
  test-time mask), reused ones included;
* ``HAT_MaskMovement``: ``‖e_t − e_t^0‖₂ / √n``, the root-mean-square change of task
  ``t``'s ``n`` mask embeddings over the experience, from their value when the
  experience started (``N(0, 1)`` for a new task).

Names follow Avalanche's ``<metric>/train_phase/<stream>/Task<t>/<layer>`` pattern. The
functions :func:`task_use` and :func:`mask_movement` are also CTR's
(:mod:`avalanche_ctr.ctr.diagnostics`). The metric changes no computation and draws no
random number.
"""

from __future__ import annotations

import math

from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from torch import Tensor

from avalanche_ctr.hat.hat_net import HATNet
from avalanche_ctr.hat.masks import HATMask

__all__ = ["task_use", "mask_movement", "HATDiagnostics"]


def task_use(mask: HATMask, index: int) -> float:
    """The fraction of ``mask``'s units the task of embedding ``index`` uses."""
    return float(mask.used(index).float().mean())


def mask_movement(mask: HATMask, index: int, start: Tensor) -> float:
    """``‖e − start‖₂ / √n`` for the embedding ``e`` of task ``index`` (``n`` units)."""
    moved = float((mask.embeddings[index].detach() - start).norm())
    return moved / math.sqrt(mask.n_units)


class HATDiagnostics(PluginMetric[dict]):
    """HAT's free units, task use and mask movement per masked layer after each training
    experience of a strategy whose model is a :class:`HATNet` (see the module
    docstring); nothing for any other model.

    The values of the last experience are also :meth:`result`, a flat dict whose keys
    are the metric name without ``HAT_`` followed by the layer, e.g.
    ``"FreeFraction/features.1"``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._index: int | None = None
        self._start: list[Tensor] = []

    def reset(self) -> None:
        self._last = {}

    def result(self) -> dict[str, float]:
        return dict(self._last)

    def before_training_exp(self, strategy) -> None:
        model = strategy.model
        if not isinstance(model, HATNet):
            return
        index = model.training_index
        if index is None:
            raise RuntimeError(
                "HATDiagnostics found no HAT task in training before the experience; add it "
                "to the strategy's evaluator, whose callbacks run after the HATPlugin's"
            )
        self._index = index
        self._start = [mask.embeddings[index].detach().clone() for mask in model.masks()]

    def after_training_exp(self, strategy) -> list[MetricValue] | None:
        model = strategy.model
        if not isinstance(model, HATNet) or self._index is None:
            return None
        values: dict[str, float] = {}
        for (name, mask), start in zip(model.named_masks, self._start, strict=True):
            values[f"FreeFraction/{name}"] = mask.free_fraction()
            values[f"TaskUse/{name}"] = task_use(mask, self._index)
            values[f"MaskMovement/{name}"] = mask_movement(mask, self._index, start)
        self._last = values
        self._index, self._start = None, []
        task = strategy.experience.task_label
        stream = f"{strategy.experience.origin_stream.name}_stream"
        step = strategy.clock.train_iterations
        metric_values = []
        for key, value in values.items():
            name, _, layer = key.partition("/")
            full = f"HAT_{name}/train_phase/{stream}/Task{task:03d}/{layer}"
            metric_values.append(MetricValue(self, full, value, step))
        return metric_values

    def __str__(self) -> str:
        return "HATDiagnostics"
