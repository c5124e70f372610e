"""The ExSSNeT lifecycle as an Avalanche plugin."""

from __future__ import annotations

import torch
from torch import Tensor

from avalanche_ctr.compat import reset_optimizer_to_trainable
from avalanche_ctr.exssnet.exclusive import exclusive_update
from avalanche_ctr.exssnet.kkt import KKTChoice, select_source_task
from avalanche_ctr.exssnet.supermask_net import SupermaskNet
from avalanche_ctr.masking import PartialFreeze
from avalanche_ctr.tasks import TaskIncrementalPlugin, check_head_fits, single_task_label

__all__ = ["ExSSNeTPlugin"]


class ExSSNeTPlugin(TaskIncrementalPlugin):
    """Supermask learning, exclusive weight training and KKT for any strategy.

    Per experience (task ``t``):

    * ``before_train_dataset_adaptation``: refuses an experience without a single
      task label, or one that repeats a task with more classes than its head,
      before Avalanche adapts the model;
    * ``before_training_exp``: installs task ``t``'s scores and BatchNorm,
      initialises the scores by KKT when enabled, and points the optimizer at
      the scores, the task's head and BatchNorm;
    * the first ``mask_epochs`` epochs learn the mask (SupSup, Sec. 3.1);
    * the next ``weight_epochs`` epochs train only the weights that are in
      ``M_t`` and, with ``exclusive=True``, in no earlier mask (ExSSNeT,
      Sec. 3.2): ``after_backward`` masks the gradients, ``after_update`` puts
      back any other weight an optimizer's momentum or weight decay moved;
    * ``after_training_exp``: stores ``M_t`` bit-packed and freezes the task.

    A task label seen before continues that task: its scores start at its stored
    mask (no KKT), it keeps its BatchNorm and head, and the weight phase trains
    only the weights of its mask that no *other* task's mask uses, so no other
    task changes. Tasks not trained yet can be evaluated, and evaluation during
    training sees the task in training with its current mask; evaluation changes
    nothing training uses (:class:`~avalanche_ctr.tasks.TaskIncrementalPlugin`).

    The strategy's model must be a :class:`SupermaskNet`
    (:func:`~avalanche_ctr.exssnet.supermask_net.convert_to_supermask`) and its
    ``train_epochs`` must equal ``mask_epochs + weight_epochs``.

    :param mask_epochs: epochs that learn the task's mask.
    :param weight_epochs: epochs that then train the task's free weights
        (0: SupSup).
    :param exclusive: train only weights no earlier task uses (ExSSNeT);
        ``False`` gives SSNeT, which may forget.
    :param kkt: initialise each new mask from the most similar earlier task.
    :param kkt_samples: training samples of the new task that KKT uses.
    :param kkt_k: neighbours of the KKT classifier.
    """

    def __init__(
        self,
        *,
        mask_epochs: int = 1,
        weight_epochs: int = 1,
        exclusive: bool = True,
        kkt: bool = True,
        kkt_samples: int = 256,
        kkt_k: int = 5,
    ) -> None:
        super().__init__()
        if mask_epochs < 1 or weight_epochs < 0:
            raise ValueError(
                f"need mask_epochs >= 1 and weight_epochs >= 0, got {mask_epochs}, {weight_epochs}"
            )
        self.mask_epochs = mask_epochs
        self.weight_epochs = weight_epochs
        self.exclusive = exclusive
        self.kkt = kkt
        self.kkt_samples = kkt_samples
        self.kkt_k = kkt_k
        self.last_kkt: KKTChoice | None = None
        self._update: PartialFreeze | None = None

    def before_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        """Refuse an experience that does not fit before Avalanche adapts the model
        (e.g. grows a head) for it."""
        model = _supermask_model(strategy)
        task = single_task_label(strategy.experience, "ExSSNeT")
        if task in model.trained_tasks:
            check_head_fits(model.heads, task, strategy.experience, "ExSSNeT")

    def before_training_exp(self, strategy, **kwargs) -> None:
        model = _supermask_model(strategy)
        expected = self.mask_epochs + self.weight_epochs
        if strategy.train_epochs != expected:
            raise ValueError(
                f"strategy.train_epochs is {strategy.train_epochs} but ExSSNeTPlugin needs "
                f"mask_epochs + weight_epochs = {expected}; set train_epochs={expected}"
            )
        task = single_task_label(strategy.experience, "ExSSNeT")
        continuing = task in model.trained_tasks
        model.start_task(task)
        self.last_kkt = None
        if self.kkt and model.trained_tasks and not continuing:
            x, y = self._sample(strategy)
            n_classes = len(strategy.experience.classes_in_this_experience)
            self.last_kkt = select_source_task(model, x, y, n_classes=n_classes, k=self.kkt_k)
            if self.last_kkt.source is not None:
                model.init_scores_from_task(self.last_kkt.source)
        model.set_trainable(scores=True, weights=False)
        reset_optimizer_to_trainable(strategy.optimizer, model)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_epochs != self.mask_epochs or self.weight_epochs == 0:
            return
        model = _supermask_model(strategy)
        model.fix_mask()
        model.set_trainable(scores=False, weights=True)
        self._update = exclusive_update(model, exclusive=self.exclusive)
        reset_optimizer_to_trainable(strategy.optimizer, model)

    def after_backward(self, strategy, **kwargs) -> None:
        if self._update is not None:
            self._update.mask_gradients()

    def after_update(self, strategy, **kwargs) -> None:
        if self._update is not None:
            self._update.restore()

    def after_training_exp(self, strategy, **kwargs) -> None:
        model = _supermask_model(strategy)
        model.finish_task()
        self._update = None
        for param in model.parameters():
            param.requires_grad_(False)

    def _sample(self, strategy) -> tuple[Tensor, Tensor]:
        dataset = strategy.experience.dataset.eval()
        generator = torch.Generator().manual_seed(len(dataset))
        n = min(self.kkt_samples, len(dataset))
        indices = torch.randperm(len(dataset), generator=generator)[:n].tolist()
        items = [dataset[i] for i in indices]
        x = torch.stack([item[0] for item in items]).to(strategy.device)
        y = torch.as_tensor([int(item[1]) for item in items], device=strategy.device)
        return x, y


def _supermask_model(strategy) -> SupermaskNet:
    if not isinstance(strategy.model, SupermaskNet):
        raise TypeError(
            f"ExSSNeTPlugin needs a SupermaskNet model, got {type(strategy.model).__name__}; "
            "convert it with avalanche_ctr.exssnet.convert_to_supermask(model, density=...) "
            "or use the ExSSNeT / SupSup strategies, which convert it for you"
        )
    return strategy.model
