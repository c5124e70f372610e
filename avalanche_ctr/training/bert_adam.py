"""BERT's Adam as the official CTR code trains with it (``--optimizer bertadam``).

PyContinual (Ke et al., NeurIPS 2021; ``src/approaches/base/my_optimization.py`` and
``src/approaches/classification/bert_adapter_capsule_mask.py``, main @ 25a859b) trains
CTR and its baselines with ``BertAdam`` (Devlin et al. 2019): Adam without bias
correction, epsilon 1e-6, decoupled weight decay 0.01 on every parameter whose name
holds no ``bias`` or ``LayerNorm``, each tensor's gradient clipped to norm 1.0 on its
own, and ``warmup_linear`` over the task's steps *inside* the optimizer. The training
loop sets the groups' learning rates by the same schedule before every step, so the
official rate is ``lr · warmup_linear(p)²``. With ``--warmup`` (our outer schedule,
:class:`~avalanche_ctr.ctr.lifecycle.CTRPlugin`,
:class:`~avalanche_ctr.ctr.lifecycle.WarmupLinearPlugin`) this optimizer gives the
same product.

The official code builds a new optimizer for every task; :class:`BertAdamSchedule`
does the equivalent in an Avalanche loop: it clears the optimizer's state (moments and
step counts) when an experience starts and sets the schedule's length to that
experience's steps.

Departure: the official step adds the weight decay after HAT's gradient mask, so it
also shrinks the weights HAT protects. Here the protected entries are put back after
every step (:class:`~avalanche_ctr.masking.PartialFreeze`), so they stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn
from torch.optim import Optimizer

from avalanche_ctr.ctr.lifecycle import warmup_linear

__all__ = ["BertAdam", "BertAdamSchedule", "official_no_decay"]

_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
"""The official code's exemption from weight decay, by parameter name."""


def official_no_decay(model: nn.Module) -> list[Tensor]:
    """The parameters of ``model`` the official code leaves out of weight decay: those
    whose name holds ``bias``, ``LayerNorm.bias`` or ``LayerNorm.weight``."""
    return [p for name, p in model.named_parameters() if any(n in name for n in _NO_DECAY)]


class BertAdam(Optimizer):
    """Adam without bias correction, with decoupled weight decay, per-tensor gradient
    clipping and BERT's warm-up schedule driven by each parameter's step count.

    For a gradient ``g`` (clipped to norm ``max_grad_norm``, tensor by tensor):
    ``m ← b1·m + (1−b1)·g``, ``v ← b2·v + (1−b2)·g²``,
    ``p ← p − lr_t · (m / (√v + eps) + weight_decay · p)`` with
    ``lr_t = lr · warmup_linear(step / t_total, warmup)`` when the group has a
    ``t_total`` (set by :class:`BertAdamSchedule`), else ``lr``.

    :param params: parameters or parameter groups.
    :param lr: learning rate (the official recipe: 5e-5).
    :param warmup: warm-up fraction of the internal schedule, in ``[0, 1)``; ``None``
        keeps the rate constant.
    :param b1: first-moment decay.
    :param b2: second-moment decay.
    :param eps: added to ``√v``.
    :param weight_decay: decoupled weight decay.
    :param max_grad_norm: each tensor's gradient is clipped to this norm; ``None`` or
        a value ``<= 0`` turns clipping off.
    :param no_decay: parameters without weight decay (the official choice:
        :func:`official_no_decay`).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        *,
        warmup: float | None = None,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        max_grad_norm: float | None = 1.0,
        no_decay: Iterable[Tensor] = (),
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if warmup is not None and not 0 <= warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
        for name, beta in (("b1", b1), ("b2", b2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"eps and weight_decay must be >= 0, got {eps} and {weight_decay}")
        defaults = dict(
            lr=lr,
            warmup=warmup,
            t_total=None,
            b1=b1,
            b2=b2,
            eps=eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
        )
        super().__init__(params, defaults)
        self.no_decay = {id(p) for p in no_decay}

    def scheduled_lr(self, group: dict[str, Any], step: int) -> float:
        """The group's rate at a parameter's ``step`` (the internal schedule)."""
        if group["warmup"] is None or not group["t_total"]:
            return group["lr"]
        return group["lr"] * warmup_linear(step / group["t_total"], group["warmup"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            clip = group["max_grad_norm"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if clip is not None and clip > 0:
                    nn.utils.clip_grad_norm_(p, clip)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                m, v = state["next_m"], state["next_v"]
                m.mul_(group["b1"]).add_(p.grad, alpha=1 - group["b1"])
                v.mul_(group["b2"]).addcmul_(p.grad, p.grad, value=1 - group["b2"])
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0 and id(p) not in self.no_decay:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-self.scheduled_lr(group, state["step"]))
                state["step"] += 1
        return loss


class BertAdamSchedule(SupervisedPlugin, supports_distributed=True):
    """What the official code's new ``BertAdam`` per task amounts to in an Avalanche
    loop: when an experience starts, the optimizer's state is cleared (moments and step
    counts start again) and the internal schedule spans the experience's steps
    (``train_epochs × len(dataloader)``)."""

    def before_training_exp(self, strategy, **kwargs) -> None:
        optimizer = strategy.optimizer
        if not isinstance(optimizer, BertAdam):
            raise TypeError(
                f"BertAdamSchedule drives a BertAdam optimizer, got {type(optimizer).__name__}"
            )
        optimizer.state.clear()
        self._set_total(strategy)

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._set_total(strategy)  # a plugin may have rebuilt the parameter groups

    @staticmethod
    def _set_total(strategy) -> None:
        total = strategy.train_epochs * len(strategy.dataloader)
        for group in strategy.optimizer.param_groups:
            group["t_total"] = total

    def state_dict(self) -> dict[str, Any]:
        """It keeps nothing between experiences."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""
