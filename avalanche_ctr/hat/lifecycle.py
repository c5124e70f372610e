"""The HAT lifecycle as an Avalanche plugin, for any model with HAT masks."""

from __future__ import annotations

from avalanche_ctr.compat import reset_optimizer_to_trainable
from avalanche_ctr.finite import check_finite_step
from avalanche_ctr.hat.masks import HATModel, anneal_s
from avalanche_ctr.masking import PartialFreeze
from avalanche_ctr.tasks import TaskIncrementalPlugin, check_head_fits, single_task_label

__all__ = ["HATPlugin"]


class HATPlugin(TaskIncrementalPlugin):
    """Trains a model with HAT masks task by task (HAT, Serra et al., ICML 2018, Sec. 2):
    a :class:`~avalanche_ctr.hat.hat_net.HATNet` (:func:`~avalanche_ctr.hat.convert_to_hat`)
    in any strategy; :class:`~avalanche_ctr.ctr.lifecycle.CTRPlugin` drives a
    :class:`~avalanche_ctr.ctr.ctr_model.CTRModel` with it.

    * ``before_train_dataset_adaptation``: refuses an experience without a single
      task label, or one that repeats a task with more classes than its head,
      before Avalanche adapts the heads;
    * ``before_training_exp``: installs the task's mask embeddings (or, for a task
      label seen before, takes up that task's own) and points the optimizer at the
      trainable parameters, the mask embeddings in a group of their own when
      ``hat_lr`` is given;
    * ``before_training_iteration``: anneals ``s`` over the epoch's iterations (Eq. 3);
    * ``before_backward``: adds the mask regulariser (Eq. 5, weight ``mask_reg``);
    * ``after_backward``: stops with :class:`~avalanche_ctr.finite.NonFiniteError` if the
      loss or a gradient is not finite (before any parameter moves), then blocks the
      gradients of the weights other tasks use (Eq. 2, exact) and compensates the
      embedding gradients (Sec. 2.5);
    * ``after_update``: restores any weight other tasks use that the optimizer moved
      (momentum, weight decay) and clamps the task's embeddings (Sec. 2.5);
    * ``after_training_exp``: folds the task's masks into the cumulative masks (Eq. 4)
      and freezes everything the task owns.

    A repeated task label continues that task with its mask embeddings and head; the
    units and weights other tasks use stay frozen, so no other task changes. Tasks not
    trained yet can be evaluated (they claim no unit), and evaluation during training
    sees the task in training with its binary test-time masks; evaluation changes
    nothing training uses (:class:`~avalanche_ctr.tasks.TaskIncrementalPlugin`).

    :param mask_reg: weight ``c`` of the mask regulariser (HAT Eq. 5; the official
        code's ``lamb``).
    :param thres_cosh: clamp of ``s e`` in the gradient compensation.
    :param thres_emb: clamp of the mask embeddings.
    :param hat_lr: learning rate of the mask embeddings, in a parameter group of their
        own (``None``: the optimizer's). HAT was designed for SGD (lr 0.05); with Adam an
        embedding moves by about the learning rate per step whatever its gradient's
        scale (``docs/ctr.md``).
    """

    method = "HAT"
    """The method's name in error messages."""

    def __init__(
        self,
        *,
        mask_reg: float = 0.75,
        thres_cosh: float = 50.0,
        thres_emb: float = 6.0,
        hat_lr: float | None = 0.05,
    ) -> None:
        super().__init__()
        if hat_lr is not None and not hat_lr > 0:
            raise ValueError(f"hat_lr must be a positive learning rate, got {hat_lr}")
        if not mask_reg >= 0:
            raise ValueError(f"mask_reg must be 0 or more, got {mask_reg}")
        if not (thres_cosh > 0 and thres_emb > 0):
            raise ValueError(
                f"thres_cosh and thres_emb must be positive, got {thres_cosh}, {thres_emb}"
            )
        self.mask_reg = mask_reg
        self.thres_cosh = thres_cosh
        self.thres_emb = thres_emb
        self.hat_lr = hat_lr
        self._freeze: PartialFreeze | None = None

    def _model(self, strategy) -> HATModel:
        if not isinstance(strategy.model, HATModel):
            raise TypeError(
                f"HATPlugin needs a model with HAT masks, got {type(strategy.model).__name__}; "
                "convert yours with avalanche_ctr.hat.convert_to_hat(model)"
            )
        return strategy.model

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        task = single_task_label(strategy.experience, self.method)
        model = self._model(strategy)
        if task in model.trained_tasks:
            check_head_fits(model.heads, task, strategy.experience, self.method)

    def before_training_exp(self, strategy, **kwargs) -> None:
        model = self._model(strategy)
        model.start_task(single_task_label(strategy.experience, self.method))
        model.set_trainable()
        self._freeze = model.protection()
        own = (model.mask_embeddings(), {"lr": self.hat_lr}) if self.hat_lr else None
        reset_optimizer_to_trainable(strategy.optimizer, model, own)

    def before_training_iteration(self, strategy, **kwargs) -> None:
        model = self._model(strategy)
        n_batches = len(strategy.dataloader)
        model.s = anneal_s(strategy.clock.train_epoch_iterations, n_batches, model.s_max)

    def before_backward(self, strategy, **kwargs) -> None:
        strategy.loss = strategy.loss + self.mask_reg * self._model(strategy).mask_regularizer()

    def after_backward(self, strategy, **kwargs) -> None:
        check_finite_step(strategy)
        self._freeze.mask_gradients()
        self._model(strategy).compensate_embedding_gradients(self.thres_cosh)

    def after_update(self, strategy, **kwargs) -> None:
        self._freeze.restore()
        self._model(strategy).clamp_embeddings(self.thres_emb)

    def after_training_exp(self, strategy, **kwargs) -> None:
        model = self._model(strategy)
        model.finish_task()
        model.s = model.s_max
        self._freeze = None
