"""Transfer capsule layer and transfer routing of CTR's Knowledge Sharing Module
(CTR, Ke et al., NeurIPS 2021, Sec. 3.2.2).

For the current task ``t`` and each task ``i ≤ t``:

1. pre-route vectors ``û_{j|i} = W_{ij} p_i`` map task capsule ``p_i`` to each
   transfer capsule ``j`` (the prior of dynamic routing);
2. a task-similarity network compares ``û_{·|i}`` with the current task's
   ``û_{·|t}``: convolutions over the tokens (kernel sizes 3, 4, 5), the current
   task's pooled feature added in, ReLU and max-pooling over tokens give
   ``z_i``;
3. a binary gate ``δ_i = GumbelSoftmax(W_d z_i)`` (straight-through, hard)
   decides whether task ``i``'s knowledge is used, and a similarity attention
   ``a_i = W_a z_i`` weights its pre-route vector;
4. the transfer output is ``v_j = Σ_{i≤t} δ_i a_{ij} ⊙ û_{j|i}``, projected to the
   layer width.

Only tasks ``≤ t`` take part: their gates are computed per sample, and the
gates of later tasks are zero by construction.

Departures from the official code, each to keep earlier tasks exactly as they
were and to keep samples independent:

* every routing part (``W_{ij}``, the similarity network, the gate and the
  projection) belongs to the task being learned: a new :class:`TransferRouting`
  is created for each task and frozen after it. The official code shares them
  across tasks, so learning task ``t`` changes how task ``i < t`` routes;
* gates and attentions are computed and applied per sample. The official code
  repeats and reshapes them (``repeat(max_seq_length, 1).view(...)``) so that a
  sample's routing mixes with other samples of the batch;
* padded tokens are excluded: their pre-route vectors are zeroed before the
  similarity convolutions and the max-pooling skips them, so a sample's routing
  does not depend on how much padding it carries;
* the projection of the transfer output starts at zero, so a new task's
  CL-plugin starts as its TSM alone (adapter + HAT) and the transfer path grows
  from there. The official code initialises it at random, which adds noise to
  every layer's TSM input before the routing has learned anything (the same
  reason adapters start near the identity, Houlsby et al. 2019, Sec. 2.1);
* at evaluation the gate is the deterministic ``argmax`` of its logits (no
  Gumbel noise), so a task's outputs do not vary from one evaluation to the next.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TransferRouting", "binary_gate"]


def binary_gate(logits: Tensor, *, training: bool, tau: float = 1.0) -> Tensor:
    """Differentiable binary gate from 2-way logits (``[..., 0]`` = "use").

    Training: straight-through Gumbel-softmax (Jang et al. 2017), hard one-hot
    forward and soft gradient backward. Evaluation: ``argmax``, no noise.
    """
    if training:
        return F.gumbel_softmax(logits, tau=tau, hard=True)[..., 0]
    return (logits.argmax(dim=-1) == 0).to(logits.dtype)


def _masked_max(x: Tensor, keep: Tensor) -> Tensor:
    """Max over the last (token) axis of ``x`` (B, C, L), ignoring tokens where ``keep`` is 0."""
    return x.masked_fill(~keep[:, None, :], float("-inf")).max(dim=-1).values


class TransferRouting(nn.Module):
    """Transfer routing of one task ``t`` over the task capsules ``0 .. t``.

    :param n_sources: ``t + 1``, the tasks taking part.
    :param capsule_dim: dimension of a task capsule.
    :param n_transfer: number of transfer capsules.
    :param hidden_size: width of the transformer layer.
    :param channels: channels of each similarity convolution.
    :param kernel_sizes: token window sizes of the similarity convolutions.
    """

    def __init__(
        self,
        n_sources: int,
        capsule_dim: int,
        n_transfer: int,
        hidden_size: int,
        channels: int = 32,
        kernel_sizes: tuple[int, ...] = (3, 4, 5),
    ) -> None:
        super().__init__()
        self.n_sources = n_sources
        width = n_transfer * capsule_dim
        self.route_weights = nn.Parameter(
            0.1 * torch.randn(n_sources, n_transfer, capsule_dim, capsule_dim)
        )
        self.kernel_sizes = kernel_sizes
        self.convs_current = nn.ModuleList(
            nn.Conv1d(width, channels, k, padding=k // 2) for k in kernel_sizes
        )
        self.convs_source = nn.ModuleList(
            nn.Conv1d(width, channels, k, padding=k // 2) for k in kernel_sizes
        )
        pooled = channels * len(kernel_sizes)
        self.fc_current = nn.Linear(pooled, channels)
        self.gate = nn.Linear(pooled, 2)
        self.attention = nn.Linear(pooled, width)
        self.project = nn.Linear(width, hidden_size)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def pre_route(self, capsules: Tensor) -> Tensor:
        """``û_{j|i} = W_{ij} p_i``: (B, L, n_sources, c) → (B, L, n_sources, n_transfer · c)."""
        priors = torch.einsum("blic,ijdc->blijd", capsules, self.route_weights)
        return priors.flatten(3)

    def _conv_pool(self, convs: nn.ModuleList, x: Tensor, keep: Tensor, extra=None) -> Tensor:
        """ReLU and masked max-pooling of each convolution of ``convs`` over ``x``
        (with ``extra`` added to each), concatenated.

        The convolutions run as one: each kernel of size ``k`` (padding ``k // 2``,
        output cut to the input length) covers tokens ``i - k//2 .. i - k//2 + k - 1``,
        so zero-padding it to the largest size ``K`` at the right offset and
        convolving once with padding ``K // 2`` gives the same outputs. Adding a
        per-channel constant and ReLU commute with the max over tokens, so they are
        applied to the pooled values rather than to every token.
        """
        largest = max(self.kernel_sizes)
        weights = [
            F.pad(conv.weight, (largest // 2 - k // 2, largest - k - largest // 2 + k // 2))
            for conv, k in zip(convs, self.kernel_sizes, strict=True)
        ]
        bias = torch.cat([conv.bias for conv in convs])
        y = F.conv1d(x, torch.cat(weights), bias, padding=largest // 2)[..., : x.shape[-1]]
        pooled = _masked_max(y, keep)
        if extra is not None:
            pooled = pooled + extra.repeat(1, len(convs))
        return F.relu(pooled)

    def forward(self, capsules: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """Route the task capsules of tasks ``0 .. t``.

        :param capsules: (B, L, t + 1, capsule_dim) task capsules.
        :param keep: (B, L) boolean, ``False`` at padded tokens.
        :return: the transfer output (B, L, hidden_size) and the gates (B, t + 1).
        """
        batch, length, n_sources, _ = capsules.shape
        priors = self.pre_route(capsules) * keep[:, :, None, None]
        current = priors[:, :, -1].transpose(1, 2)
        current = self.fc_current(self._conv_pool(self.convs_current, current, keep))
        sources = priors.permute(0, 2, 3, 1).reshape(batch * n_sources, -1, length)
        keep_sources = keep.repeat_interleave(n_sources, dim=0)
        z = self._conv_pool(
            self.convs_source,
            sources,
            keep_sources,
            extra=current.repeat_interleave(n_sources, dim=0),
        ).view(batch, n_sources, -1)
        gates = binary_gate(self.gate(z), training=self.training)
        attention = self.attention(z)
        votes = gates[:, None, :, None] * attention[:, None] * priors
        return self.project(votes.sum(dim=2)), gates
