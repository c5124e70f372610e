"""Mixed-precision training for any strategy: ``--precision fp32|bf16|fp16``.

:class:`MixedPrecision` runs the strategy's forward pass (training and evaluation) under
``torch.autocast`` with the chosen half-precision type and hands the loss back in
float32. Parameters, optimizer states, scores, masks and every frozen copy stay in
float32, so what the methods keep exact stays exact: a supermask is chosen on float32
scores, exclusive weights and HAT's frozen entries are restored in float32 after each
step, and a finished task's outputs do not change while later tasks train (tested with
bf16 on the CPU).

float16 needs loss scaling: its gradients underflow otherwise. The loss is multiplied
by a :class:`torch.amp.GradScaler`'s scale *after* every plugin has added its terms
(EWC's penalty, CTR's mask regulariser, ... are added in ``before_backward``), and the
gradients are unscaled right after the backward pass, *before* any plugin reads them
(ExSSNeT's and HAT's gradient masks, HAT's compensation, gradient averaging across
processes). Avalanche 0.6 has no hook between the last ``before_backward`` and the
backward pass, nor between the backward pass and the first ``after_backward``, so the
plugin wraps the strategy's own ``forward`` and ``backward`` methods on the instance
(once, at the strategy's first experience: a strategy built with the plugin keeps it).
A step whose unscaled gradients are not finite is skipped, as ``GradScaler.step`` would
skip it: every gradient is set to ``None``, which every PyTorch optimizer treats as "no
update" (no momentum or weight decay either), and the scale is lowered.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from avalanche.core import SupervisedPlugin

from avalanche_ctr.experiments.errors import UsageError

__all__ = ["PRECISIONS", "MixedPrecision", "autocast_dtype"]

PRECISIONS = ("fp32", "bf16", "fp16")
"""The values of ``--precision``."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast type of ``precision`` (``None`` for fp32); :class:`UsageError` for an
    unknown name."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return _DTYPES.get(precision)


class MixedPrecision(SupervisedPlugin, supports_distributed=True):
    """Autocast the forward pass; for fp16, scale the loss and skip overflowing steps.

    :param precision: ``"bf16"`` or ``"fp16"`` (``"fp32"`` is accepted and does nothing).
    :param init_scale: fp16's initial loss scale (PyTorch's default, ``2**16``).

    ``skipped_steps`` counts the fp16 steps skipped for non-finite gradients.
    """

    def __init__(self, precision: str = "bf16", *, init_scale: float = 2.0**16) -> None:
        super().__init__()
        self.precision = precision
        self.dtype = autocast_dtype(precision)
        self.init_scale = float(init_scale)
        self.scaler: torch.amp.GradScaler | None = None
        self.skipped_steps = 0
        self._scaler_state: dict[str, Any] | None = None

    def _attach(self, strategy) -> None:
        if self.dtype is None or "forward" in vars(strategy):
            return
        device_type = torch.device(strategy.device).type
        if self.dtype is torch.float16:
            self.scaler = torch.amp.GradScaler(device_type, init_scale=self.init_scale)
            if self._scaler_state is not None:
                self.scaler.load_state_dict(self._scaler_state)
        forward, backward = strategy.forward, strategy.backward
        dtype = self.dtype

        def autocast_forward(self_strategy):
            with torch.autocast(device_type, dtype=dtype):
                output = forward()
            return output.float() if torch.is_tensor(output) else output

        strategy.forward = types.MethodType(autocast_forward, strategy)
        if self.scaler is not None:
            strategy.backward = types.MethodType(
                lambda s: self._scaled_backward(s, backward), strategy
            )

    def _scaled_backward(self, strategy, backward) -> None:
        scaler = self.scaler
        loss = strategy.loss
        strategy.loss = scaler.scale(loss)
        try:
            backward()
        finally:
            strategy.loss = loss
        scaler.unscale_(strategy.optimizer)
        grads = [p.grad for g in strategy.optimizer.param_groups for p in g["params"]]
        grads = [g for g in grads if g is not None]
        if grads and not bool(torch.isfinite(torch.stack([g.norm() for g in grads])).all()):
            for group in strategy.optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None
            self.skipped_steps += 1

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._attach(strategy)

    def before_eval_exp(self, strategy, **kwargs) -> None:
        self._attach(strategy)

    def after_update(self, strategy, **kwargs) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The plugin's state as plain values (fp16's scaler; nothing else changes)."""
        scaler = None if self.scaler is None else self.scaler.state_dict()
        return {"skipped_steps": self.skipped_steps, "scaler": scaler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = int(state["skipped_steps"])
        self._scaler_state = state["scaler"]
        if self.scaler is not None and self._scaler_state is not None:
            self.scaler.load_state_dict(self._scaler_state)
