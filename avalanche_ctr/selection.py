"""Model selection on a validation split, per experience, for any strategy.

:class:`BestEpochPlugin` keeps the epoch whose trainable parameters score best on the
experience's validation data and restores it when the experience ends, the recipe of
the official CTR code (PyContinual restores the best dev epoch of every task; CTR, Ke
et al., NeurIPS 2021, Sec. 4). Avalanche's ``EarlyStoppingPlugin`` restores the best
weights only when it stops training early, so after the last epoch a model keeps its
last, not its best, parameters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import default_collate

from avalanche_ctr import random_state
from avalanche_ctr.tasks import TaskIncrementalPlugin

__all__ = ["BestEpochPlugin", "CRITERIA"]

CRITERIA = ("accuracy", "loss")
"""What an epoch is chosen by: the highest validation accuracy, or the lowest mean
validation cross-entropy (the official CTR code's choice)."""


class BestEpochPlugin(SupervisedPlugin, supports_distributed=True):
    """After every training epoch, measure the accuracy and the mean cross-entropy on the
    validation experience that matches the training experience (same position in
    ``dev_stream``, same task label); when the experience ends, put back the model state
    (parameters and buffers) of the best epoch by ``criterion`` (the first of equally
    good ones).

    Epochs compete within a phase: when the set of trainable parameters changes during
    an experience (ExSSNeT's mask phase, then its weight phase), the choice starts
    again, so the restored state is one that was evaluated, and only epochs of the last
    phase can be kept. Everything a method protects is frozen during the experience, so
    putting back an earlier state of it changes nothing of other tasks. The validation
    pass runs in ``eval`` mode and puts back each module's mode, the random-number states
    and the model's transient evaluation state (``eval_state``), so training continues
    exactly as without it; its seconds are in :attr:`dev_seconds`.

    Place it before the method's own plugin (``CTR(plugins=[BestEpochPlugin(...)])`` does
    that): the method folds the task's final masks in when the experience ends, and must
    see the restored parameters.

    :param dev_stream: validation experiences, one per training experience, in order.
    :param batch_size: validation mini-batch size.
    :param criterion: ``"accuracy"`` (the highest) or ``"loss"`` (the lowest mean
        cross-entropy, as PyContinual's ``valid_loss < best_loss``).
    """

    def __init__(
        self, dev_stream: Sequence, *, batch_size: int = 128, criterion: str = "accuracy"
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        self.dev_stream = dev_stream
        self.batch_size = batch_size
        self.criterion = criterion
        self.best_accuracy: float | None = None
        self.best_loss: float | None = None
        self.best_epoch: int | None = None
        self.history: list[list[float]] = []
        self.loss_history: list[list[float]] = []
        self.dev_seconds = 0.0
        self._best: dict[str, torch.Tensor] = {}
        self._trainable: frozenset[str] = frozenset()

    def before_training_exp(self, strategy, **kwargs) -> None:
        later = [p for p in strategy.plugins if isinstance(p, TaskIncrementalPlugin)]
        if later and strategy.plugins.index(later[0]) < strategy.plugins.index(self):
            raise ValueError(
                f"BestEpochPlugin comes after {type(later[0]).__name__}, which closes the "
                "experience first; pass it among the strategy's plugins (they run before the "
                "method's own)"
            )
        self._dev_experience(strategy)
        self._forget_best()
        self._trainable = frozenset()
        self.history.append([])
        self.loss_history.append([])

    def after_training_epoch(self, strategy, **kwargs) -> None:
        model = strategy.model
        trainable = frozenset(n for n, p in model.named_parameters() if p.requires_grad)
        if trainable != self._trainable:  # a new phase: its epochs compete afresh
            self._trainable = trainable
            self._forget_best()
        start = time.perf_counter()
        accuracy, loss = self._scores(strategy)
        self.dev_seconds += time.perf_counter() - start
        self.history[-1].append(accuracy)
        self.loss_history[-1].append(loss)
        if self.criterion == "accuracy":
            better = self.best_accuracy is None or accuracy > self.best_accuracy
        else:
            better = self.best_loss is None or loss < self.best_loss
        if better:
            self.best_accuracy, self.best_loss = accuracy, loss
            self.best_epoch = strategy.clock.train_exp_epochs
            self._best = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _forget_best(self) -> None:
        self.best_accuracy, self.best_loss, self.best_epoch, self._best = None, None, None, {}

    @torch.no_grad()
    def after_training_exp(self, strategy, **kwargs) -> None:
        if self._best:
            strategy.model.load_state_dict(self._best)
        self._best = {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the last experience's choice and every experience's
        validation accuracies. The stream is the resumed plugin's own, and the best
        state is only held during an experience."""
        return {
            "best_accuracy": self.best_accuracy,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "history": [list(h) for h in self.history],
            "loss_history": [list(h) for h in self.loss_history],
            "dev_seconds": self.dev_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (a state saved before the losses were
        kept restores none)."""
        self.best_accuracy = state["best_accuracy"]
        self.best_loss = state.get("best_loss")
        self.best_epoch = state["best_epoch"]
        self.history = [list(h) for h in state["history"]]
        self.loss_history = [list(h) for h in state.get("loss_history", [])]
        self.dev_seconds = float(state["dev_seconds"])

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

    def _scores(self, strategy) -> tuple[float, float]:
        """The accuracy and the mean cross-entropy on the experience's validation data."""
        dataset = self._dev_experience(strategy).dataset.eval()
        model = strategy.model
        modes = [(module, module.training) for module in model.modules()]
        rng = random_state.capture()
        save = getattr(model, "eval_state", None)
        transient = save() if save is not None else None
        model.eval()
        correct, loss = 0, 0.0
        try:
            with torch.no_grad():
                for start in range(0, len(dataset), self.batch_size):
                    stop = min(start + self.batch_size, len(dataset))
                    x, y, t = default_collate([dataset[i] for i in range(start, stop)])[:3]
                    logits = model(x.to(strategy.device), t.to(strategy.device)).float().cpu()
                    correct += int((logits.argmax(dim=1) == y).sum())
                    loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        finally:
            for module, mode in modes:
                module.training = mode
            if save is not None:
                model.load_eval_state(transient)
            random_state.restore(rng)
        return correct / max(1, len(dataset)), loss / max(1, len(dataset))
