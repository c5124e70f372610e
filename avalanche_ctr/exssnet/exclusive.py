"""Exclusive supermask subnetwork training (ExSSNeT, Yadav & Bansal, ACL Findings
2023, Sec. 3.2).

After the mask ``M_t`` of task ``t`` is learned, ExSSNeT trains the shared
weights, but only those in ``M_t`` that no earlier task's mask uses:

    ∇W ← ∇W ⊙ (M_t ∧ ¬ ∪_{i<t} M_i)

so every earlier task's subnetwork, and hence its output, stays exactly as it
was. SSNeT, the paper's non-exclusive ablation, trains every weight of ``M_t``.

Masking the gradient is not enough with every optimizer: SGD's weight decay and
AdamW's decoupled decay move weights whose gradient is zero. The frozen entries
are therefore also restored after each optimizer step, which makes the
guarantee hold for any optimizer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avalanche_ctr.exssnet.model import SupermaskNet

__all__ = ["ExclusiveWeightUpdate", "free_weights"]


def free_weights(current: Tensor, used: Tensor, *, exclusive: bool = True) -> Tensor:
    """Weights task ``t`` may update: ``M_t ∧ ¬ ∪_{i<t} M_i`` (Sec. 3.2), or ``M_t``
    for SSNeT (``exclusive=False``)."""
    return current & ~used if exclusive else current.clone()


class ExclusiveWeightUpdate:
    """Gradient masking and frozen-weight restoration for the weight phase.

    :param model: the supermask network, with the training task's mask fixed.
    :param exclusive: ``True`` for ExSSNeT, ``False`` for SSNeT.
    """

    def __init__(self, model: SupermaskNet, *, exclusive: bool = True) -> None:
        self.layers = model.supermask_layers
        self.free = [
            free_weights(layer.current_mask(), used, exclusive=exclusive)
            for layer, used in zip(self.layers, model.used_masks(), strict=True)
        ]
        self._frozen_part = [
            layer.weight.detach() * ~free
            for layer, free in zip(self.layers, self.free, strict=True)
        ]

    def mask_gradients(self) -> None:
        """Zero the gradient of every weight outside the free set (``after_backward``)."""
        for layer, free in zip(self.layers, self.free, strict=True):
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(free)

    @torch.no_grad()
    def restore_frozen(self) -> None:
        """Put back every weight outside the free set (``after_update``)."""
        for layer, free, frozen in zip(self.layers, self.free, self._frozen_part, strict=True):
            layer.weight.mul_(free).add_(frozen)
