"""HAT's task masks (Serra et al., ICML 2018, "Overcoming Catastrophic Forgetting with
Hard Attention to the Task", Sec. 2), shared by :mod:`avalanche_ctr.hat` (HAT for any
model) and CTR's task specific module and knowledge sharing module
(:mod:`avalanche_ctr.ctr`).

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
  the models freeze the weights behind units other tasks use (a unit with test-time
  mask 0 contributes nothing to that task, whatever its weights) and restore frozen
  entries after each step (:class:`~avalanche_ctr.masking.PartialFreeze`), so no
  optimizer moves them. Which weights each model freezes is its ``protection()``.

:class:`HATModel` holds what every model with HAT masks does the same way: the task
bookkeeping (training order, finished tasks, a task trained again) and the operations
over all of its masks for the task in training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avalanche_ctr.masking import PartialFreeze

__all__ = ["HATMask", "HATModel", "anneal_s"]


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

    def free_fraction(self) -> float:
        """The fraction of the units no finished task uses (cumulative mask 0)."""
        return float((self.cumulative == 0).float().mean())

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


class HATModel:
    """Mixin of a model whose units carry :class:`HATMask` s, trained task by task by a
    :class:`~avalanche_ctr.hat.lifecycle.HATPlugin`.

    Task labels get an index in training order (a mask's embedding ``i`` is the
    ``i``-th task's). A subclass calls :meth:`_register_task_state` in its constructor,
    sets ``s_max`` and ``s`` (HAT's mask scale, annealed in training) and provides
    :meth:`masks`, :attr:`heads`, :meth:`_install_task`, :meth:`set_trainable` and
    :meth:`protection`.
    """

    s: float
    s_max: float
    task_label_order: Tensor
    finished_tasks: Tensor
    _continuing: int | None

    def _register_task_state(self) -> None:
        """The buffers of the task bookkeeping (saved with the model)."""
        self.register_buffer("task_label_order", torch.zeros(0, dtype=torch.long))
        self.register_buffer("finished_tasks", torch.zeros((), dtype=torch.long))
        self._continuing = None

    # ------------------------------------------------------------------ subclass
    def masks(self) -> list[HATMask]:
        """Every HAT mask of the model."""
        raise NotImplementedError

    @property
    def heads(self) -> list[nn.Module]:
        """The model's :class:`~avalanche.models.MultiHeadClassifier` s."""
        raise NotImplementedError

    def _install_task(self, task: int) -> list[nn.Parameter]:
        """Append ``task`` to :attr:`task_label_order` and install its per-task parts
        (at least one embedding in every mask); return their parameters."""
        raise NotImplementedError

    def set_trainable(self) -> None:
        """Make only what the task in training may change trainable."""
        raise NotImplementedError

    def protection(self) -> PartialFreeze:
        """The freeze of every shared weight that other tasks use (HAT Eq. 2, exact)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ tasks
    @property
    def task_labels(self) -> list[int]:
        """Task labels in training order; position = the task's embedding index."""
        return self.task_label_order.tolist()

    @property
    def n_finished(self) -> int:
        return int(self.finished_tasks)

    @property
    def trained_tasks(self) -> list[int]:
        return self.task_labels[: self.n_finished]

    @property
    def training_index(self) -> int | None:
        """Embedding index of the task in training (``None`` between tasks)."""
        if self._continuing is not None:
            return self._continuing
        n = len(self.task_labels)
        return n - 1 if n > self.n_finished else None

    @property
    def training_task(self) -> int | None:
        index = self.training_index
        return None if index is None else self.task_labels[index]

    def _append_task_label(self, task: int) -> int:
        """Append ``task`` to the training order; return its index."""
        new = torch.tensor([task], dtype=torch.long, device=self.task_label_order.device)
        self.task_label_order = torch.cat([self.task_label_order, new])
        return len(self.task_label_order) - 1

    def start_task(self, task: int) -> None:
        """Begin training ``task``: install its parts (:meth:`_install_task`) or, for a
        task trained before, continue with its own; then fix which units the other tasks
        use (HAT's ``a^{<t}``, see :meth:`HATMask.begin_task`)."""
        if self.training_task is not None:
            raise RuntimeError(f"task {self.training_task} is still in training")
        new = task not in self.trained_tasks
        if new:
            self._install_task(task)
        else:
            self._continuing = self.task_labels.index(task)
        for mask in self.masks():
            mask.begin_task(self.training_index, new=new)

    def finish_task(self) -> None:
        """Fold the training task's masks into the cumulative masks and freeze it."""
        index = self.training_index
        for mask in self.masks():
            mask.finish_task(index)
        if self._continuing is None:
            self.finished_tasks += 1
        self._continuing = None
        self.requires_grad_(False)

    def grow_for_state(self, state: dict[str, Tensor], prefix: str = "") -> None:
        """Install the tasks of a state dict of this model trained further (their
        per-task parts; the heads are grown by :func:`avalanche_ctr.checkpoint.grow_model`),
        so that it can be loaded."""
        labels = state.get(f"{prefix}task_label_order")
        if labels is None:
            return
        known = len(self.task_labels)
        if self.task_labels != labels.tolist()[:known]:
            raise RuntimeError(
                f"the state holds tasks {labels.tolist()}, this model {self.task_labels}"
            )
        for task in labels.tolist()[known:]:
            self._install_task(int(task))

    # ------------------------------------------------------------------ masks
    def _require_training_index(self) -> int:
        index = self.training_index
        if index is None:
            raise RuntimeError("no task is in training; call start_task first")
        return index

    def mask_embeddings(self) -> list[nn.Parameter]:
        """The training task's mask embeddings (their own optimizer parameter group)."""
        index = self._require_training_index()
        return [mask.embeddings[index] for mask in self.masks()]

    def mask_regularizer(self) -> Tensor:
        """HAT Eq. 5 over every mask of the model:
        ``Σ m_t (1 - a^{<t}) / Σ (1 - a^{<t})``."""
        index = self.training_index
        used, available = [], []
        for mask in self.masks():
            free = 1 - mask.reference
            used.append((mask.mask(index, self.s) * free).sum())
            available.append(free.sum())
        return torch.stack(used).sum() / torch.stack(available).sum().clamp_min(1e-8)

    def compensate_embedding_gradients(self, thres_cosh: float = 50.0) -> None:
        """HAT Sec. 2.5 for the training task's embeddings in every mask."""
        index = self.training_index
        for mask in self.masks():
            mask.compensate_gradient(index, self.s, self.s_max, thres_cosh)

    def clamp_embeddings(self, thres_emb: float = 6.0) -> None:
        """HAT Sec. 2.5: the training task's embeddings clamped to ``±thres_emb``."""
        index = self.training_index
        for mask in self.masks():
            mask.clamp_embedding(index, thres_emb)
