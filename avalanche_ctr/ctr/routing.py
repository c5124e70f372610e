"""Transfer capsule layer and transfer routing of CTR's Knowledge Sharing Module
(CTR, Ke et al., NeurIPS 2021, Sec. 3.2.2), shared by every task and protected by
HAT task masks (Serra et al., ICML 2018).

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

As in the paper and the official code, the routing is **one module shared by every
task**: the similarity convolutions, the current-task projection ``fc_current`` and
the projection to the layer width are learned by the first task and reused by the
later ones. What is learned must not be forgotten, so, as the official code does for
the projection (its ``elarger`` mask), every shared layer's units carry HAT masks
(:class:`~avalanche_ctr.hat.masks.HATMask`): the current-task similarity units,
the source similarity units ``z`` and the projection's outputs. A task claims units
with its masks; a later task may switch a claimed unit on (reuse) but cannot change
the weights behind it (:meth:`KnowledgeSharingModule.free_entries`). Only tasks
``≤ t`` take part: the gates of later tasks are zero by construction.

Departures from the official code, each to keep earlier tasks exactly as they were and
to keep samples independent:

* ``W_{i·}`` belongs to source task ``i``: it is learned with task ``i``'s capsule and
  frozen with it (the official code updates all of ``W`` with every task); gate and
  attention layers ``W_d``, ``W_a`` belong to the task that routes (they read the shared,
  masked ``z``);
* the shared layers are HAT-masked (above) instead of shared without protection;
* gates and attentions are computed and applied per sample. The official code
  repeats and reshapes them (``repeat(max_seq_length, 1).view(...)``) so that a
  sample's routing mixes with other samples of the batch;
* padded tokens are excluded: their pre-route vectors are zeroed before the
  similarity convolutions and the max-pooling skips them, so a sample's routing
  does not depend on how much padding it carries;
* by default (``zero_projection=True``) the shared projection starts at zero, so the
  first task's CL-plugin starts as its TSM alone (adapter + HAT) and the transfer path
  grows from there. The official code initialises it at random, which adds noise to
  every layer's TSM input before the routing has learned anything (the same reason
  adapters start near the identity, Houlsby et al. 2019, Sec. 2.1);
  ``zero_projection=False`` keeps PyTorch's default initialisation, as the official code;
* Gumbel noise is drawn from the model's own generator (``TaskContext.generator``), so
  CTR and its ablation without KSM draw the same random numbers for everything else;
* at evaluation the gate is the deterministic ``argmax`` of its logits (no
  Gumbel noise), so a task's outputs do not vary from one evaluation to the next.

``official=True`` (``CTRModel(ksm="official")``, issue 25) reproduces the official
code's knowledge sharing instead of the protected one above: the number of tasks is
given up front and every task's capsule and ``W_{i·}`` exist from the start; training
task ``t`` trains the capsules and ``W_{i·}`` of every task ``i ≤ t`` (the official
gradient rule ``tsv[t] = tril``, so later tasks retrain earlier capsules); one gate layer
and one attention layer are shared by all tasks; no HAT mask or freeze reaches the
shared layers (similarity convolutions, ``fc_current``, gate, attention, the projection
with its trainable bias), and only the projection's output carries the task's mask
``σ(s e_t)`` in the forward pass (the official ``elarger``), outside HAT's regulariser,
compensation and protection. Earlier tasks may therefore forget. ``batch_mixing=True``
(only with ``official=True``) also reproduces the official ``view``/``repeat`` calls that
mix samples of a batch (:func:`official_sample_view`, :meth:`KnowledgeSharingModule.
mixed_routing`); it exists to measure that leak, not to be used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from avalanche_ctr.ctr.capsules import TaskCapsuleLayer
from avalanche_ctr.hat.masks import HATMask

__all__ = ["KnowledgeSharingModule", "binary_gate", "official_sample_view"]


def binary_gate(
    logits: Tensor, *, training: bool, tau: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Differentiable binary gate from 2-way logits (``[..., 0]`` = "use").

    Training: straight-through Gumbel-softmax (Jang et al. 2017), hard one-hot
    forward and soft gradient backward, with Gumbel noise from ``generator`` (default:
    PyTorch's global one). Evaluation: ``argmax``, no noise.
    """
    if not training:
        return (logits.argmax(dim=-1) == 0).to(logits.dtype)
    noise = -torch.empty_like(logits).exponential_(generator=generator).log()
    soft = F.softmax((logits + noise) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), logits.shape[-1]).to(soft.dtype)
    return (hard - soft.detach() + soft)[..., 0]


def official_sample_view(x: Tensor, batch: int, length: int) -> Tensor:
    """The official code's ``tensor.contiguous().view(batch, length, -1)`` of a tensor laid
    out ``(n_transfer, batch · length, ...)``: the leading transfer-capsule axis is read as
    if it were inside each token, so the result's sample ``b`` holds values of samples
    ``3b .. 3b + 2`` (with 3 transfer capsules; samples of the whole batch for ``b`` beyond
    the first third). This is the sample mixing of the official ``transfer_route`` forward
    (``outputs_list[t].view(...)``, ``vote_outputs.view(...)``), reproduced only to measure
    it."""
    return x.contiguous().view(batch, length, -1)


_SOURCES_ELEMENTS = 1 << 18
"""Elements of the similarity product that :class:`_MaxOverTokens` computes at a time (as
many sources as fit, at least one): about a core's L2 cache in float32; five of MiniLM's
sources at a time (2^20) were slower than one."""


class _MaxOverTokens(torch.autograd.Function):
    """``max_l (windows[i] @ kernels[i])[b, l, o]`` over the tokens ``l`` that ``keep``
    marks, for every source ``i``, where ``windows[i, b, l]`` holds tokens ``l .. l + K - 1``
    of ``x[i, b]`` (channel-major): x (n, B, L + K - 1, c) the zero-padded capsules,
    kernels (n, c · K, O) → (n, B, O).

    The same values and gradients as the windows' product followed by ``max(dim=...)``,
    which sends each output's gradient to its first maximising token, without that dense
    (n, B, L, O) tensor living on for the backward pass (nor its dense gradient): the
    product is computed a source or a few at a time (:data:`_SOURCES_ELEMENTS`), reduced
    with ``amax``, and the first maximising token is found with float operations (``max``
    with indices, and ``argmax``, are several times slower on the CPU than ``amax``). The
    backward pass gathers each maximising token's window and adds the gradient straight
    back into the tokens of ``x`` it covers, work of size (n, B, O, c · K) instead of
    (n, B, L, O), built in the order of ``x``'s rows (no transposed copy), and the kernels'
    gradient as one batched product over the (source, output) pairs. A column that is all
    ``-inf`` (every token dropped) or ``NaN`` sends its gradient to token 0. On CUDA the
    additions are atomic, so a sum's rounding may vary."""

    @staticmethod
    def forward(ctx, x: Tensor, kernels: Tensor, keep: Tensor | None) -> Tensor:
        windows = _MaxOverTokens.windows(x, kernels)
        values, index = _MaxOverTokens.maxima(windows, kernels, keep, first=True)
        ctx.save_for_backward(windows, kernels, index)
        ctx.x_shape = x.shape
        return values

    @staticmethod
    def windows(x: Tensor, kernels: Tensor) -> Tensor:
        """The token windows of ``x`` (n, B, L + K - 1, c): (n, B, L, c · K), contiguous."""
        size = kernels.shape[1] // x.shape[-1]
        return x.unfold(2, size, 1).reshape(*x.shape[:2], x.shape[2] - size + 1, -1)

    @staticmethod
    def maxima(
        windows: Tensor, kernels: Tensor, keep: Tensor | None, *, first: bool
    ) -> tuple[Tensor, Tensor | None]:
        """The maxima (n, B, O) over the windows (n, B, L, c · K) and, with ``first``, the
        first maximising tokens (n, B, O)."""
        n, batch, length, size = windows.shape
        values = windows.new_empty(n, batch, kernels.shape[-1])
        # length - (first maximising token), found as max over l of (y == max) * (length - l)
        # (in float32 at least: half precision counts tokens exactly only to 256 or 2048)
        exact = torch.promote_types(windows.dtype, torch.float32)
        last = torch.empty(values.shape, dtype=exact, device=values.device) if first else None
        ramp = torch.arange(length, 0, -1, dtype=exact, device=values.device)[:, None]
        dropped = None if keep is None else ~keep[:, :, None]
        step = max(1, _SOURCES_ELEMENTS // values[0].numel() // length)
        for i in range(0, n, step):
            y = torch.bmm(windows[i : i + step].flatten(1, 2), kernels[i : i + step])
            y = y.view(-1, batch, length, values.shape[-1])
            if dropped is not None:
                y = y.masked_fill_(dropped, float("-inf"))
            top = y.amax(dim=2, keepdim=True)
            values[i : i + step] = top[:, :, 0]
            if last is not None:
                # y - top is 0 at the maxima, negative elsewhere: sign + 1 is 1 there, else 0
                torch.amax(y.sub_(top).sign_().add_(1) * ramp, dim=2, out=last[i : i + step])
        if last is None:
            return values, None
        return values, (length - last.nan_to_num_(nan=length)).long()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        windows, kernels, index = ctx.saved_tensors
        n, batch, length, size = windows.shape
        padded, channels = ctx.x_shape[2], ctx.x_shape[3]
        outputs = kernels.shape[-1]
        start = torch.arange(n * batch, device=index.device).view(n, batch, 1)
        grad_x = grad_kernels = None
        if ctx.needs_input_grad[0]:
            # window (i, b, l) starts at row (i · B + b) · (L + K - 1) + l of x's (…, c) rows;
            # the kernels laid out (n, O, K, c) give the spread gradient in the rows' order
            rows = (start * padded + index).flatten()
            rows = (rows[:, None] + torch.arange(size // channels, device=rows.device)).flatten()
            per_token = kernels.unflatten(1, (channels, -1)).permute(0, 3, 2, 1).contiguous()
            spread = grad[..., None, None] * per_token[:, None]  # (n, B, O, K, c)
            grad_x = windows.new_zeros(n * batch * padded, channels)
            grad_x.index_add_(0, rows, spread.view(-1, channels).to(windows.dtype))
            grad_x = grad_x.view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            # one product per (source, output): the batch's gradients times its windows
            rows = (start.transpose(1, 2) * length + index.transpose(1, 2)).flatten()
            picked = windows.view(-1, size).index_select(0, rows).view(n * outputs, batch, size)
            dtype = torch.promote_types(grad.dtype, picked.dtype)
            weights = grad.transpose(1, 2).reshape(n * outputs, 1, batch).to(dtype)
            grad_kernels = torch.bmm(weights, picked.to(dtype)).view(n, outputs, size)
            grad_kernels = grad_kernels.transpose(1, 2)
        return grad_x, grad_kernels, None


class _WideLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` for a narrow input (…, in) and a wide output (…, out),
    whose backward products are computed with the output width as their last axis: on the
    CPU, ``(T, out) @ (out, in)`` and ``(out, T) @ (T, in)`` (in = 9) are several times
    slower than the transposes of ``(in, out) @ (out, T)`` and ``(in, T) @ (T, out)``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.addmm(bias, flat, weight.t())
        ctx.save_for_backward(flat, weight)
        ctx.input_shape = x.shape
        ctx.dtype = out.dtype  # the product's (under autocast, its lower precision)
        return out.view(*x.shape[:-1], -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        flat, weight = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1]).to(ctx.dtype)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(weight.to(ctx.dtype).t(), grad.t()).t()
            grad_x = grad_x.reshape(ctx.input_shape).to(flat.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.mm(flat.to(ctx.dtype).t(), grad).t().to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=0).to(weight.dtype)
        return grad_x, grad_weight, grad_bias


class KnowledgeSharingModule(nn.Module):
    """CTR's KSM in one CL-plugin: the task capsule layer (Sec. 3.2.1) and the shared,
    HAT-masked transfer routing (Sec. 3.2.2).

    :param hidden_size: width of the transformer layer.
    :param capsule_hidden: hidden width of a task capsule.
    :param capsule_dim: dimension of a task capsule.
    :param n_transfer: number of transfer capsules.
    :param channels: channels of each similarity convolution.
    :param kernel_sizes: token window sizes of the similarity convolutions.
    :param zero_projection: start the projection to the layer width at zero (else at
        PyTorch's default, as the official code).
    :param mask_init_mean: mean of the initial mask embeddings
        (:class:`~avalanche_ctr.hat.masks.HATMask`).
    :param gate_bias: added to a new gate's "use" logit and taken from its "skip" logit,
        so the gate starts with a margin of about ``gate_bias`` (default 0: PyTorch's
        initialisation, the gate at chance).
    :param official: the official code's plastic KSM (module docstring) instead of the
        protected one; needs ``n_tasks``.
    :param n_tasks: with ``official``, the number of tasks, all allocated up front.
    :param batch_mixing: with ``official``, the official sample mixing
        (:meth:`mixed_routing`).
    """

    def __init__(
        self,
        hidden_size: int,
        capsule_hidden: int,
        capsule_dim: int,
        n_transfer: int,
        channels: int = 32,
        kernel_sizes: tuple[int, ...] = (3, 4, 5),
        zero_projection: bool = True,
        mask_init_mean: float = 0.0,
        gate_bias: float = 0.0,
        official: bool = False,
        n_tasks: int | None = None,
        batch_mixing: bool = False,
    ) -> None:
        super().__init__()
        if official and (n_tasks is None or n_tasks < 1):
            raise ValueError(
                f"the official KSM allocates every task up front: give n_tasks >= 1, got {n_tasks}"
            )
        if not official and (n_tasks is not None or batch_mixing):
            raise ValueError(
                "n_tasks and batch_mixing belong to the official KSM; pass official=True"
            )
        self.official = official
        self.capacity = n_tasks
        self.batch_mixing = batch_mixing
        self.gate_bias = gate_bias
        self.capsule_dim = capsule_dim
        self.n_transfer = n_transfer
        self.channels = channels
        self.kernel_sizes = kernel_sizes
        width = n_transfer * capsule_dim
        self.width = width
        pooled = channels * len(kernel_sizes)
        self.task_capsules = TaskCapsuleLayer(hidden_size, capsule_hidden, capsule_dim)
        self.route_weights = nn.ParameterList()
        self.gates = nn.ModuleList()
        self.attentions = nn.ModuleList()
        self.convs_current = nn.ModuleList(
            nn.Conv1d(width, channels, k, padding=k // 2) for k in kernel_sizes
        )
        self.convs_source = nn.ModuleList(
            nn.Conv1d(width, channels, k, padding=k // 2) for k in kernel_sizes
        )
        self.fc_current = nn.Linear(pooled, channels)
        self.project = nn.Linear(width, hidden_size)
        if zero_projection:
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)
        self.mask_project = HATMask(hidden_size, mask_init_mean)
        self.mask_current: HATMask | None = None
        self.mask_similarity: HATMask | None = None
        self.gate: nn.Linear | None = None
        self.attention: nn.Linear | None = None
        if official:
            self.gate = self._new_gate()
            self.attention = nn.Linear(pooled, width)
            for _ in range(n_tasks):
                self.task_capsules.add_task(torch.device("cpu"))
                self.route_weights.append(self._new_route(torch.device("cpu")))
        else:
            self.mask_current = HATMask(pooled, mask_init_mean)
            self.mask_similarity = HATMask(pooled, mask_init_mean)

    @property
    def masks(self) -> tuple[HATMask, ...]:
        """The HAT masks of the shared layers: current-task similarity units, source
        similarity units ``z``, projection outputs; none for the official KSM, whose
        projection mask is outside HAT's accounting."""
        if self.official:
            return ()
        return self.mask_current, self.mask_similarity, self.mask_project

    @property
    def n_tasks(self) -> int:
        """The number of tasks installed (:meth:`add_task`)."""
        return len(self.mask_project.embeddings)

    def _new_route(self, device: torch.device) -> nn.Parameter:
        shape = (self.n_transfer, self.capsule_dim, self.capsule_dim)
        return nn.Parameter(0.1 * torch.randn(shape).to(device))

    def _new_gate(self) -> nn.Linear:
        gate = nn.Linear(self.channels * len(self.kernel_sizes), 2)
        with torch.no_grad():
            gate.bias += torch.tensor([self.gate_bias / 2, -self.gate_bias / 2])
        return gate

    def add_task(self) -> list[nn.Parameter]:
        """Install a task's capsule, its ``W_{t·}``, gate and attention layers and its
        masks of the shared layers; return their parameters (the task-owned ones)."""
        device = self.project.weight.device
        if self.official:
            index = self.n_tasks
            if index >= self.capacity:
                raise RuntimeError(
                    f"this official KSM was built for {self.capacity} tasks and all are "
                    "installed; build the model with n_tasks = the stream's number of tasks"
                )
            capsule = self.task_capsules.capsules[index]
            route = self.route_weights[index]
            embedding = self.mask_project.add_task()
            return [*capsule.parameters(), route, embedding]
        pooled = self.channels * len(self.kernel_sizes)
        capsule = self.task_capsules.add_task(device)
        route = self._new_route(device)
        self.route_weights.append(route)
        gate = self._new_gate().to(device)
        attention = nn.Linear(pooled, self.width).to(device)
        self.gates.append(gate)
        self.attentions.append(attention)
        embeddings = [mask.add_task() for mask in self.masks]
        return [
            *capsule.parameters(),
            route,
            *gate.parameters(),
            *attention.parameters(),
            *embeddings,
        ]

    def set_trainable(self, task: int, *, owns_sources: bool) -> None:
        """Make task ``task``'s gate, attention, mask embeddings and the shared layers
        trainable (the shared ones protected by :meth:`free_entries`); its capsule and
        ``W_{t·}`` too when ``owns_sources`` (no later task reads them yet).

        The official KSM instead trains the capsules and ``W_{i·}`` of every task
        ``i ≤ task`` (the official ``tsv[t] = tril`` gradient rule), every shared layer
        including the gate and attention, and the task's projection mask."""
        if self.official:
            for i in range(task + 1):
                self.task_capsules.capsules[i].requires_grad_(True)
                self.route_weights[i].requires_grad_(True)
            for module in (
                self.convs_current,
                self.convs_source,
                self.fc_current,
                self.project,
                self.gate,
                self.attention,
            ):
                module.requires_grad_(True)
            self.mask_project.embeddings[task].requires_grad_(True)
            return
        self.task_capsules.capsules[task].requires_grad_(owns_sources)
        self.route_weights[task].requires_grad_(owns_sources)
        self.gates[task].requires_grad_(True)
        self.attentions[task].requires_grad_(True)
        for module in (self.convs_current, self.convs_source, self.fc_current, self.project):
            module.requires_grad_(True)
        for mask in self.masks:
            mask.embeddings[task].requires_grad_(True)

    def free_entries(self) -> list[tuple[Tensor, Tensor]]:
        """HAT Eq. 2 made exact for the shared routing: ``(parameter, free)`` pairs where an
        entry is free unless another task uses both the unit it feeds and the unit it
        reads (inputs that carry no mask count as used). The official KSM protects
        nothing."""
        if self.official:
            return []
        used_current = self.mask_current.reference_used()
        used_similarity = self.mask_similarity.reference_used()
        used_project = self.mask_project.reference_used()
        pairs: list[tuple[Tensor, Tensor]] = []
        for convs, used in (
            (self.convs_current, used_current),
            (self.convs_source, used_similarity),
        ):
            for conv, block in zip(convs, used.split(self.channels), strict=True):
                pairs += [(conv.weight, ~block[:, None, None]), (conv.bias, ~block)]
        # fc_current's output channel c is added to the similarity unit c of every kernel
        feeds_used = used_similarity.view(len(self.kernel_sizes), self.channels).any(dim=0)
        pairs += [
            (self.fc_current.weight, ~(feeds_used[:, None] & used_current[None, :])),
            (self.fc_current.bias, ~feeds_used),
            (self.project.weight, ~used_project[:, None]),
            (self.project.bias, ~used_project),
        ]
        return pairs

    def _merged_kernel(self, convs: nn.ModuleList) -> tuple[Tensor, Tensor]:
        """The convolutions of ``convs`` as one: each kernel of size ``k`` (padding
        ``k // 2``, output cut to the input length) covers tokens ``i - k//2 .. i - k//2 +
        k - 1``, so zero-padding it to the largest size ``K`` at the right offset gives one
        kernel ``(channels · len(kernel_sizes), width, K)`` with the same outputs."""
        largest = max(self.kernel_sizes)
        weights = [
            F.pad(conv.weight, (largest // 2 - k // 2, largest - k - largest // 2 + k // 2))
            for conv, k in zip(convs, self.kernel_sizes, strict=True)
        ]
        return torch.cat(weights), torch.cat([conv.bias for conv in convs])

    def similarity_features(
        self,
        convs: nn.ModuleList,
        capsules: Tensor,
        routes: Tensor,
        keep: Tensor | None,
        extra: Tensor | None = None,
    ) -> Tensor:
        """The task-similarity features of Sec. 3.2.2: for each source ``i``, the
        convolutions of ``convs`` over its pre-route vectors ``û_{·|i} = W_{i·} p_i``
        (tokens as the convolution axis), ``extra`` added, ReLU and max-pooling over the
        tokens that ``keep`` marks.

        :param capsules: (B, L, n, capsule_dim) task capsules ``p_i`` of ``n`` sources.
        :param routes: (n, n_transfer, capsule_dim, capsule_dim) their ``W_{i·}``.
        :param keep: (B, L) boolean, ``False`` at padded tokens; ``None``: no padding.
        :param extra: (B, channels) added to every kernel's pooled channels.
        :return: (B, n, channels · len(kernel_sizes)).

        Same arithmetic, less work (up to float rounding): a convolution over
        ``W_{i·} p_i`` is a convolution over ``p_i`` with the kernel composed with
        ``W_{i·}`` (both are linear, and the pre-route map has no bias), so each source's
        ``capsule_dim`` channels are convolved instead of its ``n_transfer · capsule_dim``;
        the convolution runs as a matrix product over token windows, one source at a time,
        and only the maximum over the tokens is kept (:class:`_MaxOverTokens`). The
        convolutions' bias, ``extra`` and ReLU commute with the max over tokens, so they
        are applied to the pooled values.
        """
        x, kernels, bias = self.similarity_inputs(convs, capsules, routes, keep)
        if torch.is_grad_enabled() and (x.requires_grad or kernels.requires_grad):
            pooled = _MaxOverTokens.apply(x, kernels, keep)
        else:  # no gradient: the maxima alone
            windows = _MaxOverTokens.windows(x, kernels)
            pooled = _MaxOverTokens.maxima(windows, kernels, keep, first=False)[0]
        pooled = pooled.transpose(0, 1) + bias
        if extra is not None:
            pooled = pooled + extra.repeat(1, len(convs))[:, None]
        return F.relu(pooled)

    def similarity_inputs(
        self, convs: nn.ModuleList, capsules: Tensor, routes: Tensor, keep: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """What :meth:`similarity_features` takes its maxima over: the capsules (B, L, n,
        capsule_dim), padded tokens zeroed, laid out (n, B, L + K - 1, capsule_dim) with
        the merged kernel's padding (:meth:`_merged_kernel`, largest size ``K``); the
        kernels composed with ``W_{i·}``, (n, capsule_dim · K, channels · len(convs)); and
        the convolutions' bias (channels · len(convs))."""
        weight, bias = self._merged_kernel(convs)
        weight = weight.unflatten(1, (self.n_transfer, self.capsule_dim))
        kernels = torch.einsum("ojdk,ijdc->icko", weight, routes).flatten(1, 2)
        size = weight.shape[-1]
        if keep is not None:
            capsules = capsules * keep[:, :, None, None]
        x = F.pad(capsules.permute(2, 0, 1, 3), (0, 0, size // 2, size - 1 - size // 2))
        return x, kernels, bias

    @staticmethod
    def pre_route(capsules: Tensor, routes: Tensor) -> Tensor:
        """``û_{j|i} = W_{ij} p_i``: capsules (B, L, n, c) and routes ``W_{i·}``
        (n, n_transfer, c, c) → (B, L, n, n_transfer · c)."""
        return torch.einsum("blic,ijdc->blijd", capsules, routes).flatten(3)

    def forward(
        self,
        h: Tensor,
        keep: Tensor | None,
        task: int,
        s: float | None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Task ``task``'s transfer output for ``h``.

        :param h: (B, L, hidden) hidden states.
        :param keep: (B, L) boolean, ``False`` at padded tokens; ``None``: no padding.
        :param task: index of the routing task ``t``; tasks ``0 .. t`` take part.
        :param s: HAT scale of the training masks, or ``None`` for the binary test-time
            masks.
        :param generator: source of the training gates' Gumbel noise.
        :return: the transfer output (B, L, hidden) and the gates (B, t + 1).
        """
        if self.batch_mixing:
            capsules = self.task_capsules(h, self.capacity)
            return self.mixed_routing(capsules, task, s, generator)
        capsules = self.task_capsules(h, task + 1)
        routes = torch.stack(list(self.route_weights[: task + 1]))
        current = self.similarity_features(
            self.convs_current, capsules[:, :, -1:], routes[-1:], keep
        )[:, 0]
        if self.mask_current is not None:
            current = current * self.mask_current.mask(task, s)
        current = self.fc_current(current)
        z = self.similarity_features(self.convs_source, capsules, routes, keep, extra=current)
        if self.mask_similarity is not None:
            z = z * self.mask_similarity.mask(task, s)
        gate = self.gate if self.official else self.gates[task]
        attention_layer = self.attention if self.official else self.attentions[task]
        gates = binary_gate(gate(z), training=self.training, generator=generator)
        attention = attention_layer(z).unflatten(-1, (self.n_transfer, self.capsule_dim))
        # the votes' sum over the sources, sum_i gate_i a_i * (W_i. p_i), is one product of
        # each sample's capsules with the per-sample map sum_i gate_i a_i W_i.
        routing = torch.einsum("bi,bijd,ijdc->bicjd", gates, attention, routes)
        if keep is not None:
            capsules = capsules * keep[:, :, None, None]
        votes = torch.bmm(
            capsules.flatten(2).flatten(0, 1).unflatten(0, (h.shape[0], -1)),
            routing.flatten(3).flatten(1, 2),
        )
        mask = self.mask_project.mask(task, s)
        transfer = _WideLinear.apply(
            votes, self.project.weight * mask[:, None], self.project.bias * mask
        )
        return transfer, gates

    def _pooled_convolutions(
        self, convs: nn.ModuleList, x: Tensor, extra: Tensor | None = None
    ) -> Tensor:
        """The paper's similarity features over pre-route vectors ``x`` (B, L, n, width):
        each convolution of ``convs`` over the tokens, ``extra`` (B, channels) added, ReLU,
        max over every token (padding included, as the official code) → (B, n, pooled)."""
        batch, length, n, width = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(batch * n, width, length)
        pooled = []
        for conv in convs:
            y = conv(flat)[..., :length].unflatten(0, (batch, n))
            if extra is not None:
                y = y + extra[:, None, :, None]
            pooled.append(F.relu(y).max(dim=-1).values)
        return torch.cat(pooled, dim=-1)

    def mixed_routing(
        self, capsules: Tensor, task: int, s: float | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """The official ``transfer_route`` forward with its sample mixing, over the
        capsules (B, L, n_tasks, capsule_dim) of every allocated task.

        The official code lays the pre-route vectors out ``(n_transfer, B · L, n_tasks,
        capsule_dim)``; it reads each source's slice back per sample with ``view`` (so
        sample ``b``'s similarity features come from samples ``3b .. 3b + 2``,
        :func:`official_sample_view`), spreads the per-sample attentions and gates over
        the tokens with ``repeat(L, ...).view(...)`` (so token ``l`` of sample ``b`` gets
        the gate of sample ``(b L + l) mod B``), zeroes later tasks' votes with
        ``tsv[t]``, and reads the summed votes back with ``view`` again. Each step is
        reproduced here in that layout. As in the official code the gates are
        straight-through Gumbel samples at evaluation too (noise from ``generator``, at
        evaluation PyTorch's global one), not the deterministic ``argmax``."""
        batch, length, n, _ = capsules.shape
        routes = torch.stack(list(self.route_weights))
        tokens = batch * length
        priors = self.pre_route(capsules, routes).unflatten(3, (self.n_transfer, -1))
        official = priors.permute(3, 0, 1, 2, 4).reshape(self.n_transfer, tokens, n, -1)
        sources = torch.stack(
            [official_sample_view(official[:, :, i], batch, length) for i in range(n)], dim=2
        )
        current = self._pooled_convolutions(self.convs_current, sources[:, :, task : task + 1])
        z = self._pooled_convolutions(self.convs_source, sources, self.fc_current(current[:, 0]))
        # the official gates are Gumbel samples at evaluation too (no argmax)
        gates = binary_gate(self.gate(z), training=True, generator=generator)
        attention = self.attention(z).transpose(1, 2).contiguous()
        attention = attention.repeat(length, 1, 1).view(self.n_transfer, tokens, n, -1)
        spread = gates.repeat(length, 1).view(1, tokens, n, 1)
        earlier = (torch.arange(n, device=capsules.device) <= task).to(capsules.dtype)
        votes = (earlier.view(1, 1, n, 1) * attention * spread * official).sum(dim=2)
        transfer = self.project(official_sample_view(votes, batch, length))
        return transfer * self.mask_project.mask(task, s), gates[:, : task + 1]
