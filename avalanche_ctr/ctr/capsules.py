"""Task capsule layer (TK-Layer) of CTR's Knowledge Sharing Module (CTR, Ke et al.,
NeurIPS 2021, Sec. 3.2.1).

One capsule per task, each a small 2-layer fully connected network applied to
every token; capsules are added as tasks arrive (the official code allocates
all of them up front). Capsule vectors are squashed (Sabour et al. 2017, Eq. 1)
over their own dimension.

Departures from the official code:

* the official capsule is ``fc2(fc1(x))`` without a non-linearity, i.e. one
  linear map; we put a GELU between the two layers, which makes it the 2-layer
  network the paper describes;
* the official code concatenates all tasks' capsules into one axis and
  squashes across tasks, mixing the task and capsule axes (a task's capsule
  output then depends on other tasks' capsules); we squash each task's
  capsule on its own, so a task's capsule never changes after it is frozen.
"""

from __future__ import annotations

from itertools import groupby

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["squash", "TaskCapsuleLayer"]


def squash(x: Tensor, dim: int = -1, eps: float = 1e-16) -> Tensor:
    """Capsule non-linearity ``v = |s|² / (1 + |s|²) · s / |s|`` (Sabour et al. 2017, Eq. 1)."""
    squared = (x * x).sum(dim=dim, keepdim=True) + eps
    return squared / (1 + squared) * x / torch.sqrt(squared)


class _Capsule(nn.Module):
    def __init__(self, hidden_size: int, capsule_hidden: int, capsule_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, capsule_hidden)
        self.fc2 = nn.Linear(capsule_hidden, capsule_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TaskCapsuleLayer(nn.Module):
    """The TK-Layer: ``p_i = squash(f_i(h))`` for each task ``i``.

    :param hidden_size: width of the transformer layer.
    :param capsule_hidden: width of a capsule's hidden layer.
    :param capsule_dim: dimension of a task capsule.
    """

    def __init__(self, hidden_size: int, capsule_hidden: int, capsule_dim: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.capsule_hidden = capsule_hidden
        self.capsule_dim = capsule_dim
        self.capsules = nn.ModuleList()

    def add_task(self, device: torch.device) -> nn.Module:
        capsule = _Capsule(self.hidden_size, self.capsule_hidden, self.capsule_dim).to(device)
        self.capsules.append(capsule)
        return capsule

    def forward(self, h: Tensor, n_tasks: int) -> Tensor:
        """Capsules of the first ``n_tasks`` tasks: ``(batch, length, n_tasks, capsule_dim)``.

        The capsules run together: one batched product for all second layers, and for
        the first layers one matrix product per run of consecutive capsules that are all
        trained or all frozen, so no gradient is computed for a frozen capsule's weights
        (its input still gets one). The same arithmetic as calling each capsule in turn,
        in a few operations instead of ``2 · n_tasks``.
        """
        capsules = self.capsules[:n_tasks]
        parts = []
        for _, run in groupby(capsules, key=lambda c: c.fc1.weight.requires_grad):
            run = list(run)
            weight = torch.cat([c.fc1.weight for c in run])
            parts.append(F.linear(h, weight, torch.cat([c.fc1.bias for c in run])))
        hidden = F.gelu(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])
        hidden = hidden.unflatten(-1, (n_tasks, self.capsule_hidden))
        w2 = torch.stack([c.fc2.weight for c in capsules])
        b2 = torch.stack([c.fc2.bias for c in capsules])
        return squash(torch.einsum("blnh,ndh->blnd", hidden, w2) + b2)
