"""Task-label mechanics shared by the plugins of both methods.

* :func:`single_task_label` and :func:`check_head_fits` -- what a training
  experience must look like;
* :class:`TaskIncrementalPlugin` -- the evaluation side that both
  :class:`~avalanche_ctr.exssnet.lifecycle.ExSSNeTPlugin` and
  :class:`~avalanche_ctr.ctr.lifecycle.CTRPlugin` share, so that Avalanche's own
  loops work unchanged: ``strategy.eval(benchmark.test_stream)`` may include tasks
  not trained yet, and evaluation may run during training (``eval_every``,
  ``EarlyStoppingPlugin``), yet evaluating changes nothing that training uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import MultiHeadClassifier
from torch import nn

from avalanche_ctr import random_state
from avalanche_ctr.compat import EvalAdaptation

__all__ = [
    "single_task_label",
    "check_head_fits",
    "untrained_head_",
    "TaskIncrementalPlugin",
]


def single_task_label(experience, method: str) -> int:
    """The one task label of ``experience``; ``ValueError`` naming ``method`` otherwise."""
    labels = list(experience.task_labels)
    if len(labels) != 1:
        raise ValueError(
            f"experience {experience.current_experience} has task labels {labels}; {method} "
            "needs exactly one task label per experience (a task-incremental stream)"
        )
    return int(labels[0])


def check_head_fits(heads: list[MultiHeadClassifier], task: int, experience, method: str) -> None:
    """Refuse to continue a trained task on an experience with more classes than the
    task's head: growing the head would change the task's earlier predictions.

    :raises ValueError: naming the task, the head size and the classes.
    """
    needed = max(experience.classes_in_this_experience) + 1
    for module in heads:
        if str(task) not in module.classifiers:
            continue
        size = module.classifiers[str(task)].classifier.out_features
        if needed > size:
            raise ValueError(
                f"experience {experience.current_experience} repeats task {task} with classes "
                f"up to {needed - 1}, but {method} learned task {task} with a head of {size} "
                f"classes; a repeated task label must keep its classes (0..{size - 1}). Give "
                "the new classes a new task label"
            )


@torch.no_grad()
def untrained_head_(head: nn.Module, task: int) -> nn.Module:
    """Re-initialise a head created for a task that was never trained, from a
    generator seeded by the task label only: PyTorch's default ``Linear``
    initialisation (Kaiming-uniform weights, uniform bias), drawn without touching
    the global random streams. The untrained prediction of a task is thus the same
    in every run and at every evaluation."""
    generator = torch.Generator().manual_seed(int(task))
    for module in head.modules():
        if isinstance(module, nn.Linear):
            weight = torch.empty(module.weight.shape)
            nn.init.kaiming_uniform_(weight, a=5**0.5, generator=generator)
            module.weight.copy_(weight)
            if module.bias is not None:
                bound = 1 / module.in_features**0.5
                bias = torch.empty(module.bias.shape).uniform_(-bound, bound, generator=generator)
                module.bias.copy_(bias)
    return head


@dataclass
class _EvalSnapshot:
    rng: dict[str, Any]
    adaptation: EvalAdaptation
    model_state: Any = None
    fresh: set[int] = field(default_factory=set)


class TaskIncrementalPlugin(SupervisedPlugin):
    """Evaluation that leaves training exactly as it was.

    Avalanche's evaluation adapts the model to every evaluated experience: it
    creates a randomly initialised head for a task label it has not seen
    (:class:`~avalanche_ctr.compat.EvalAdaptation`), and its data loaders draw from
    the global random stream. Both would make a run that evaluates future tasks
    (the canonical ``strategy.eval(benchmark.test_stream)``, or Avalanche's
    forward-transfer metric) train differently from one that does not. Around every
    ``strategy.eval`` call this plugin:

    * saves and restores the random-number states of PyTorch (CPU and CUDA), NumPy
      and Python (:mod:`avalanche_ctr.random_state`);
    * gives each head Avalanche creates for an untrained task a deterministic
      initialisation (:func:`untrained_head_`) and removes it again afterwards,
      with the ``max_class_label`` Avalanche raised;
    * saves and restores whatever the model declares transient
      (``eval_state`` / ``load_eval_state``: mask caches, selected task, last
      routing gates).

    Avalanche restores the train/eval mode of every module itself, and evaluation
    touches neither the optimizer nor the plugins' training state.
    """

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: _EvalSnapshot | None = None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps between experiences: nothing. The snapshot lives
        during one evaluation; ExSSNeT's and CTR's plugins keep what they learn in the
        model (masks, weights, capsules), and their other attributes are configuration
        or describe the experience in progress (``last_kkt``, ``last_inference``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (:meth:`state_dict`)."""

    def before_eval(self, strategy, **kwargs) -> None:
        model = strategy.model
        save = getattr(model, "eval_state", None)
        self._snapshot = _EvalSnapshot(
            rng=random_state.capture(),
            adaptation=EvalAdaptation(model),
            model_state=save() if save is not None else None,
        )

    def before_eval_exp(self, strategy, **kwargs) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            return
        for task, head in snapshot.adaptation.new_heads(strategy.model):
            if id(head) not in snapshot.fresh:
                untrained_head_(head, int(task))
                snapshot.fresh.add(id(head))

    def after_eval(self, strategy, **kwargs) -> None:
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            return
        model = strategy.model
        snapshot.adaptation.undo(model)
        load = getattr(model, "load_eval_state", None)
        if load is not None:
            load(snapshot.model_state)
        random_state.restore(snapshot.rng)
