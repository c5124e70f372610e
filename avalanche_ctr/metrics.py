"""Macro-F1 as an Avalanche metric (the CTR paper reports accuracy and macro-F1).

Classes are keyed by ``(task label, class)``: class 0 of one task and class 0 of
another are different classes. ``MacroF1_Exp`` is the macro-F1 of one
experience's classes; ``MacroF1_Stream`` macro-averages F1 over every
``(task, class)`` of the evaluated stream.
"""

from __future__ import annotations

from collections import Counter

import torch
from avalanche.evaluation import GenericPluginMetric, Metric
from torch import Tensor

__all__ = ["MacroF1", "ExperienceMacroF1", "StreamMacroF1", "macro_f1_metrics"]


class MacroF1(Metric[float]):
    """Standalone macro-F1 over ``(task, class)`` pairs."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._tp: Counter = Counter()
        self._fp: Counter = Counter()
        self._fn: Counter = Counter()

    @torch.no_grad()
    def update(self, logits: Tensor, targets: Tensor, task_labels: Tensor | int) -> None:
        """Add a mini-batch: class scores (or predicted labels), targets and task labels."""
        predicted = logits.argmax(dim=1) if logits.dim() > 1 else logits
        if isinstance(task_labels, int):
            task_labels = torch.full_like(targets, task_labels)
        for task, pred, true in zip(
            task_labels.tolist(), predicted.tolist(), targets.tolist(), strict=True
        ):
            if pred == true:
                self._tp[(task, true)] += 1
            else:
                self._fp[(task, pred)] += 1
                self._fn[(task, true)] += 1

    def result(self) -> float:
        """Mean over the classes seen (as target or prediction) of ``2TP / (2TP + FP + FN)``;
        0 before any update."""
        classes = set(self._tp) | set(self._fp) | set(self._fn)
        if not classes:
            return 0.0
        scores = [2 * self._tp[c] / (2 * self._tp[c] + self._fp[c] + self._fn[c]) for c in classes]
        return sum(scores) / len(scores)


class _MacroF1PluginMetric(GenericPluginMetric[float, MacroF1]):
    def __init__(self, reset_at: str, emit_at: str) -> None:
        super().__init__(MacroF1(), reset_at=reset_at, emit_at=emit_at, mode="eval")

    def reset(self) -> None:
        self._metric.reset()

    def result(self) -> float:
        return self._metric.result()

    def update(self, strategy) -> None:
        self._metric.update(strategy.mb_output, strategy.mb_y, strategy.mb_task_id)


class ExperienceMacroF1(_MacroF1PluginMetric):
    """Macro-F1 of each evaluated experience (``MacroF1_Exp``)."""

    def __init__(self) -> None:
        super().__init__(reset_at="experience", emit_at="experience")

    def __str__(self) -> str:
        return "MacroF1_Exp"


class StreamMacroF1(_MacroF1PluginMetric):
    """Macro-F1 over every ``(task, class)`` of the evaluated stream (``MacroF1_Stream``)."""

    def __init__(self) -> None:
        super().__init__(reset_at="stream", emit_at="stream")

    def __str__(self) -> str:
        return "MacroF1_Stream"


def macro_f1_metrics(*, experience: bool = False, stream: bool = False) -> list:
    """Plugin metrics to pass to an ``EvaluationPlugin``, like ``accuracy_metrics``."""
    metrics: list = []
    if experience:
        metrics.append(ExperienceMacroF1())
    if stream:
        metrics.append(StreamMacroF1())
    return metrics
