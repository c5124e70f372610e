"""Where CTR's capacity goes and whether its knowledge sharing is used, as Avalanche
metrics (TensorBoard and the ``compare`` report).

CTR (Ke et al., NeurIPS 2021, "Achieving Forgetting Prevention and Knowledge Transfer in
Continual Learning") adds a Knowledge Sharing Module (KSM) and a Task Specific Module
(TSM) with HAT masks (Serra et al., ICML 2018, "Overcoming Catastrophic Forgetting with
Hard Attention to the Task") to every transformer layer. :class:`CTRDiagnostics`
reports, after each training experience of task ``t``, for every CL-plugin (named
``Layer<l>.Attention`` or ``Layer<l>.FeedForward``, after the sublayer it follows):

* ``CTR_FreeFraction`` (per HAT mask: the TSM's ``.../Bottleneck`` and ``.../Hidden``,
  with a KSM also ``.../KSM.Current``, ``.../KSM.Similarity`` and
  ``.../KSM.Projection``): the fraction of the mask's units no task uses yet, once task
  ``t`` is folded into the cumulative mask (HAT Eq. 4). A unit counts as used exactly
  when the code freezes the weights behind it: some task's binary test-time mask
  ``1[e > 0]`` is 1 there (:mod:`~avalanche_ctr.hat.masks`);
* ``CTR_TaskUse`` (per HAT mask): the fraction of the mask's units task ``t`` itself
  uses (its test-time mask), reused ones included;
* ``CTR_MaskMovement`` (per HAT mask): ``‖e_t − e_t^0‖₂ / √n``, the root-mean-square
  change of task ``t``'s ``n`` mask embeddings (HAT Eq. 1) over the experience, from
  their value when the experience started (``N(0, 1)`` for a new task);
* ``CTR_KSMRatio`` (with a KSM): ``‖KSM(h)‖_F / ‖h‖_F`` over the real (not padded)
  tokens of a training mini-batch, the size of the transfer output added to the TSM's
  input ``h`` (CTR Sec. 3.1), averaged over the experience's training mini-batches;
* ``CTR_GateOnRate`` (with a KSM, one value per earlier task ``i``,
  ``.../Source<i>``): the fraction of training samples, over all the experience's
  training mini-batches, whose transfer-routing gate ``δ_i`` (CTR Sec. 3.2.2) was on,
  i.e. whose routing used task ``i``'s capsule (none for the first task);
* ``CTR_SelfGateOnRate`` (with a KSM): the same for the gate of task ``t``'s own
  capsule.

Names follow Avalanche's ``<metric>/train_phase/<stream>/Task<t>[/...]`` pattern. The
metric reads the model through forward hooks and snapshots it registers itself; it
changes no computation and draws no random number.
"""

from __future__ import annotations

from typing import Any

import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from avalanche_ctr.ctr.ctr_model import CTRModel
from avalanche_ctr.hat.diagnostics import mask_movement, task_use

__all__ = ["plugin_names", "free_fractions", "CTRDiagnostics"]


def plugin_names(model: CTRModel) -> list[str]:
    """``Layer<l>.Attention`` / ``Layer<l>.FeedForward`` for each CL-plugin of ``model``,
    in the order of :attr:`CTRModel.plugins` (two per layer, attention first)."""
    return [
        f"Layer{i // 2}.{'Attention' if i % 2 == 0 else 'FeedForward'}"
        for i in range(len(model.plugins))
    ]


def free_fractions(model: CTRModel) -> dict[str, float]:
    """Per CL-plugin and HAT mask (keys ``"<plugin>/<mask>"``, e.g.
    ``"Layer0.Attention/Bottleneck"``), the fraction of units whose cumulative mask is 0
    (used by no finished task)."""
    return {
        f"{name}/{mask_name}": mask.free_fraction()
        for name, plugin in zip(plugin_names(model), model.plugins, strict=True)
        for mask_name, mask in plugin.named_masks
    }


class _Accumulator:
    """Sums over one experience's training forward passes of one CL-plugin."""

    def __init__(self) -> None:
        self.hidden: Tensor | None = None
        self.ratio_sum = 0.0
        self.batches = 0
        self.gate_sum: Tensor | None = None
        self.samples = 0

    @torch.no_grad()
    def add(self, transfer: Tensor, gates: Tensor, keep: Tensor | None) -> None:
        hidden = self.hidden
        self.hidden = None
        if hidden is None:
            raise RuntimeError(
                "CTRDiagnostics saw a transfer routing run outside its CL-plugin; it needs "
                "CTRModel's CL-plugins to call their routing from their own forward"
            )
        if keep is not None:  # real tokens only
            hidden, transfer = hidden[keep], transfer[keep]
        norm_h = float(hidden.norm())
        self.ratio_sum += float(transfer.norm()) / norm_h if norm_h > 0 else 0.0
        self.batches += 1
        total = gates.sum(dim=0)
        self.gate_sum = total if self.gate_sum is None else self.gate_sum + total
        self.samples += gates.shape[0]


class CTRDiagnostics(PluginMetric[dict]):
    """CTR's free TSM capacity, mask movement, KSM output size and gate on-rates after
    each training experience of a strategy whose model is a :class:`CTRModel` trained by
    a :class:`~avalanche_ctr.ctr.lifecycle.CTRPlugin` (see the module docstring);
    nothing for any other model.

    The values of the last experience are also :meth:`result`, a flat dict whose keys
    are the metric name without ``CTR_`` followed by the CL-plugin and mask or source,
    e.g. ``"FreeFraction/Layer0.Attention/Bottleneck"``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._index: int | None = None
        self._start: list[list[Tensor]] = []
        self._sums: list[_Accumulator] = []
        self._hooks: list[RemovableHandle] = []

    def reset(self) -> None:
        self._last = {}

    def result(self) -> dict[str, float]:
        return dict(self._last)

    def before_training_exp(self, strategy) -> None:
        self._remove_hooks()
        model = strategy.model
        if not isinstance(model, CTRModel):
            return
        index = model.training_index
        if index is None:
            raise RuntimeError(
                "CTRDiagnostics found no CTR task in training before the experience; add it "
                "to the strategy's evaluator, whose callbacks run after the CTRPlugin's"
            )
        self._index = index
        self._start = [
            [mask.embeddings[index].detach().clone() for _, mask in plugin.named_masks]
            for plugin in model.plugins
        ]
        self._sums = []
        for plugin in model.plugins:
            if plugin.ksm is None:
                continue
            sums = _Accumulator()
            self._sums.append(sums)
            self._hooks.append(plugin.register_forward_pre_hook(_save_hidden(sums)))
            self._hooks.append(plugin.ksm.register_forward_hook(_accumulate(sums)))

    def after_training_exp(self, strategy) -> list[MetricValue] | None:
        model = strategy.model
        if not isinstance(model, CTRModel) or self._index is None:
            return None
        self._remove_hooks()
        values = self._values(model)
        self._last = values
        self._index, self._start, self._sums = None, [], []
        task = strategy.experience.task_label
        stream = f"{strategy.experience.origin_stream.name}_stream"
        step = strategy.clock.train_iterations
        metric_values = []
        for key, value in values.items():
            name, _, suffix = key.partition("/")
            full = f"CTR_{name}/train_phase/{stream}/Task{task:03d}/{suffix}"
            metric_values.append(MetricValue(self, full, value, step))
        return metric_values

    def _values(self, model: CTRModel) -> dict[str, float]:
        names = plugin_names(model)
        values = {f"FreeFraction/{key}": v for key, v in free_fractions(model).items()}
        for name, plugin, start in zip(names, model.plugins, self._start, strict=True):
            for (mask_name, mask), before in zip(plugin.named_masks, start, strict=True):
                movement = mask_movement(mask, self._index, before)
                values[f"MaskMovement/{name}/{mask_name}"] = movement
                values[f"TaskUse/{name}/{mask_name}"] = task_use(mask, self._index)
        sharing = [n for n, p in zip(names, model.plugins, strict=True) if p.ksm is not None]
        sources = model.task_labels[: self._index]
        for name, sums in zip(sharing, self._sums, strict=True):
            if sums.batches == 0:
                continue
            values[f"KSMRatio/{name}"] = sums.ratio_sum / sums.batches
            rates = (sums.gate_sum / sums.samples).tolist()
            for source, rate in zip(sources, rates[: self._index], strict=True):
                values[f"GateOnRate/{name}/Source{source:03d}"] = rate
            values[f"SelfGateOnRate/{name}"] = rates[self._index]
        return values

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def __str__(self) -> str:
        return "CTRDiagnostics"


def _save_hidden(sums: _Accumulator):
    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        if module.training:
            sums.hidden = args[0].detach()

    return hook


def _accumulate(sums: _Accumulator):
    def hook(module: nn.Module, args: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        if module.training:
            transfer, gates = output
            sums.add(transfer.detach(), gates.detach(), args[1])  # args: h, keep, task, ...

    return hook
