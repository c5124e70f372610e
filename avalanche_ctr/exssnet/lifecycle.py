"""The ExSSNeT lifecycle as an Avalanche plugin."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from avalanche_ctr.compat import reset_optimizer_to_trainable
from avalanche_ctr.exssnet.exclusive import exclusive_update
from avalanche_ctr.exssnet.kkt import KKTChoice, kkt_settings, select_source_task, steps_lift
from avalanche_ctr.exssnet.supermask_net import SupermaskNet, input_sums, merge_input_sums
from avalanche_ctr.exssnet.task_inference import HEAD_RULES, METHODS, infer
from avalanche_ctr.finite import check_finite_step
from avalanche_ctr.masking import PartialFreeze
from avalanche_ctr.tasks import TaskIncrementalPlugin, check_head_fits, single_task_label

__all__ = [
    "ExSSNeTPlugin",
    "BatchInference",
    "LR_SCHEDULES",
    "phase_lr",
    "kkt_seed",
    "adam_like",
]


def adam_like(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` moves a parameter by about its learning rate per step
    whatever the gradient's scale: :class:`torch.optim.Adam`, :class:`torch.optim.AdamW`
    and :class:`~avalanche_ctr.training.bert_adam.BertAdam` (what ``kkt_lift="steps"``
    assumes; :func:`~avalanche_ctr.exssnet.kkt.steps_lift`)."""
    from avalanche_ctr.training.bert_adam import BertAdam

    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW, BertAdam))


@dataclass(frozen=True)
class BatchInference:
    """The task inferred for the last evaluated mini-batch, next to its true task.

    :param true_tasks: the task labels the experience gave, shape ``(B,)``.
    :param task: the inferred task label (one per mini-batch).
    """

    true_tasks: Tensor
    task: int

    @property
    def n_correct(self) -> int:
        """Samples whose inferred task is their true task."""
        return int((self.true_tasks == self.task).sum())


class ExSSNeTPlugin(TaskIncrementalPlugin, supports_distributed=True):
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
    * in every epoch ``after_backward`` first stops training with a
      :class:`~avalanche_ctr.finite.NonFiniteError` when the loss or a gradient is
      NaN or infinite, before the optimizer step changes any weight;
    * ``after_training_exp``: stores ``M_t`` bit-packed and the task's classes
      (task inference reads them), and freezes the task.

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
    :param kkt_preset: the KKT settings to start from
        (:data:`~avalanche_ctr.exssnet.kkt.KKT_PRESETS`: ``"default"`` or
        ``"official"``; ``None``: ``"default"``); the four below override it.
    :param kkt_samples: training samples of the new task that KKT uses, drawn at
        random without replacement (a new draw for every run seed and task).
    :param kkt_k: neighbours of the KKT classifier.
    :param kkt_features: where KKT reads the features
        (:data:`~avalanche_ctr.exssnet.kkt.KKT_FEATURES`): ``"post_activation"``, the
        input of the output layer (or heads), or ``"pre_activation"``, the output of
        the Linear layer before it, before its non-linearity.
    :param kkt_init: how the new scores start from the chosen task
        (:data:`~avalanche_ctr.exssnet.kkt.KKT_INITS`): ``"lift_mask"``, its mask
        lifted above fresh scores, or ``"copy_scores"``, a copy of its float scores,
        which the model then keeps for every finished task (32 bits per maskable
        weight and task, in the state dict).
    :param kkt_lift: under ``"lift_mask"``, how far the chosen task's mask entries are
        lifted above the fresh scores, in units of the largest fresh score (default
        1): the larger, the longer the new mask stays on the chosen task's; or
        ``"steps"`` (:func:`~avalanche_ctr.exssnet.kkt.steps_lift`): the lift that a
        fifth of the mask phase's steps times its rate undo, within [1, 10], with an
        Adam-like optimizer (:func:`adam_like`); 1 with any other.
    :param task_inference: ``None`` (default): evaluation uses the experience's
        task labels. ``"one_shot"``, ``"binary"`` or ``"statistics"``: evaluation
        ignores them and infers each mini-batch's task among the finished tasks
        with :func:`~avalanche_ctr.exssnet.task_inference.infer` (SupSup's GN
        setting); :attr:`last_inference` holds the inferred and the true tasks for
        :func:`~avalanche_ctr.exssnet.task_inference.task_inference_metrics`.
        Before any task is finished there is nothing to infer and the given
        labels are used. May be changed between evaluations.
    :param head_rule: the head rule of the gradient methods (``None``: the
        default of :func:`~avalanche_ctr.exssnet.task_inference.infer`).
    :param mask_lr: learning rate of the mask phase (``None``: the optimizer's).
    :param weight_lr: learning rate of the weight phase (``None``: the optimizer's).
    :param lr_schedule: ``"constant"`` (default) or ``"cosine"``: the learning rate
        of each phase falls from the phase's rate to 0 along a half cosine over the
        phase's iterations (the official code anneals per epoch; per iteration also
        anneals a one-epoch phase). With the defaults the optimizer's learning rate
        is left alone (e.g. for Avalanche's ``LRSchedulerPlugin``); otherwise the
        plugin sets it before every training iteration.
    :param input_statistics: record each task's input statistics while training,
        in its first epoch (what ``task_inference="statistics"`` reads:
        ``(C + 1)·(D + 1)`` float64 numbers per task of ``C`` classes and inputs of
        ``D`` features). ``None``: only when ``task_inference="statistics"``.
    """

    runtime_options = ("task_inference",)
    """May change between evaluations: not compared when a checkpoint is loaded."""

    def __init__(
        self,
        *,
        mask_epochs: int = 1,
        weight_epochs: int = 1,
        exclusive: bool = True,
        kkt: bool = True,
        kkt_preset: str | None = None,
        kkt_samples: int | None = None,
        kkt_k: int | None = None,
        kkt_features: str | None = None,
        kkt_init: str | None = None,
        kkt_lift: float | str | None = None,
        task_inference: str | None = None,
        head_rule: str | None = None,
        input_statistics: bool | None = None,
        mask_lr: float | None = None,
        weight_lr: float | None = None,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; use one of {LR_SCHEDULES}")
        for name, lr in (("mask_lr", mask_lr), ("weight_lr", weight_lr)):
            if lr is not None and not lr > 0:
                raise ValueError(f"{name} must be a positive learning rate or None, got {lr}")
        if task_inference is not None and task_inference not in METHODS:
            raise ValueError(
                f"unknown task_inference {task_inference!r}; use None (given task labels) "
                f"or one of {METHODS}"
            )
        if head_rule is not None and head_rule not in HEAD_RULES:
            raise ValueError(f"unknown head_rule {head_rule!r}; use None or one of {HEAD_RULES}")
        if mask_epochs < 1 or weight_epochs < 0:
            raise ValueError(
                f"need mask_epochs >= 1 and weight_epochs >= 0, got {mask_epochs}, {weight_epochs}"
            )
        self.mask_epochs = mask_epochs
        self.weight_epochs = weight_epochs
        self.exclusive = exclusive
        self.kkt = kkt
        self.kkt_settings = kkt_settings(
            kkt_preset,
            samples=kkt_samples,
            k=kkt_k,
            features=kkt_features,
            init=kkt_init,
            lift=kkt_lift,
        )
        self.last_kkt: KKTChoice | None = None
        self.task_inference = task_inference
        self.head_rule = head_rule
        self.input_statistics = (
            task_inference == "statistics" if input_statistics is None else input_statistics
        )
        self.last_inference: BatchInference | None = None
        self.mask_lr = mask_lr
        self.weight_lr = weight_lr
        self.lr_schedule = lr_schedule
        self._update: PartialFreeze | None = None
        self._input_sums: Tensor | None = None

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
        settings = self.kkt_settings
        if self.kkt:
            model.check_feature_point(settings.features)
            # the scores KKT copies must be kept from the first task on
            model.keep_scores = model.keep_scores or settings.init == "copy_scores"
        continuing = task in model.trained_tasks
        model.start_task(task)
        self._input_sums = None
        self.last_kkt = None
        if self.kkt and model.trained_tasks and not continuing:
            x, y = self._sample(strategy, task)
            n_classes = len(strategy.experience.classes_in_this_experience)
            self.last_kkt = select_source_task(
                model, x, y, n_classes=n_classes, k=settings.k, features=settings.features
            )
            if self.last_kkt.source is not None:
                model.init_scores_from_task(
                    self.last_kkt.source,
                    copy_scores=settings.init == "copy_scores",
                    lift=self._steps_lifts(strategy, model)
                    if settings.lift == "steps"
                    else settings.lift,
                )
        model.set_trainable(scores=True, weights=False)
        reset_optimizer_to_trainable(strategy.optimizer, model)

    def _steps_lifts(self, strategy, model: SupermaskNet) -> list[float]:
        """:func:`~avalanche_ctr.exssnet.kkt.steps_lift` of every supermask layer for this
        experience's mask phase: its rate (``mask_lr``, else the optimizer's) and steps.
        1 in every layer unless the optimizer is Adam's kind (:func:`adam_like`), whose
        step the rule reads from the rate."""
        if not adam_like(strategy.optimizer):
            return [1.0] * len(model.supermask_layers)
        group = strategy.optimizer.param_groups[0]
        lr = self.mask_lr if self.mask_lr is not None else group.get("base_lr", group["lr"])
        steps = len(strategy.dataloader) * self.mask_epochs
        return [
            steps_lift(float(layer.scores.detach().abs().max()), lr, steps)
            for layer in model.supermask_layers
        ]

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_epochs != self.mask_epochs or self.weight_epochs == 0:
            return
        model = _supermask_model(strategy)
        model.fix_mask()
        model.set_trainable(scores=False, weights=True)
        self._update = exclusive_update(model, exclusive=self.exclusive)
        reset_optimizer_to_trainable(strategy.optimizer, model)

    def after_backward(self, strategy, **kwargs) -> None:
        check_finite_step(strategy)
        if self._update is not None:
            self._update.mask_gradients()

    def after_update(self, strategy, **kwargs) -> None:
        if self._update is not None:
            self._update.restore()

    def before_training_iteration(self, strategy, **kwargs) -> None:
        if self.mask_lr is None and self.weight_lr is None and self.lr_schedule == "constant":
            return
        epoch = strategy.clock.train_exp_epochs
        weight_phase = epoch >= self.mask_epochs
        group = strategy.optimizer.param_groups[0]
        # the optimizer's own rate, kept in its parameter group across phase resets
        base = group.setdefault("base_lr", group["lr"])
        chosen = self.weight_lr if weight_phase else self.mask_lr
        lr = base if chosen is None else chosen
        if self.lr_schedule == "cosine":
            epochs = self.weight_epochs if weight_phase else self.mask_epochs
            per_epoch = len(strategy.dataloader)
            done = (epoch - (self.mask_epochs if weight_phase else 0)) * per_epoch
            lr = phase_lr(lr, done + strategy.clock.train_epoch_iterations, epochs * per_epoch)
        for each in strategy.optimizer.param_groups:
            each["lr"] = lr

    def after_training_iteration(self, strategy, **kwargs) -> None:
        if self.input_statistics and strategy.clock.train_exp_epochs == 0:
            # as many class rows as the experience has, so every rank's sums align
            n_classes = max(strategy.experience.classes_in_this_experience) + 1
            sums = input_sums(strategy.mb_x, strategy.mb_y, n_classes)
            self._input_sums = (
                sums if self._input_sums is None else merge_input_sums(self._input_sums, sums)
            )

    def before_eval_forward(self, strategy, **kwargs) -> None:
        """With ``task_inference``, replace the mini-batch's task labels by the
        inferred task (the true ones come back in :meth:`after_eval_forward`)."""
        self.last_inference = None
        model = strategy.model
        if self.task_inference is None or not isinstance(model, SupermaskNet):
            return
        if not model.trained_tasks:
            return
        result = infer(model, strategy.mb_x, method=self.task_inference, head_rule=self.head_rule)
        true_tasks = strategy.mbatch[-1]
        self.last_inference = BatchInference(true_tasks, result.task)
        strategy.mbatch[-1] = torch.full_like(true_tasks, result.task)

    def after_eval_forward(self, strategy, **kwargs) -> None:
        if self.last_inference is not None:
            strategy.mbatch[-1] = self.last_inference.true_tasks

    def after_training_exp(self, strategy, **kwargs) -> None:
        model = _supermask_model(strategy)
        if self._input_sums is not None:
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(self._input_sums)  # each rank saw its part of every batch
            model.add_input_sums(model.training_task, self._input_sums)
            self._input_sums = None
        model.finish_task(strategy.experience.classes_in_this_experience)
        self._update = None
        for param in model.parameters():
            param.requires_grad_(False)

    def _sample(self, strategy, task: int) -> tuple[Tensor, Tensor]:
        """KKT's sample of the new task: drawn from a generator seeded by the run's
        seed (``torch.initial_seed()``, which ``torch.manual_seed`` and Avalanche's
        ``RNGManager.set_random_seeds`` set) and the task label, so it follows the
        run seed without drawing from the global stream that training uses."""
        dataset = strategy.experience.dataset.eval()
        generator = torch.Generator().manual_seed(kkt_seed(torch.initial_seed(), task))
        n = min(self.kkt_settings.samples, len(dataset))
        indices = torch.randperm(len(dataset), generator=generator)[:n].tolist()
        items = [dataset[i] for i in indices]
        x = torch.stack([item[0] for item in items]).to(strategy.device)
        y = torch.as_tensor([int(item[1]) for item in items], device=strategy.device)
        return x, y


LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
"""Learning-rate schedules of a phase (:class:`ExSSNeTPlugin`'s ``lr_schedule``)."""


def phase_lr(lr: float, step: int, steps: int) -> float:
    """Cosine annealing within a phase: ``lr · (1 + cos(π · step / steps)) / 2``, from
    ``lr`` at the phase's first iteration towards 0 at its end."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(steps, 1)))


def kkt_seed(run_seed: int, task: int) -> int:
    """The seed of KKT's sample for ``task`` in a run seeded with ``run_seed``."""
    return (run_seed * 1_000_003 + task) % 2**63


def _supermask_model(strategy) -> SupermaskNet:
    if not isinstance(strategy.model, SupermaskNet):
        raise TypeError(
            f"ExSSNeTPlugin needs a SupermaskNet model, got {type(strategy.model).__name__}; "
            "convert it with avalanche_ctr.exssnet.convert_to_supermask(model, density=...) "
            "or use the ExSSNeT / SupSup strategies, which convert it for you"
        )
    return strategy.model
