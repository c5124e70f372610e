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
from torch.autograd.function import once_differentiable

__all__ = ["squash", "squash_backward", "squash_factor", "TaskCapsuleLayer"]


def squash_factor(x: Tensor, dim: int = -1, eps: float = 1e-16) -> tuple[Tensor, Tensor]:
    """The squared norm ``q = |s|² + eps`` of ``x`` over ``dim`` and the factor
    ``√q / (1 + q)`` that :func:`squash` multiplies ``s`` by (both keep ``dim``)."""
    squared = (x * x).sum(dim=dim, keepdim=True) + eps
    return squared, squared.sqrt() / (1 + squared)


def squash(x: Tensor, dim: int = -1, eps: float = 1e-16) -> Tensor:
    """Capsule non-linearity ``v = |s|² / (1 + |s|²) · s / |s|`` (Sabour et al. 2017, Eq. 1),
    computed as ``s · √q / (1 + q)`` with ``q = |s|² + eps``."""
    return x * squash_factor(x, dim, eps)[1]


def squash_backward(grad: Tensor, x: Tensor, dim: int, eps: float = 1e-16) -> Tensor:
    """The gradient of :func:`squash` at ``x`` for the output gradient ``grad``:
    ``f ∂v + (1 - q) / (√q (1 + q)²) · (s · ∂v) s`` with ``f = √q / (1 + q)``."""
    squared, factor = squash_factor(x, dim, eps)
    along = (x * grad).sum(dim=dim, keepdim=True)
    radial = (1 - squared) / (squared.sqrt() * (1 + squared) ** 2) * along
    return factor * grad + radial * x


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

        The capsules run together (:class:`_CapsuleNetworks`): one matrix product for all
        first layers and one batched product for all second layers, with the tokens as
        the products' last axis, and a weight gradient only for the capsules that train.
        The same arithmetic as calling each capsule in turn.
        """
        capsules = self.capsules[:n_tasks]
        trained = tuple(any(p.requires_grad for p in c.parameters()) for c in capsules)
        out = _CapsuleNetworks.apply(
            h.reshape(-1, self.hidden_size),
            torch.cat([c.fc1.weight for c in capsules]),
            torch.cat([c.fc1.bias for c in capsules]),
            torch.stack([c.fc2.weight for c in capsules]),
            torch.stack([c.fc2.bias for c in capsules]),
            trained,
        )
        return out.permute(2, 0, 1).unflatten(0, h.shape[:-1])


class _CapsuleNetworks(torch.autograd.Function):
    """Every capsule's ``squash(fc2(gelu(fc1(h))))`` for tokens ``h`` (T, hidden) →
    (n, dim, T), squashed over ``dim`` (:func:`squash`), from the capsules' first-layer
    weights stacked (n · width, hidden) and biases (n · width), second-layer weights
    (n, dim, width) and biases (n, dim).

    The tokens are the products' last axis, so each product is laid out as it is fastest
    (an output of T columns), every tensor stays contiguous (no permuted copies, and
    GELU's backward pass gets a contiguous gradient), and the backward pass computes
    weight gradients only for the capsules that ``trained`` marks (zeros for the others,
    whose parameters take no gradient): the frozen capsules get their input gradient
    only. The squash is part of the function, with its gradient written out
    (:func:`squash_backward`), so its elementwise steps keep no tensors of their own for
    the backward pass."""

    @staticmethod
    def forward(
        ctx, h: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, trained: tuple[bool, ...]
    ) -> Tensor:
        n, _, width = w2.shape
        pre = torch.addmm(b1[:, None], w1, h.t())
        hidden = F.gelu(pre).view(n, width, -1)
        out = torch.baddbmm(b2[:, :, None], w2, hidden)
        ctx.trained = trained
        ctx.save_for_backward(h, w1, w2, pre, hidden, out)
        return out * squash_factor(out, dim=1)[1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        h, w1, w2, pre, hidden, out = ctx.saved_tensors
        n, _, width = w2.shape
        dtype = pre.dtype  # the forward's (under autocast, the products' lower precision)
        grad = squash_backward(grad.to(dtype), out, dim=1).contiguous()
        grad_hidden = torch.bmm(w2.to(dtype).transpose(1, 2), grad)
        grad_pre = torch.ops.aten.gelu_backward(grad_hidden.view(pre.shape), pre)
        grad_h = grad_w1 = grad_b1 = grad_w2 = grad_b2 = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.mm(grad_pre.t(), w1.to(dtype)).to(h.dtype)
        if any(ctx.needs_input_grad[1:5]):
            grad_w1, grad_b1 = torch.zeros_like(w1), w1.new_zeros(pre.shape[0])
            grad_w2, grad_b2 = torch.zeros_like(w2), w2.new_zeros(w2.shape[:2])
            task = 0
            for learns, run in groupby(ctx.trained):
                end = task + len(list(run))
                if learns:
                    rows = slice(task * width, end * width)
                    grad_w1[rows] = torch.mm(grad_pre[rows], h.to(dtype))
                    grad_b1[rows] = grad_pre[rows].sum(dim=1)
                    grad_w2[task:end] = torch.bmm(grad[task:end], hidden[task:end].transpose(1, 2))
                    grad_b2[task:end] = grad[task:end].sum(dim=2)
                task = end
        return grad_h, grad_w1, grad_b1, grad_w2, grad_b2, None
