"""CTR as an Avalanche strategy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from avalanche.core import BasePlugin
from avalanche.training.plugins.evaluation import EvaluationPlugin, default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from torch.nn import CrossEntropyLoss
from torch.optim import Optimizer

from avalanche_ctr.compat import PluginManagedOptimizer
from avalanche_ctr.ctr.ctr_model import CTRModel
from avalanche_ctr.ctr.lifecycle import CTRPlugin

__all__ = ["CTR"]


class CTR(PluginManagedOptimizer, SupervisedTemplate):
    """CTR (Ke, Liu, Ma, Xu, Shu, NeurIPS 2021, "Achieving Forgetting Prevention and
    Knowledge Transfer in Continual Learning").

    Trains a :class:`~avalanche_ctr.ctr.ctr_model.CTRModel` (frozen BERT-family
    encoder with two CL-plugins per layer) on a task-incremental text stream:
    each task gets its own capsule, transfer routing, HAT mask embeddings and
    head; HAT masks protect what earlier tasks use, so training task ``t``
    leaves earlier tasks' outputs unchanged. Works in Avalanche's own loops: tasks
    not trained yet can be evaluated (at chance), evaluation may run during training,
    and a repeated task label continues that task (``docs/avalanche.md``).

    :param model: a :class:`CTRModel`.
    :param optimizer: optimizer whose first parameter group's hyper-parameters
        are used; it is pointed at each task's trainable parameters.
    :param criterion: loss function.
    :param s_max: HAT's largest mask scale, reached at the end of every training epoch
        (the test-time masks are binary, so it does not change trained tasks).
    :param mask_reg: weight of HAT's mask regulariser.
    :param hat_lr: learning rate of HAT's mask embeddings, in their own parameter group
        (``None``: the optimizer's).
    :param warmup: ``None`` (constant learning rates) or the warm-up fraction of BERT's
        ``warmup_linear`` schedule over each experience
        (:func:`~avalanche_ctr.ctr.lifecycle.warmup_linear`).
    :param train_mb_size: training mini-batch size.
    :param train_epochs: epochs per experience.
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
        model: CTRModel,
        optimizer: Optimizer,
        criterion: nn.Module = CrossEntropyLoss(),
        s_max: float = 400.0,
        mask_reg: float = 0.75,
        hat_lr: float | None = 0.05,
        warmup: float | None = None,
        train_mb_size: int = 32,
        train_epochs: int = 1,
        eval_mb_size: int | None = None,
        device: str = "cpu",
        plugins: Sequence[BasePlugin] | None = None,
        evaluator: EvaluationPlugin | Callable[[], EvaluationPlugin] = default_evaluator,
        eval_every: int = -1,
        **base_kwargs,
    ) -> None:
        if not isinstance(model, CTRModel):
            raise TypeError(
                f"CTR needs a CTRModel, got {type(model).__name__}; wrap your encoder with "
                "avalanche_ctr.models.CTRModel(encoder)"
            )
        if s_max <= 0:
            raise ValueError(f"s_max must be positive, got {s_max}")
        model.s_max = model.s = float(s_max)
        self.ctr_plugin = CTRPlugin(mask_reg=mask_reg, hat_lr=hat_lr, warmup=warmup)
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=[*(plugins or []), self.ctr_plugin],
            evaluator=evaluator,
            eval_every=eval_every,
            **base_kwargs,
        )
