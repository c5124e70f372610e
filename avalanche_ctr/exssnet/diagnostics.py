"""What each new ExSSNeT mask leaves to train and where it came from, as Avalanche
metrics (TensorBoard and the ``compare`` report).

ExSSNeT's gain over SupSup comes from training the weights of the new mask ``M_t``
that no other task's mask uses (Yadav & Bansal, ACL Findings 2023, Sec. 3.2), and
KKT (Sec. 3.3) starts ``M_t`` from the most similar earlier task's mask, which
shrinks that set. :class:`ExSSNeTDiagnostics` reports, after each training
experience of task ``t``:

* ``ExSSNeT_ExclusiveFraction``: ``|M_t ∧ ¬∪_{i≠t} M_i| / |M_t|``, the fraction of
  the new mask's weights its weight phase may train (1 for the first task);
* ``ExSSNeT_Overlap`` (one value per other task ``i``, ``.../With<i>``):
  ``|M_t ∧ M_i| / |M_t|``;
* ``ExSSNeT_FirstEpochAccuracy``: the training accuracy over the mini-batches of
  the experience's first (mask) epoch, as each was trained on, the measure of
  how fast a mask learns that the KKT ablation reads (the paper's claim that KKT
  learns faster is made with test accuracy after the first epoch), summed over
  the ranks under ``torchrun``;
* when KKT ran: ``ExSSNeT_KKTSource`` (the chosen task, -1 when no earlier task
  beat chance), ``ExSSNeT_KKTAccuracy`` (its KNN accuracy) and
  ``ExSSNeT_KKTMargin`` (its lead over the runner-up; its lead over chance when
  only one task was scored).

Names follow Avalanche's ``<metric>/train_phase/<stream>/Task<t>`` pattern.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue

from avalanche_ctr.exssnet.kkt import KKTChoice
from avalanche_ctr.exssnet.supermask_net import SupermaskNet

__all__ = ["mask_diagnostics", "kkt_diagnostics", "ExSSNeTDiagnostics"]


def mask_diagnostics(model: SupermaskNet, task: int) -> dict[str, float]:
    """Exclusive fraction of finished ``task``'s mask and its overlap with every
    other finished task (keys ``"ExclusiveFraction"`` and ``"Overlap/With<i>"``)."""
    masks = model.task_masks(task)
    size = sum(int(m.sum()) for m in masks)
    if size == 0:
        raise ValueError(f"task {task}'s mask is empty; a density > 0 keeps at least one weight")
    others = model.used_masks(exclude=task)
    exclusive = sum(int((m & ~o).sum()) for m, o in zip(masks, others, strict=True))
    result = {"ExclusiveFraction": exclusive / size}
    for other in model.trained_tasks:
        if other != task:
            shared = sum(
                int((m & o).sum()) for m, o in zip(masks, model.task_masks(other), strict=True)
            )
            result[f"Overlap/With{other:03d}"] = shared / size
    return result


def kkt_diagnostics(choice: KKTChoice) -> dict[str, float]:
    """The KKT source (-1: none beat chance), its KNN accuracy and its margin."""
    ranked = sorted(choice.accuracies.values(), reverse=True)
    best = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else choice.chance
    return {
        "KKTSource": float(-1 if choice.source is None else choice.source),
        "KKTAccuracy": best,
        "KKTMargin": best - runner_up,
    }


def _summed_over_ranks(correct: int, seen: int, device: torch.device) -> tuple[int, int]:
    """The counts of every rank under ``torchrun`` (each rank sees its part of every
    mini-batch), else the counts given."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return correct, seen
    counts = torch.tensor([correct, seen], dtype=torch.float64, device=device)
    dist.all_reduce(counts)
    return int(counts[0]), int(counts[1])


class ExSSNeTDiagnostics(PluginMetric[dict]):
    """The module's diagnostics after each training experience of a strategy whose
    model is a :class:`SupermaskNet` trained by an
    :class:`~avalanche_ctr.exssnet.lifecycle.ExSSNeTPlugin`; nothing otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._correct = 0
        self._seen = 0

    def reset(self) -> None:
        self._last = {}

    def before_training_exp(self, strategy) -> None:
        self._correct = 0
        self._seen = 0

    def after_training_iteration(self, strategy) -> None:
        if strategy.clock.train_exp_epochs == 0 and isinstance(strategy.model, SupermaskNet):
            predicted = strategy.mb_output.detach().argmax(dim=1)
            self._correct += int((predicted == strategy.mb_y).sum())
            self._seen += len(predicted)

    def result(self) -> dict[str, float]:
        return dict(self._last)

    def after_training_exp(self, strategy) -> list[MetricValue] | None:
        model = strategy.model
        if not isinstance(model, SupermaskNet):
            return None
        task = strategy.experience.task_label
        values = mask_diagnostics(model, task)
        correct, seen = _summed_over_ranks(self._correct, self._seen, strategy.device)
        if seen:
            values["FirstEpochAccuracy"] = correct / seen
        for plugin in strategy.plugins:
            choice = getattr(plugin, "last_kkt", None)
            if isinstance(choice, KKTChoice) and choice.accuracies:
                values.update(kkt_diagnostics(choice))
        self._last = values
        stream = f"{strategy.experience.origin_stream.name}_stream"
        step = strategy.clock.train_iterations
        metric_values = []
        for key, value in values.items():
            name, _, suffix = key.partition("/")
            full = f"ExSSNeT_{name}/train_phase/{stream}/Task{task:03d}"
            metric_values.append(
                MetricValue(self, f"{full}/{suffix}" if suffix else full, value, step)
            )
        return metric_values

    def __str__(self) -> str:
        return "ExSSNeTDiagnostics"
