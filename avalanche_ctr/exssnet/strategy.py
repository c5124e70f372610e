"""ExSSNeT, SSNeT and SupSup as Avalanche strategies."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from avalanche.core import BasePlugin
from avalanche.training.plugins.evaluation import EvaluationPlugin, default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from torch.nn import CrossEntropyLoss
from torch.optim import Optimizer

from avalanche_ctr.compat import PluginManagedOptimizer
from avalanche_ctr.exssnet.lifecycle import ExSSNeTPlugin
from avalanche_ctr.exssnet.supermask_net import (
    OUTPUT_FLOOR_DEFAULT,
    OUTPUT_TOPK_DEFAULT,
    WEIGHT_SCALE_DEFAULT,
    convert_to_supermask,
)

__all__ = ["ExSSNeT", "SupSup", "EXSSNET_KKT_LIFT_DEFAULT", "SUPSUP_WEIGHT_SCALE_DEFAULT"]

EXSSNET_KKT_LIFT_DEFAULT: float | str = "steps"
""":class:`ExSSNeT`'s default ``kkt_lift``: ``"steps"``
(:func:`~avalanche_ctr.exssnet.kkt.steps_lift`), chosen by measurement on issue 27's
stream and split_digits (``benchmarks/RESULTS.md``, "Issue 27: the defaults chosen").
:class:`SupSup`'s is the preset's, 1."""

SUPSUP_WEIGHT_SCALE_DEFAULT: str | float = "low_density"
""":class:`SupSup`'s default ``weight_scale``: ``"low_density"``
(:func:`~avalanche_ctr.exssnet.supermask.low_density_weight_scale`, 1 from density 0.1
up), chosen by measurement (``benchmarks/RESULTS.md``, "Issue 27: the defaults chosen").
:class:`ExSSNeT`'s is ``"none"``
(:data:`~avalanche_ctr.exssnet.supermask_net.WEIGHT_SCALE_DEFAULT`)."""


class ExSSNeT(PluginManagedOptimizer, SupervisedTemplate):
    """Exclusive Supermask SubNEtwork Training (Yadav & Bansal, ACL Findings 2023).

    Learns one supermask per task over shared weights fixed at a
    signed-constant initialisation (SupSup), then trains only the weights of
    the new mask that no earlier task's mask uses, so nothing learned is
    forgotten. KNN-based knowledge transfer (KKT) initialises each new mask
    from the most similar earlier task. ``exclusive=False`` gives SSNeT, the
    paper's non-exclusive ablation.

    The model is converted in place by
    :func:`~avalanche_ctr.exssnet.supermask_net.convert_to_supermask`: Linear and
    Conv2d layers become supermask layers (fresh signed-constant weights, no
    bias), BatchNorm becomes per-task BatchNorm, and
    :class:`~avalanche.models.MultiHeadClassifier` heads stay dense per-task
    heads. The optimizer keeps the hyper-parameters of its first parameter
    group and is pointed at the parameters of the current phase.

    Needs a task-incremental stream (one task label per experience), e.g.
    ``SplitMNIST(5, return_task_id=True)``. Works in Avalanche's own loops: tasks not
    trained yet can be evaluated (at chance), evaluation may run during training, and a
    repeated task label continues that task (``docs/avalanche.md``).

    :param model: the model to convert (e.g. ``avalanche.models.MTSimpleMLP``).
    :param optimizer: optimizer whose hyper-parameters are used.
    :param criterion: loss function.
    :param density: fraction of each layer's weights a task's mask keeps, in (0, 1].
    :param mask_epochs: epochs per experience that learn the mask.
    :param weight_epochs: epochs per experience that then train free weights.
    :param kkt: KNN-based knowledge transfer for the mask initialisation.
    :param kkt_preset: KKT's settings to start from, ``"default"`` or ``"official"``
        (the official code's: 1,280 samples, 200 neighbours, features before the
        ReLU, scores copied); ``None``: ``"default"``.
    :param kkt_samples: KKT's sample of the new task (overrides the preset).
    :param kkt_k: KKT's neighbours (overrides the preset).
    :param kkt_features: ``"post_activation"`` or ``"pre_activation"`` (overrides the
        preset; :class:`ExSSNeTPlugin`).
    :param kkt_init: ``"lift_mask"`` or ``"copy_scores"`` (overrides the preset;
        ``"copy_scores"`` keeps every finished task's float scores).
    :param kkt_lift: how far ``"lift_mask"`` lifts the chosen task's entries, in units
        of the largest fresh score, or ``"steps"``
        (:func:`~avalanche_ctr.exssnet.kkt.steps_lift`: the lift a fifth of the mask
        phase's steps times its rate undo, within [1, 10], with an Adam-like optimizer,
        else 1; the default, :data:`EXSSNET_KKT_LIFT_DEFAULT`);
        ``None``: the preset's, 1 (``docs/exssnet.md``).
    :param output_topk: the top-k rule of a masked output layer, ``"unit"``,
        ``"layer"`` or ``"layer_floor"``
        (:func:`~avalanche_ctr.exssnet.supermask_net.convert_to_supermask`).
    :param output_floor: weights per output unit under ``"layer_floor"``.
    :param weight_scale: the factor on the signed-constant weights, ``"none"`` (1, the
        official code's; the default), ``"density"`` (``density^(-1/4)``, ours),
        ``"low_density"`` (``min(1, density / 0.1)^(-1/4)``, ours; :class:`SupSup`'s
        default) or a positive number
        (:func:`~avalanche_ctr.exssnet.supermask_net.convert_to_supermask`;
        ``docs/exssnet.md``).
    :param exclusive: ``False`` gives SSNeT (weights shared with earlier tasks
        are trained too, so earlier tasks may be forgotten).
    :param task_inference: ``None``: evaluation uses the experience's task labels;
        ``"one_shot"``, ``"binary"`` or ``"statistics"``: it infers each
        mini-batch's task instead (:class:`ExSSNeTPlugin`;
        ``strategy.exssnet_plugin.task_inference`` may be changed between
        evaluations).
    :param head_rule: head rule of the gradient task-inference methods.
    :param input_statistics: record the input statistics ``"statistics"``
        inference reads (default: only with ``task_inference="statistics"``).
    :param mask_lr: learning rate of the mask phase (``None``: the optimizer's).
    :param weight_lr: learning rate of the weight phase (``None``: the optimizer's).
    :param lr_schedule: ``"constant"`` or ``"cosine"`` within each phase
        (:class:`ExSSNeTPlugin`).
    :param train_mb_size: training mini-batch size.
    :param eval_mb_size: evaluation mini-batch size.
    :param device: where the model runs.
    :param plugins: further plugins; all are kept.
    :param evaluator: Avalanche evaluation plugin.
    :param eval_every: as in Avalanche's templates.
    :param base_kwargs: forwarded to :class:`SupervisedTemplate`.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: Optimizer,
        criterion: nn.Module = CrossEntropyLoss(),
        density: float = 0.1,
        mask_epochs: int = 1,
        weight_epochs: int = 1,
        kkt: bool = True,
        kkt_preset: str | None = None,
        kkt_samples: int | None = None,
        kkt_k: int | None = None,
        kkt_features: str | None = None,
        kkt_init: str | None = None,
        kkt_lift: float | str | None = EXSSNET_KKT_LIFT_DEFAULT,
        output_topk: str = OUTPUT_TOPK_DEFAULT,
        output_floor: int = OUTPUT_FLOOR_DEFAULT,
        weight_scale: str | float = WEIGHT_SCALE_DEFAULT,
        exclusive: bool = True,
        task_inference: str | None = None,
        head_rule: str | None = None,
        input_statistics: bool | None = None,
        mask_lr: float | None = None,
        weight_lr: float | None = None,
        lr_schedule: str = "constant",
        train_mb_size: int = 1,
        eval_mb_size: int | None = None,
        device: str = "cpu",
        plugins: Sequence[BasePlugin] | None = None,
        evaluator: EvaluationPlugin | Callable[[], EvaluationPlugin] = default_evaluator,
        eval_every: int = -1,
        **base_kwargs,
    ) -> None:
        self.exssnet_plugin = ExSSNeTPlugin(
            mask_epochs=mask_epochs,
            weight_epochs=weight_epochs,
            exclusive=exclusive,
            kkt=kkt,
            kkt_preset=kkt_preset,
            kkt_samples=kkt_samples,
            kkt_k=kkt_k,
            kkt_features=kkt_features,
            kkt_init=kkt_init,
            kkt_lift=kkt_lift,
            task_inference=task_inference,
            head_rule=head_rule,
            input_statistics=input_statistics,
            mask_lr=mask_lr,
            weight_lr=weight_lr,
            lr_schedule=lr_schedule,
        )
        super().__init__(
            model=convert_to_supermask(
                model,
                density=density,
                output_topk=output_topk,
                output_floor=output_floor,
                weight_scale=weight_scale,
            ),
            optimizer=optimizer,
            criterion=criterion,
            train_mb_size=train_mb_size,
            train_epochs=mask_epochs + weight_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=[*(plugins or []), self.exssnet_plugin],
            evaluator=evaluator,
            eval_every=eval_every,
            **base_kwargs,
        )


class SupSup(ExSSNeT):
    """Supermasks in Superposition (Wortsman et al., NeurIPS 2020), task-incremental
    ("GG") setting: weights stay at their signed-constant initialisation and each
    task learns only its supermask, for ``train_epochs`` epochs.

    KKT is off by default, as in the paper's SupSup; with it on, ``kkt_lift`` defaults
    to the preset's 1. ``weight_scale`` defaults to ``"low_density"``
    (:data:`SUPSUP_WEIGHT_SCALE_DEFAULT`: factor 1 from density 0.1 up, 1.50 at 0.02; a
    departure from the official code, whose factor is 1 at every density). The other
    parameters are those of :class:`ExSSNeT`.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: Optimizer,
        criterion: nn.Module = CrossEntropyLoss(),
        density: float = 0.1,
        train_epochs: int = 1,
        kkt: bool = False,
        kkt_preset: str | None = None,
        kkt_samples: int | None = None,
        kkt_k: int | None = None,
        kkt_features: str | None = None,
        kkt_init: str | None = None,
        kkt_lift: float | str | None = None,
        output_topk: str = OUTPUT_TOPK_DEFAULT,
        output_floor: int = OUTPUT_FLOOR_DEFAULT,
        weight_scale: str | float = SUPSUP_WEIGHT_SCALE_DEFAULT,
        task_inference: str | None = None,
        head_rule: str | None = None,
        input_statistics: bool | None = None,
        mask_lr: float | None = None,
        lr_schedule: str = "constant",
        train_mb_size: int = 1,
        eval_mb_size: int | None = None,
        device: str = "cpu",
        plugins: Sequence[BasePlugin] | None = None,
        evaluator: EvaluationPlugin | Callable[[], EvaluationPlugin] = default_evaluator,
        eval_every: int = -1,
        **base_kwargs,
    ) -> None:
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            density=density,
            mask_epochs=train_epochs,
            weight_epochs=0,
            kkt=kkt,
            kkt_preset=kkt_preset,
            kkt_samples=kkt_samples,
            kkt_k=kkt_k,
            kkt_features=kkt_features,
            kkt_init=kkt_init,
            kkt_lift=kkt_lift,
            output_topk=output_topk,
            output_floor=output_floor,
            weight_scale=weight_scale,
            task_inference=task_inference,
            head_rule=head_rule,
            input_statistics=input_statistics,
            mask_lr=mask_lr,
            lr_schedule=lr_schedule,
            train_mb_size=train_mb_size,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=plugins,
            evaluator=evaluator,
            eval_every=eval_every,
            **base_kwargs,
        )
