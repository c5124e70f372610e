"""Task Specific Module of a CTR CL-plugin: a bottleneck with HAT task masks
(CTR, Ke et al., NeurIPS 2021, Sec. 3.3; HAT, Serra et al., ICML 2018, Sec. 2).

The masks themselves (:class:`~avalanche_ctr.hat.masks.HATMask`: embeddings, annealing,
cumulative mask, compensation, clamping, and the departures from HAT: binary test-time
masks, exact protection) are HAT's, shared with :mod:`avalanche_ctr.hat`. Here the
protection is exact for the bottleneck's known wiring: a weight is frozen when the unit
it feeds and the unit it reads are both used by another task.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from avalanche_ctr.hat.masks import HATMask

__all__ = ["TaskSpecificModule"]


class TaskSpecificModule(nn.Module):
    """Fully connected bottleneck ``d → b → d`` whose units carry HAT masks (CTR Sec. 3.3).

    ``TSM(h) = m2_t ⊙ GELU(W2 (m1_t ⊙ GELU(W1 h + b1)) + b2)``

    :param hidden_size: width ``d`` of the transformer layer.
    :param bottleneck: number of bottleneck units ``b``.
    :param mask_init_mean: mean of the initial mask embeddings (:class:`HATMask`).
    """

    def __init__(self, hidden_size: int, bottleneck: int, mask_init_mean: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, bottleneck)
        self.fc2 = nn.Linear(bottleneck, hidden_size)
        self.mask1 = HATMask(bottleneck, mask_init_mean)
        self.mask2 = HATMask(hidden_size, mask_init_mean)

    @property
    def masks(self) -> tuple[HATMask, HATMask]:
        return self.mask1, self.mask2

    def add_task(self) -> list[nn.Parameter]:
        return [self.mask1.add_task(), self.mask2.add_task()]

    def forward(self, h: Tensor, task: int, s: float | None) -> Tensor:
        h = F.gelu(self.fc1(h)) * self.mask1.mask(task, s)
        return F.gelu(self.fc2(h)) * self.mask2.mask(task, s)

    def free_entries(self) -> list[tuple[Tensor, Tensor]]:
        """HAT Eq. 2 made exact: ``(parameter, free)`` pairs where a weight is free
        unless both its units are used by another task (``reference``; ``fc1``'s input
        is not masked, so ``fc1`` rows follow their output unit alone)."""
        used1 = self.mask1.reference_used()
        used2 = self.mask2.reference_used()
        return [
            (self.fc1.weight, ~used1[:, None]),
            (self.fc1.bias, ~used1),
            (self.fc2.weight, ~(used2[:, None] & used1[None, :])),
            (self.fc2.bias, ~used2),
        ]
