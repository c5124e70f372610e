"""Exclusive supermask subnetwork training (ExSSNeT, Yadav & Bansal, ACL Findings
2023, Sec. 3.2).

After the mask ``M_t`` of task ``t`` is learned, ExSSNeT trains the shared
weights, but only those in ``M_t`` that no earlier task's mask uses:

    ∇W ← ∇W ⊙ (M_t ∧ ¬ ∪_{i<t} M_i)

so every earlier task's subnetwork, and hence its output, stays exactly as it
was. SSNeT, the paper's non-exclusive ablation, trains every weight of ``M_t``.

Masking the gradient is not enough with every optimizer (SGD's weight decay
and AdamW's decoupled decay move weights whose gradient is zero), so the
frozen entries are also restored after each step
(:class:`~avalanche_ctr.masking.PartialFreeze`).
"""

from __future__ import annotations

from torch import Tensor

from avalanche_ctr.exssnet.supermask_net import SupermaskNet
from avalanche_ctr.masking import PartialFreeze

__all__ = ["free_weights", "exclusive_update"]


def free_weights(current: Tensor, used: Tensor, *, exclusive: bool = True) -> Tensor:
    """Weights task ``t`` may update: ``M_t ∧ ¬ ∪_{i<t} M_i`` (Sec. 3.2), or ``M_t``
    for SSNeT (``exclusive=False``)."""
    return current & ~used if exclusive else current.clone()


def exclusive_update(model: SupermaskNet, *, exclusive: bool = True) -> PartialFreeze:
    """The weight-phase update rule of the training task, whose mask must be fixed:
    only its free weights may change. A task trained again (a repeated task label)
    may change the weights of its mask that no *other* task uses.

    :param model: the supermask network.
    :param exclusive: ``True`` for ExSSNeT, ``False`` for SSNeT.
    """
    layers = model.supermask_layers
    used_by_others = model.used_masks(exclude=model.training_task)
    return PartialFreeze(
        [
            (layer.weight, free_weights(layer.current_mask(), used, exclusive=exclusive))
            for layer, used in zip(layers, used_by_others, strict=True)
        ]
    )
