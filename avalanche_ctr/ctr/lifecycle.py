"""The CTR lifecycle as an Avalanche plugin."""

from __future__ import annotations

from typing import Any

from avalanche.core import SupervisedPlugin

from avalanche_ctr.ctr.ctr_model import CTRModel
from avalanche_ctr.hat.lifecycle import HATPlugin

__all__ = ["CTRPlugin", "WarmupLinearPlugin", "warmup_linear", "set_warmup_lrs"]


class CTRPlugin(HATPlugin, supports_distributed=True):
    """Trains a :class:`CTRModel` task by task (CTR, Ke et al., NeurIPS 2021): HAT's
    steps (:class:`~avalanche_ctr.hat.lifecycle.HATPlugin`) with an optional warm-up.

    * ``before_train_dataset_adaptation``: refuses an experience without a single
      task label, or one that repeats a task with more classes than its head,
      before Avalanche adapts the heads;
    * ``before_training_exp``: installs the task's capsule, routing parts and mask
      embeddings in every CL-plugin (or, for a task label seen before, takes up
      that task's own) and points the optimizer at the trainable parameters, the
      mask embeddings in a group of their own when ``hat_lr`` is given;
    * ``before_training_iteration``: anneals HAT's ``s`` over the epoch's iterations
      and, with ``warmup``, sets the learning rates of the schedule;
    * ``before_backward``: adds HAT's mask regulariser (weight ``mask_reg``);
    * ``after_backward``: stops training with a
      :class:`~avalanche_ctr.finite.NonFiniteError` when the loss or a gradient is NaN
      or infinite (before the optimizer step changes any weight), then blocks the
      gradients of the weights other tasks use and compensates the embedding gradients;
    * ``after_update``: restores any weight other tasks use that the
      optimizer moved (momentum, weight decay) and clamps the task's embeddings;
    * ``after_training_exp``: puts the optimizer's learning rates back (after the
      schedule), folds the task's masks into the cumulative masks and freezes
      everything the task owns.

    A repeated task label continues that task with its capsule, routing parts, mask
    embeddings and head; the TSM and KSM units and weights that other tasks use stay
    frozen, and so do its capsule and ``W_{t·}`` once a later task reads them, so no
    other task changes. Tasks not trained yet can be evaluated (their CL-plugins claim
    no unit and pass their input through), and evaluation during training sees the
    task in training with its binary test-time masks; evaluation changes nothing
    training uses (:class:`~avalanche_ctr.tasks.TaskIncrementalPlugin`).

    :param mask_reg: weight ``c`` of the mask regulariser (HAT Eq. 5).
    :param thres_cosh: clamp of ``s e`` in the gradient compensation.
    :param thres_emb: clamp of the mask embeddings.
    :param hat_lr: learning rate of the mask embeddings, in a parameter group of their
        own (``None``: the optimizer's). HAT was designed for SGD (lr 0.05); with Adam an
        embedding moves by about the learning rate per step whatever its gradient's
        scale, so at the adapters' 1e-3 a task's masks stay at their random
        initialisation and every task claims half of every layer (``docs/ctr.md``).
    :param warmup: ``None`` keeps the optimizer's learning rates constant; a fraction
        ``w`` in ``[0, 1)`` gives BERT's ``warmup_linear`` schedule over each
        experience's steps (:func:`warmup_linear`), as the official CTR code's BertAdam.
    """

    method = "CTR"

    def __init__(
        self,
        *,
        mask_reg: float = 0.75,
        thres_cosh: float = 50.0,
        thres_emb: float = 6.0,
        hat_lr: float | None = 0.05,
        warmup: float | None = None,
    ) -> None:
        super().__init__(
            mask_reg=mask_reg, thres_cosh=thres_cosh, thres_emb=thres_emb, hat_lr=hat_lr
        )
        if warmup is not None and not 0 <= warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
        self.warmup = warmup
        self._base_lrs: list[float] = []

    def _model(self, strategy) -> CTRModel:
        if not isinstance(strategy.model, CTRModel):
            raise TypeError(
                f"CTRPlugin needs a CTRModel, got {type(strategy.model).__name__}; build one "
                "with avalanche_ctr.models.CTRModel(encoder)"
            )
        return strategy.model

    def before_training_exp(self, strategy, **kwargs) -> None:
        super().before_training_exp(strategy, **kwargs)
        self._base_lrs = [group["lr"] for group in strategy.optimizer.param_groups]

    def before_training_iteration(self, strategy, **kwargs) -> None:
        super().before_training_iteration(strategy, **kwargs)
        if self.warmup is not None:
            set_warmup_lrs(strategy, self._base_lrs, self.warmup)

    def after_training_exp(self, strategy, **kwargs) -> None:
        for group, base in zip(strategy.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base  # the next experience starts from the rates, not their decay
        super().after_training_exp(strategy, **kwargs)


def warmup_linear(progress: float, warmup: float) -> float:
    """BERT's ``warmup_linear`` (Devlin et al. 2019; ``BertAdam`` of the official CTR
    code): the learning-rate factor at ``progress`` in ``[0, 1)`` of the training steps,
    rising linearly from 0 to 1 over the first ``warmup`` fraction, then falling linearly
    to 0 at the end."""
    if progress < warmup:
        return progress / warmup
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


def set_warmup_lrs(strategy, base_lrs: list[float], warmup: float) -> None:
    """Set every parameter group's learning rate to its base rate times
    :func:`warmup_linear` at the strategy's progress through the experience's steps."""
    n_batches = len(strategy.dataloader)
    step = strategy.clock.train_exp_epochs * n_batches + strategy.clock.train_epoch_iterations
    factor = warmup_linear(step / (strategy.train_epochs * n_batches), warmup)
    for group, base in zip(strategy.optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * factor


class WarmupLinearPlugin(SupervisedPlugin):
    """BERT's ``warmup_linear`` schedule (:func:`warmup_linear`) over each experience's
    steps, for any strategy (CTR's own is part of :class:`CTRPlugin`): the rates the
    optimizer has when the experience starts are the peaks, and they are put back when it
    ends, so every experience runs the same schedule.

    :param warmup: the warm-up fraction, in ``[0, 1)``.
    """

    def __init__(self, warmup: float) -> None:
        super().__init__()
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
        self.warmup = warmup
        self._base_lrs: list[float] = []

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._base_lrs = [group["lr"] for group in strategy.optimizer.param_groups]

    def before_training_iteration(self, strategy, **kwargs) -> None:
        set_warmup_lrs(strategy, self._base_lrs, self.warmup)

    def after_training_exp(self, strategy, **kwargs) -> None:
        for group, base in zip(strategy.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: nothing, since a checkpoint is taken between
        experiences, when the rates are the peaks again and the next experience reads
        them anew."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""
