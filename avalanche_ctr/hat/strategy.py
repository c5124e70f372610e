"""HAT as an Avalanche strategy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from avalanche.core import BasePlugin
from avalanche.training.plugins.evaluation import EvaluationPlugin, default_evaluator
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from torch.nn import CrossEntropyLoss
from torch.optim import Optimizer

from avalanche_ctr.compat import PluginManagedOptimizer
from avalanche_ctr.hat.hat_net import convert_to_hat
from avalanche_ctr.hat.lifecycle import HATPlugin

__all__ = ["HAT"]


class HAT(PluginManagedOptimizer, SupervisedTemplate):
    """HAT (Serra, Surís, Miron, Karatzoglou, ICML 2018, "Overcoming Catastrophic
    Forgetting with Hard Attention to the Task").

    Converts ``model`` with :func:`~avalanche_ctr.hat.hat_net.convert_to_hat` (every
    ``Linear`` / ``Conv1d`` / ``Conv2d`` gets a per-task mask over its units; the
    ``MultiHeadClassifier`` heads stay per task) and trains it with
    :class:`~avalanche_ctr.hat.lifecycle.HATPlugin`: each task learns its masks and the
    weights of the units no earlier task uses, so training task ``t`` leaves every
    earlier task's outputs unchanged. Works in Avalanche's own loops: tasks not trained
    yet can be evaluated, evaluation may run during training, and a repeated task label
    continues that task (``docs/avalanche.md``).

    :param model: a :class:`~avalanche.models.MultiTaskModule` with
        ``MultiHeadClassifier`` heads (e.g. ``MTSimpleMLP``), or a
        :class:`~avalanche_ctr.hat.hat_net.HATNet`.
    :param optimizer: optimizer whose first parameter group's hyper-parameters are
        used; it is pointed at each task's trainable parameters.
    :param criterion: loss function.
    :param s_max: HAT's largest mask scale ``s_max`` (Eq. 3), reached at the end of every
        training epoch (the test-time masks are binary, so it does not change trained
        tasks).
    :param mask_reg: weight ``c`` of the mask regulariser (Eq. 5; the official code's
        ``lamb``).
    :param thres_cosh: clamp of ``s e`` in the gradient compensation (Sec. 2.5).
    :param thres_emb: clamp of the mask embeddings (Sec. 2.5).
    :param hat_lr: learning rate of the mask embeddings, in their own parameter group
        (``None``: the optimizer's).
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
        model: nn.Module,
        optimizer: Optimizer,
        criterion: nn.Module = CrossEntropyLoss(),
        s_max: float = 400.0,
        mask_reg: float = 0.75,
        thres_cosh: float = 50.0,
        thres_emb: float = 6.0,
        hat_lr: float | None = 0.05,
        train_mb_size: int = 32,
        train_epochs: int = 1,
        eval_mb_size: int | None = None,
        device: str = "cpu",
        plugins: Sequence[BasePlugin] | None = None,
        evaluator: EvaluationPlugin | Callable[[], EvaluationPlugin] = default_evaluator,
        eval_every: int = -1,
        **base_kwargs,
    ) -> None:
        if not s_max > 0:
            raise ValueError(f"s_max must be positive, got {s_max}")
        model = convert_to_hat(model, s_max=s_max)
        model.s_max = model.s = float(s_max)
        self.hat_plugin = HATPlugin(
            mask_reg=mask_reg, thres_cosh=thres_cosh, thres_emb=thres_emb, hat_lr=hat_lr
        )
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=[*(plugins or []), self.hat_plugin],
            evaluator=evaluator,
            eval_every=eval_every,
            **base_kwargs,
        )
