"""Task Specific Module of a CTR CL-plugin: a bottleneck with HAT task masks
(CTR, Ke et al., NeurIPS 2021, Sec. 3.3; HAT, Serra et al., ICML 2018, Sec. 2).

Each task ``t`` owns an embedding ``e_t`` per masked layer; its training mask is
``m_t = σ(s · e_t)`` (HAT Eq. 1), with ``s`` annealed from ``1/s_max`` to ``s_max``
over each epoch (HAT Eq. 3). After task ``t`` the cumulative mask
``a^{≤t} = max(a^{<t}, m_t)`` (HAT Eq. 4) protects the units earlier tasks use
(HAT Eq. 2), the embedding gradient is compensated for the annealing and clamped
(HAT Sec. 2.5), and a regulariser keeps masks sparse (HAT Eq. 5).

Departures from HAT, to keep earlier tasks exactly as they were and to keep capacity:

* **The test-time mask is binary**: ``1[e_t > 0]``, the limit of ``σ(s · e_t)`` as
  ``s → ∞`` (HAT evaluates ``σ(s_max · e_t)``, which differs from it by less than 1 %
  wherever ``|e_t| > 0.012`` at ``s_max = 400``). A unit is **used** by task ``t``
  exactly when its test-time mask is 1, and the cumulative mask is the union of the
  tasks' binary masks. HAT's float cumulative mask counts a unit as used as soon as
  ``σ(s_max e)`` has not underflowed to 0 in float32, i.e. for ``e > -0.26`` at
  ``s_max = 400``: with ``N(0, 1)`` initial embeddings that move little, 60 % of the
  units per task, whatever the task needed (``docs/ctr.md``).
* **Exact protection.** HAT scales a weight's gradient by ``1 - min(a_out, a_in)``;
  we freeze every weight whose units are both used by another task (a unit with
  test-time mask 0 contributes nothing to that task, whatever its weights) and restore
  frozen entries after each step, so no optimizer moves them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HATMask", "TaskSpecificModule", "anneal_s"]


def anneal_s(batch: int, n_batches: int, s_max: float) -> float:
    """HAT Eq. 3: ``s = 1/s_max + (s_max - 1/s_max) · b / (B - 1)`` for batch ``b`` of ``B``."""
    if n_batches <= 1:
        return s_max
    return 1.0 / s_max + (s_max - 1.0 / s_max) * batch / (n_batches - 1)


class HATMask(nn.Module):
    """Per-task mask embeddings of one layer's units and their cumulative mask.

    :param n_units: number of units the mask gates.
    :param init_mean: mean of the initial embeddings ``N(init_mean, 1)``; HAT's is 0.
        A task starts with a fraction ``Φ(init_mean)`` of its test-time mask on (half
        at 0, 16 % at -1), and with Adam the embeddings move little over a short task
        (``docs/ctr.md``), so this sets how much of each layer a task claims.
    """

    def __init__(self, n_units: int, init_mean: float = 0.0) -> None:
        super().__init__()
        self.n_units = n_units
        self.init_mean = float(init_mean)
        self.embeddings = nn.ParameterList()
        self.register_buffer("cumulative", torch.zeros(n_units))
        self.reference: Tensor | None = None

    def add_task(self) -> nn.Parameter:
        """A new task embedding, initialised ``N(init_mean, 1)`` (HAT: ``N(0, 1)``; drawn
        on the CPU)."""
        start = torch.randn(self.n_units) + self.init_mean
        embedding = nn.Parameter(start.to(self.cumulative.device))
        self.embeddings.append(embedding)
        return embedding

    def mask(self, task: int, s: float | None) -> Tensor:
        """HAT Eq. 1: ``m_t = σ(s · e_t)`` in training; ``s=None`` gives the binary
        test-time mask ``1[e_t > 0]`` (:meth:`used`)."""
        if s is None:
            return self.used(task).to(self.embeddings[task].dtype)
        return torch.sigmoid(s * self.embeddings[task])

    def used(self, task: int) -> Tensor:
        """The units task ``task`` uses: where its test-time mask ``1[e_t > 0]`` is 1."""
        return self.embeddings[task].detach() > 0

    @torch.no_grad()
    def begin_task(self, task: int, *, new: bool) -> None:
        """Fix ``reference``, the units the other tasks use while ``task`` trains (HAT's
        ``a^{<t}``, 0 or 1 per unit): the cumulative mask for a new task; for a task
        trained again, the union of the other tasks' test-time masks, so that its own
        earlier mask does not freeze it."""
        if new:
            self.reference = self.cumulative.clone()
            return
        reference = torch.zeros_like(self.cumulative)
        for other in range(len(self.embeddings)):
            if other != task:
                reference = torch.maximum(reference, self.mask(other, None))
        self.reference = reference

    @torch.no_grad()
    def finish_task(self, task: int) -> None:
        """HAT Eq. 4 with binary masks: ``a^{≤t} = max(a^{<t}, 1[e_t > 0])``, with
        ``a^{<t}`` the units the other tasks use (:meth:`begin_task`)."""
        self.cumulative.copy_(torch.maximum(self.reference, self.mask(task, None)))
        self.reference = None

    def reference_used(self) -> Tensor:
        """The units another task uses while a task trains (boolean)."""
        if self.reference is None:
            raise RuntimeError("no task is in training; call begin_task first")
        return self.reference > 0

    @torch.no_grad()
    def compensate_gradient(self, task: int, s: float, s_max: float, thres_cosh: float = 50.0):
        """HAT Sec. 2.5 (Eq. 6): rescale the embedding gradient so that annealing ``s``
        does not starve it, ``g ← g · s_max (cosh(s e) + 1) / (s (cosh(e) + 1))``, with
        ``s e`` clamped to ``±thres_cosh`` against overflow."""
        embedding = self.embeddings[task]
        if embedding.grad is None:
            return
        numerator = torch.cosh(torch.clamp(s * embedding, -thres_cosh, thres_cosh)) + 1
        denominator = torch.cosh(embedding) + 1
        embedding.grad.mul_(s_max / s * numerator / denominator)

    @torch.no_grad()
    def clamp_embedding(self, task: int, thres_emb: float = 6.0) -> None:
        """HAT Sec. 2.5: keep ``e_t`` in ``[-thres_emb, thres_emb]``."""
        self.embeddings[task].clamp_(-thres_emb, thres_emb)


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
