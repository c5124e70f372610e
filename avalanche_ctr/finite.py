"""Stopping training at the first loss or gradient that is not finite.

A NaN or an infinity in a training step (a NaN in the inputs, an overflow) makes the
gradients of every parameter it reaches NaN, and an optimizer step then writes NaN
into the weights, including those that finished tasks share with the task in
training. :func:`check_finite_step` stops training before that step with a
:class:`NonFiniteError` naming the experience and the iteration, so that every
finished task is as it was and a run resumed from its last checkpoint (saved after
a finished experience) loses nothing. ExSSNeT's, SSNeT's, SupSup's and CTR's
plugins call it after every backward pass.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import get_total_norm

__all__ = ["NonFiniteError", "check_finite_step"]


class NonFiniteError(RuntimeError):
    """Training met a loss or a gradient that is NaN or infinite and stopped before the
    optimizer step; the message names the experience, the iteration and what to check."""


def check_finite_step(strategy) -> None:
    """Raise :class:`NonFiniteError` when the loss just back-propagated
    (``strategy.loss``) or the gradient of a parameter the optimizer updates is NaN or
    infinite. Call it after the backward pass and before the optimizer step (a
    plugin's ``after_backward``): no parameter has changed yet.

    One reduction per gradient and one copy to the host per step: a gradient is
    finite exactly when its smallest and largest entries are (they cannot overflow, as
    a sum or a 2-norm can). On the CPU each gradient's ``aminmax`` is the cheapest such
    reduction; elsewhere the ∞-norm of :func:`torch.nn.utils.get_total_norm`, which runs
    as a few fused multi-tensor kernels on CUDA (``benchmarks/finite_check_cost.py``).
    Under ``torchrun`` the gradients are checked after they are averaged, so every rank
    sees the same NaN and stops at the same iteration.

    :raises NonFiniteError: naming the experience, its task labels, the epoch and
        iteration (both counted from 0), and the parameters whose gradient is not finite.
    """
    loss = strategy.loss.detach()
    params = [
        p
        for group in strategy.optimizer.param_groups
        for p in group["params"]
        if p.grad is not None
    ]
    grads = [p.grad for p in params]
    fused = any(g.device.type != "cpu" for g in grads)
    if not _all_finite(loss, grads, fused=fused):
        raise NonFiniteError(_message(strategy, loss, params))


def _all_finite(loss: torch.Tensor, grads: list[torch.Tensor], *, fused: bool) -> bool:
    """Whether every entry of ``loss`` (Avalanche's is of shape ``(1,)``) and of ``grads``
    is finite: from each gradient's ``aminmax``, or with ``fused`` from the ∞-norm of
    ``get_total_norm``; one copy to the host."""
    grads = [g for g in grads if g.numel()]  # neither reduction takes an empty tensor
    values = list(loss.reshape(-1).unbind())
    if fused and grads:
        values.append(get_total_norm(grads, norm_type=math.inf))
    else:
        values += [v for g in grads for v in torch.aminmax(g)]
    return all(map(math.isfinite, torch.stack(values).tolist()))


def _message(strategy, loss: torch.Tensor, params: list[torch.Tensor]) -> str:
    names = {id(p): name for name, p in strategy.model.named_parameters()}
    bad = [names.get(id(p), "(unnamed)") for p in params if not torch.isfinite(p.grad).all()]
    problems = []
    if not torch.isfinite(loss).all():
        problems.append(f"the loss is {loss.float().sum().item()}")
    if len(bad) == 1:
        problems.append(f"the gradient of {bad[0]} is not finite")
    elif bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        problems.append(f"the gradients of {len(bad)} parameters are not finite ({shown})")
    experience = strategy.experience
    labels = sorted(int(t) for t in experience.task_labels)
    tasks = f"task {labels[0]}" if len(labels) == 1 else f"tasks {labels}"
    clock = strategy.clock
    return (
        f"{' and '.join(problems)} in training experience {experience.current_experience} "
        f"({tasks}), epoch {clock.train_exp_epochs}, iteration {clock.train_epoch_iterations} "
        "(counted from 0); training stopped before the optimizer step, so no weight changed "
        "in this step and every finished task is as it was. Look for NaN or infinite "
        "values in this experience's inputs, or lower the learning rate"
    )
