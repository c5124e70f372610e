"""Multi-task learning (MTL) in an experience-by-experience loop: the upper bound of the
CTR paper's tables (Ke et al., NeurIPS 2021, Sec. 4, "MTL"), all tasks trained jointly
with their heads."""

from __future__ import annotations

from avalanche.training import JointTraining
from avalanche.training.templates import SupervisedTemplate

from avalanche_ctr.experiments.errors import UsageError

__all__ = ["MultiTaskJoint"]


class MultiTaskJoint(JointTraining):
    """Avalanche's ``JointTraining`` for loops that hand the stream over one experience at
    a time (``avalanche-ctr compare``): the experiences are collected, and when the
    ``n_tasks``-th arrives the model is trained once on all of them together (each sample
    with its task label, so each task trains its own head), for ``train_epochs`` epochs.
    Before that, :meth:`train` trains nothing, so the accuracy of earlier steps is that of
    the untrained model and only the final evaluation is the MTL figure; forgetting and
    backward transfer mean nothing for it.

    The learning rate is its own: on the text benchmarks, Adam at 0.01 (CTR's recipe) makes
    one shared set of adapters without masks, trained on every task at once, settle on one
    class per task, while 0.001 learns (``benchmarks/headroom_lr_probe.py``, issue 25).

    :param n_tasks: the number of experiences of the stream.
    :param base_kwargs: ``JointTraining``'s arguments (model, optimizer, ...).
    """

    def __init__(self, *, n_tasks: int, **base_kwargs) -> None:
        super().__init__(**base_kwargs)
        if n_tasks < 1:
            raise ValueError(f"n_tasks must be at least 1, got {n_tasks}")
        self.n_tasks = n_tasks
        self._pending: list = []

    def train(self, experiences, eval_streams=None, **kwargs):
        """Collect ``experiences``; train on all collected ones once there are ``n_tasks``.

        :raises UsageError: when trained again after the joint training (a loop that
            resumed from a checkpoint taken between experiences has lost the collected
            ones and must start the run again).
        """
        batch = list(experiences) if isinstance(experiences, (list, tuple)) else [experiences]
        if self._is_fitted:
            raise UsageError(
                "MultiTaskJoint trains once, on all tasks together, at the last experience; "
                "it was trained already. Start a new run to train it again"
            )
        self._pending += batch
        if len(self._pending) < self.n_tasks:
            return {}
        return super().train(self._pending, eval_streams=eval_streams or [], **kwargs)

    def model_adaptation(self, model=None):
        """Training adapts the model to every collected experience (``JointTraining``);
        evaluation to the evaluated one, as every strategy (``JointTraining`` would adapt
        to the training experiences, so an untrained task had no head to be scored by)."""
        if self.is_training:
            return super().model_adaptation(model)
        return SupervisedTemplate.model_adaptation(self, model)
