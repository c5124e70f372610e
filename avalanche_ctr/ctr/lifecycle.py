"""The CTR lifecycle as an Avalanche plugin."""

from __future__ import annotations

from avalanche_ctr.compat import reset_optimizer_to_trainable
from avalanche_ctr.ctr.ctr_model import CTRModel
from avalanche_ctr.ctr.task_masks import anneal_s
from avalanche_ctr.masking import PartialFreeze
from avalanche_ctr.tasks import TaskIncrementalPlugin, check_head_fits, single_task_label

__all__ = ["CTRPlugin"]


class CTRPlugin(TaskIncrementalPlugin, supports_distributed=True):
    """Trains a :class:`CTRModel` task by task (CTR, Ke et al., NeurIPS 2021).

    * ``before_train_dataset_adaptation``: refuses an experience without a single
      task label, or one that repeats a task with more classes than its head,
      before Avalanche adapts the heads;
    * ``before_training_exp``: installs the task's capsule, routing and mask
      embeddings in every CL-plugin (or, for a task label seen before, takes up
      that task's own) and points the optimizer at the trainable parameters;
    * ``before_training_iteration``: anneals HAT's ``s`` over the epoch's iterations;
    * ``before_backward``: adds HAT's mask regulariser (weight ``mask_reg``);
    * ``after_backward``: blocks the gradients of the weights earlier tasks use
      and compensates the embedding gradients;
    * ``after_update``: restores any weight earlier tasks use that the
      optimizer moved (momentum, weight decay) and clamps the task's embeddings;
    * ``after_training_exp``: folds the task's masks into the cumulative masks
      and freezes everything the task owns.

    A repeated task label continues that task with its capsule, routing, mask
    embeddings and head; the TSM units and weights that other tasks use stay
    frozen, and so does its capsule once a later task reads it, so no other task
    changes. Tasks not trained yet can be evaluated (their CL-plugins claim no
    unit and pass their input through), and evaluation during training sees the
    task in training at HAT's test-time scale ``s_max``; evaluation changes nothing
    training uses (:class:`~avalanche_ctr.tasks.TaskIncrementalPlugin`).

    :param mask_reg: weight ``c`` of the mask regulariser (HAT Eq. 5).
    :param thres_cosh: clamp of ``s e`` in the gradient compensation.
    :param thres_emb: clamp of the mask embeddings.
    """

    def __init__(
        self, *, mask_reg: float = 0.75, thres_cosh: float = 50.0, thres_emb: float = 6.0
    ) -> None:
        super().__init__()
        self.mask_reg = mask_reg
        self.thres_cosh = thres_cosh
        self.thres_emb = thres_emb
        self._freeze: PartialFreeze | None = None

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        task = single_task_label(strategy.experience, "CTR")
        model = _ctr_model(strategy)
        if task in model.trained_tasks:
            check_head_fits([model.classifier], task, strategy.experience, "CTR")

    def before_training_exp(self, strategy, **kwargs) -> None:
        model = _ctr_model(strategy)
        model.start_task(single_task_label(strategy.experience, "CTR"))
        model.set_trainable()
        self._freeze = model.protection()
        reset_optimizer_to_trainable(strategy.optimizer, model)

    def before_training_iteration(self, strategy, **kwargs) -> None:
        model = _ctr_model(strategy)
        model.s = anneal_s(
            strategy.clock.train_epoch_iterations, len(strategy.dataloader), model.s_max
        )

    def before_backward(self, strategy, **kwargs) -> None:
        strategy.loss = strategy.loss + self.mask_reg * _ctr_model(strategy).mask_regularizer()

    def after_backward(self, strategy, **kwargs) -> None:
        self._freeze.mask_gradients()
        _ctr_model(strategy).compensate_embedding_gradients(self.thres_cosh)

    def after_update(self, strategy, **kwargs) -> None:
        self._freeze.restore()
        _ctr_model(strategy).clamp_embeddings(self.thres_emb)

    def after_training_exp(self, strategy, **kwargs) -> None:
        model = _ctr_model(strategy)
        model.finish_task()
        model.s = model.s_max
        self._freeze = None


def _ctr_model(strategy) -> CTRModel:
    if not isinstance(strategy.model, CTRModel):
        raise TypeError(
            f"CTRPlugin needs a CTRModel, got {type(strategy.model).__name__}; build one with "
            "avalanche_ctr.models.CTRModel(encoder)"
        )
    return strategy.model
