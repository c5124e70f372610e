"""Model selection on a validation split, per experience, for any strategy.

:class:`BestEpochPlugin` keeps the epoch whose trainable parameters score best on the
experience's validation data and restores it when the experience ends, the recipe of
the official CTR code (PyContinual restores the best dev epoch of every task; CTR, Ke
et al., NeurIPS 2021, Sec. 4). Avalanche's ``EarlyStoppingPlugin`` restores the best
weights only when it stops training early, so after the last epoch a model keeps its
last, not its best, parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import default_collate

from avalanche_ctr.tasks import TaskIncrementalPlugin

__all__ = ["BestEpochPlugin"]


class BestEpochPlugin(SupervisedPlugin, supports_distributed=True):
    """After every training epoch, measure the accuracy on the validation experience that
    matches the training experience (same position in ``dev_stream``, same task label);
    when the experience ends, put back the trainable parameters of the best epoch (the
    first of equally good ones).

    Only parameters that require gradients are copied: everything else is frozen during
    the experience anyway, so what earlier tasks use is untouched. The validation pass
    draws no random number and runs in ``eval`` mode, so training continues exactly as
    without it.

    Place it before the method's own plugin (``CTR(plugins=[BestEpochPlugin(...)])`` does
    that): the method folds the task's final masks in when the experience ends, and must
    see the restored parameters.

    :param dev_stream: validation experiences, one per training experience, in order.
    :param batch_size: validation mini-batch size.
    """

    transient_attributes = ("dev_stream",)
    """Left out of checkpoints (:mod:`avalanche_ctr.checkpoint`): the resumed strategy's
    plugin keeps the stream it was built with."""

    def __init__(self, dev_stream: Sequence, *, batch_size: int = 128) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dev_stream = dev_stream
        self.batch_size = batch_size
        self.best_accuracy: float | None = None
        self.best_epoch: int | None = None
        self.history: list[list[float]] = []
        self._best: dict[str, torch.Tensor] = {}

    def before_training_exp(self, strategy, **kwargs) -> None:
        later = [p for p in strategy.plugins if isinstance(p, TaskIncrementalPlugin)]
        if later and strategy.plugins.index(later[0]) < strategy.plugins.index(self):
            raise ValueError(
                f"BestEpochPlugin comes after {type(later[0]).__name__}, which closes the "
                "experience first; pass it among the strategy's plugins (they run before the "
                "method's own)"
            )
        self._dev_experience(strategy)
        self.best_accuracy, self.best_epoch, self._best = None, None, {}
        self.history.append([])

    def after_training_epoch(self, strategy, **kwargs) -> None:
        accuracy = self._accuracy(strategy)
        self.history[-1].append(accuracy)
        if self.best_accuracy is None or accuracy > self.best_accuracy:
            self.best_accuracy = accuracy
            self.best_epoch = strategy.clock.train_exp_epochs
            self._best = {
                name: param.detach().clone()
                for name, param in strategy.model.named_parameters()
                if param.requires_grad
            }

    @torch.no_grad()
    def after_training_exp(self, strategy, **kwargs) -> None:
        parameters = dict(strategy.model.named_parameters())
        for name, value in self._best.items():
            parameters[name].copy_(value)
        self._best = {}

    def _dev_experience(self, strategy):
        index = strategy.experience.current_experience
        if index >= len(self.dev_stream):
            raise ValueError(
                f"training experience {index} has no validation experience: the dev stream "
                f"has {len(self.dev_stream)}; give one per training experience"
            )
        dev = self.dev_stream[index]
        if list(dev.task_labels) != list(strategy.experience.task_labels):
            raise ValueError(
                f"validation experience {index} has task labels {list(dev.task_labels)}, the "
                f"training experience {list(strategy.experience.task_labels)}; the dev stream "
                "must follow the training stream's order"
            )
        return dev

    def _accuracy(self, strategy) -> float:
        dataset = self._dev_experience(strategy).dataset
        model = strategy.model
        was_training = model.training
        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(dataset), self.batch_size):
                stop = min(start + self.batch_size, len(dataset))
                x, y, t = default_collate([dataset[i] for i in range(start, stop)])[:3]
                logits = model(x.to(strategy.device), t.to(strategy.device))
                correct += int((logits.argmax(dim=1).cpu() == y).sum())
        model.train(was_training)
        return correct / max(1, len(dataset))
