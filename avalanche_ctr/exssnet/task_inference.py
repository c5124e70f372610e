"""Task inference for supermask networks without task labels at test time
(SupSup, Wortsman et al., NeurIPS 2020, Sec. 3.3-3.4: the "GN" setting, where
tasks are Given during training but Not at inference).

The one-shot algorithm (Sec. 3.3)
---------------------------------
Every supermask layer of a :class:`~avalanche_ctr.exssnet.supermask_net.SupermaskNet`
is run with the superposition of the ``T`` learned masks,

    W_eff(α) = W ⊙ Σ_t α_t M_t,          α_t = 1/T            (SupSup Eq. 3)

and the entropy ``H`` of the output, averaged over the mini-batch, is
differentiated with respect to the coefficients ``α``. The task whose
coefficient most decreases the entropy, ``argmax_t -∂H/∂α_t`` (Eq. 4), is
returned: one forward and one backward pass for any number of tasks. SupSup
infers the task of a whole mini-batch (its entropy is the batch mean), and so
does :func:`infer` by default. Because the superposed forward pass is the same
for every sample, the scores of the batch are exactly the mean of per-sample
scores; ``per_sample=True`` returns the latter (one task per sample) at the
cost of ``T`` extra layer-wise products (about ``T`` forward passes) and still
one backward pass. ``per_sample`` is offered for the one-shot method only: in
the binary method each sample would keep its own candidate set and no forward
pass could be shared.

Since the α enter every layer linearly, the chain rule gives

    ∂H/∂α_t = Σ_layers ⟨∂H/∂W_eff, W ⊙ M_t⟩ + (terms of the per-task BatchNorms and heads)

so the implementation keeps no per-task weight copies and no ``T``-fold
stacks of masks: it builds ``W_eff`` once, takes ``∂H/∂W_eff`` from one
backward pass and contracts it with each task's bit-packed mask, unpacked one
task at a time (memory ``O(N)`` for ``N`` maskable weights, whatever ``T``).

The binary algorithm (Sec. 3.4)
-------------------------------
``method="binary"`` repeatedly runs the same step with α uniform over the
remaining candidates only (``α_t = 1/|S|`` for ``t ∈ S``, ``0`` elsewhere: the
other tasks' masks, BatchNorms and heads take no part) and keeps the half of
``S`` with the larger ``-∂H/∂α_t`` (``⌈|S|/2⌉`` tasks, ties going to the
earlier-trained task), until one task is left: ``⌈log2 T⌉`` forward and
backward passes. The official code keeps the tasks whose gradient is at most
the median; taking the top half by rank is the same without ties and always
terminates.

ExSSNeT and SSNeT
-----------------
In SupSup the weights ``W`` are fixed at their signed-constant initialisation,
so ``⟨∂H/∂W_eff, W ⊙ M_t⟩ = c Σ_{i ∈ M_t} sign(W_i) (∂H/∂W_eff)_i``. ExSSNeT
(Yadav & Bansal, ACL Findings 2023, Sec. 3.2) trains the shared weights, but
task ``t`` only trains the weights of ``M_t`` that no earlier mask uses, and
every later task only those that ``M_t`` (and every other earlier mask) does
not use. Hence ``W ⊙ M_t`` with the *current* ``W`` is exactly the weight
tensor task ``t`` ended its training with, the superposition
``W ⊙ Σ_t α_t M_t`` is the α-weighted sum of the tasks' own weights, and the
gradient has the same form as in SupSup with ``W`` no longer sign-constant:

    ∂H/∂α_t = Σ_layers ⟨∂H/∂W_eff, W ⊙ M_t⟩.

Two differences matter in practice. The ``‖W ⊙ M_t‖`` are no longer equal
across tasks, which the linearisation does not correct for (in our runs they
differ by a few per cent only, and rescaling each task's term to the mean norm
changed nothing). More importantly, KKT starts each new mask from an earlier
task's, so ExSSNeT's masks overlap far more than SupSup's (25-47 % of a mask
shared with another task in our permuted-digits runs, against the density,
10 %, for SupSup): the α-gradients of overlapping tasks are correlated and the
one-shot method confuses them more often; the binary method, which re-runs
the superposition without the discarded half, separates them (see the
numbers below).

SSNeT (``exclusive=False``) trains every weight of ``M_t``, so later tasks move
weights that earlier masks use; ``W ⊙ M_t`` then differs from the weights task
``t`` was trained with. Inference uses the current ``W``, i.e. the same
network that predicting with task label ``t`` would use: it infers the task
among the tasks as the model now computes them, and its accuracy falls with
SSNeT's forgetting (there are no stored older weights to do better with).

Per-task heads and BatchNorm
----------------------------
Models here classify with a :class:`~avalanche.models.MultiHeadClassifier`:
one dense head per task, possibly with different numbers of classes, that no
mask covers. Every candidate head ``t`` reads the superposed features ``h(α)``
and gives logits ``z_t``; ``Ĥ_t = H(softmax(z_t)) / log n_t`` is its entropy over
its own ``n_t`` classes (the head's active units), normalised so that heads with
different numbers of classes are comparable (a uniform guess scores 1). Three
rules (``head_rule``) turn these into the objective:

* ``"mean"``: ``H = (1/T) Σ_t Ĥ_t``. The heads are not superposed; α reaches
  them only through the features, so ``∂H/∂α_t`` asks how much more of task
  ``t``'s subnetwork makes the heads surer, and nothing else. Default for the
  one-shot method.
* ``"mixture"``: ``H = Σ_t α_t Ĥ_t``, α read as the belief that head ``t``
  reads the output; ``∂H/∂α_t`` adds ``Ĥ_t`` itself (how sure head ``t`` is on
  the superposed features) to the ``"mean"`` gradient. Default for the binary
  method.
* ``"logits"``: ``z = Σ_t α_t z_t`` (each head zero outside its own classes,
  padded to the widest head) and ``H`` is the entropy of ``softmax(z)`` over
  the union of the heads' classes: SupSup-GN's shared output layer
  ``(W ⊙ Σ_t α_t M_t) h`` with dense per-task heads in place of masked ones,
  adding logits of unrelated label spaces.

The defaults are what inferred best on real data: permuted 8x8 digits (as
SupSup's PermutedMNIST), five tasks of ten classes, MLP 64-256-256, density
0.1, 4 epochs, test batches of 16, two seeds, SupSup, ExSSNeT and ExSSNeT
without KKT. Averaged over the six runs, one-shot infers the task of 85 % of
the batches with ``"mean"``, 80 % with ``"mixture"`` and 74 % with
``"logits"``: ``"mixture"``'s extra ``Ĥ_t`` term is noise when ``T`` tasks are
superposed at ``1/T`` each, for the features are then far from any task's.
Binary reaches 97 % with ``"mixture"``, 94 % with ``"mean"`` and 84 % with
``"logits"``: with two or three candidates left, the superposed features are
close to each candidate's own and ``Ĥ_t`` becomes informative. With the
defaults, per model (mean of the two seeds):

    ======================  ========  ======
    model                   one-shot  binary
    ======================  ========  ======
    SupSup                  89 %      96 %
    ExSSNeT                 72 %      98 %
    ExSSNeT without KKT     94 %      96 %
    ======================  ========  ======

Without a ``MultiHeadClassifier`` (the model's last layer is a supermask
layer, as in SupSup's GN experiments) the entropy of the model's output is used
and ``head_rule`` does not matter.

With two-class heads (Split MNIST / Fashion-MNIST with a head per task)
entropy does not identify the task: every task's two-class head is confident
on any input, whatever its task. On Split-FashionMNIST (MLP 784-256-256,
density 0.05, 4 epochs, test batches of 128, 5 tasks: chance 20 %) one-shot
inference picks the right task for 31 % (SupSup) and 20 % (ExSSNeT) of the
batches, binary for 23 % and 20 %, and running every task separately to take
the one of lowest entropy does hardly better (35 %, 24 %). SupSup's GN
experiments on SplitMNIST keep a shared ten-way output instead.

Per-task BatchNorm (:class:`~avalanche_ctr.exssnet.supermask.TaskBatchNorm`)
is superposed like the masks: ``BN_α(x) = Σ_t α_t BN_t(x)`` with each
``BN_t`` in evaluation mode (its running statistics), so a task's
normalisation comes with its mask and ``∂H/∂α_t`` includes its BatchNorm's
term. With one candidate this is exactly task ``t``'s network.

Side effects
------------
None on the model: inference runs in evaluation mode and gives every module
its training flag back, never selects a task (masked-weight caches, the
selected task and every ``requires_grad`` flag are left as they were), leaves
no ``.grad`` on any parameter (gradients are taken with
:func:`torch.autograd.grad` with respect to α and the superposed weights,
which are temporary tensors), and changes no parameter or buffer. Only the
finished tasks' stored masks are candidates; a task still in training is not.
The result is deterministic for a given batch (ties go to the earlier task).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import Tensor, nn

from avalanche_ctr.exssnet.supermask import SupermaskLayer, TaskBatchNorm
from avalanche_ctr.exssnet.supermask_net import SupermaskNet

__all__ = [
    "HEAD_RULES",
    "DEFAULT_HEAD_RULE",
    "METHODS",
    "InferenceRound",
    "TaskInference",
    "Prediction",
    "infer",
    "infer_task",
    "predict_without_task",
]

Method = Literal["one_shot", "binary"]
HeadRule = Literal["mean", "mixture", "logits"]

METHODS: tuple[str, ...] = ("one_shot", "binary")
"""Inference methods: SupSup's one-shot (Sec. 3.3) and binary (Sec. 3.4) algorithms."""

HEAD_RULES: tuple[str, ...] = ("mean", "mixture", "logits")
"""How per-task heads enter the entropy (see the module notes)."""

DEFAULT_HEAD_RULE: dict[str, str] = {"one_shot": "mean", "binary": "mixture"}
"""The head rule each method uses by default (the one that inferred best)."""


@dataclass(frozen=True)
class InferenceRound:
    """One forward and backward pass over a superposition of candidate tasks.

    :param candidates: task labels superposed with ``α_t = 1 / len(candidates)``.
    :param scores: ``-∂H/∂α_t`` for each candidate, in the order of ``candidates``:
        shape ``(T,)`` for the batch, or ``(B, T)`` with ``per_sample=True``.
    :param entropy: the objective ``H`` of this round, averaged over the batch.
    """

    candidates: tuple[int, ...]
    scores: Tensor
    entropy: float


@dataclass(frozen=True)
class TaskInference:
    """Result of :func:`infer`.

    :param task: the inferred task label of the batch.
    :param method: ``"one_shot"`` or ``"binary"``.
    :param rounds: the passes made: one for one-shot, ``⌈log2 T⌉`` for binary
        (none when a single task was learned and ``method="binary"``).
    :param sample_tasks: with ``per_sample=True``, the inferred task label of
        every sample (shape ``(B,)``); ``None`` otherwise.
    """

    task: int
    method: str
    candidates: tuple[int, ...]
    rounds: tuple[InferenceRound, ...]
    sample_tasks: Tensor | None = None

    @property
    def scores(self) -> Tensor:
        """``-∂H/∂α`` of the first round, with α uniform over every candidate
        (the one-shot scores; the larger, the likelier the task)."""
        if not self.rounds:
            return torch.zeros(len(self.candidates))
        return self.rounds[0].scores

    @property
    def entropy(self) -> float:
        """Objective ``H`` of the first round (α uniform over every candidate)."""
        return self.rounds[0].entropy if self.rounds else float("nan")


class Prediction(NamedTuple):
    """Result of :func:`predict_without_task`: the inferred task's logits and label."""

    logits: Tensor
    task: int


# ------------------------------------------------------------------ public API
def infer(
    model: SupermaskNet,
    x: Tensor,
    *,
    method: Method = "one_shot",
    per_sample: bool = False,
    tasks: Sequence[int] | None = None,
    head_rule: HeadRule | None = None,
) -> TaskInference:
    """Infer which learned task the mini-batch ``x`` comes from (SupSup, Sec. 3.3-3.4).

    :param model: a trained supermask network (e.g. ``strategy.model`` of
        :class:`~avalanche_ctr.training.ExSSNeT` or :class:`~avalanche_ctr.training.SupSup`).
    :param x: a mini-batch of inputs, all assumed to come from one task
        (``per_sample=True`` drops that assumption).
    :param method: ``"one_shot"`` (Sec. 3.3: one forward and backward pass) or
        ``"binary"`` (Sec. 3.4: halve the candidates ``⌈log2 T⌉`` times).
    :param per_sample: also infer one task per sample (one-shot only); the batch
        decision is unchanged.
    :param tasks: candidate task labels (default: every finished task, in
        training order).
    :param head_rule: how per-task heads enter the entropy: ``"mean"``,
        ``"mixture"`` or ``"logits"`` (see the module notes); ``None`` takes
        :data:`DEFAULT_HEAD_RULE` of the method.
    :raises ValueError: if the model learned no task yet, the batch is empty, or
        an argument is invalid; the message says how to fix it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    head_rule = DEFAULT_HEAD_RULE[method] if head_rule is None else head_rule
    if head_rule not in HEAD_RULES:
        raise ValueError(f"unknown head_rule {head_rule!r}; use one of {HEAD_RULES} or None")
    if per_sample and method != "one_shot":
        raise ValueError(
            "per_sample=True is only offered with method='one_shot': in the binary method "
            "every sample would keep its own candidate set; use method='one_shot' or "
            "per_sample=False"
        )
    candidates = _candidates(model, tasks)
    x = _check_batch(x)
    head = _output_head(model)
    with _inference_mode(model):
        if method == "one_shot":
            first = _round(model, x, candidates, head, head_rule, per_sample)
            task = candidates[_argmax(first.scores if not per_sample else first.scores.mean(0))]
            sample_tasks = None
            if per_sample:
                labels = torch.tensor(candidates, device=first.scores.device)
                sample_tasks = labels[first.scores.argmax(dim=1)]
            return TaskInference(task, method, candidates, (first,), sample_tasks)
        rounds = []
        remaining = candidates
        while len(remaining) > 1:
            step = _round(model, x, remaining, head, head_rule, per_sample=False)
            rounds.append(step)
            remaining = _top_half(remaining, step.scores)
        return TaskInference(remaining[0], method, candidates, tuple(rounds))


def infer_task(
    model: SupermaskNet,
    x: Tensor,
    *,
    method: Method = "one_shot",
    tasks: Sequence[int] | None = None,
    head_rule: HeadRule | None = None,
) -> int:
    """The task label inferred for the mini-batch ``x``; see :func:`infer`."""
    return infer(model, x, method=method, tasks=tasks, head_rule=head_rule).task


def predict_without_task(
    model: SupermaskNet,
    x: Tensor,
    *,
    method: Method = "one_shot",
    tasks: Sequence[int] | None = None,
    head_rule: HeadRule | None = None,
) -> Prediction:
    """Infer the task of the mini-batch ``x``, then classify it with that task's
    network and head.

    The logits are those of ``model(x, task)`` in evaluation mode (the model's
    own forward pass). The model's training flags are restored afterwards, and so
    are its mask caches and selected task where the model saves them
    (``eval_state`` / ``load_eval_state``).

    :return: ``Prediction(logits, task)``.
    """
    task = infer_task(model, x, method=method, tasks=tasks, head_rule=head_rule)
    save, load = getattr(model, "eval_state", None), getattr(model, "load_eval_state", None)
    saved = save() if save is not None and load is not None else None
    try:
        with _eval_mode(model), torch.no_grad():
            logits = model(x, task)
    finally:
        if saved is not None:
            load(saved)
    return Prediction(logits, task)


# ------------------------------------------------------------------ checks
def _candidates(model: SupermaskNet, tasks: Sequence[int] | None) -> tuple[int, ...]:
    if not isinstance(model, SupermaskNet):
        raise TypeError(
            f"task inference needs a SupermaskNet, got {type(model).__name__}; use the model "
            "of an ExSSNeT / SupSup strategy (strategy.model) or convert_to_supermask(model)"
        )
    trained = model.trained_tasks
    if not trained:
        raise ValueError(
            "the model has learned no task yet, so there is no task to infer; train it on at "
            "least one experience first (e.g. strategy.train(benchmark.train_stream[0]))"
        )
    if tasks is None:
        return tuple(trained)
    chosen = tuple(int(t) for t in tasks)
    if not chosen:
        raise ValueError(f"tasks is empty; pass some of the trained tasks {trained} or None")
    unknown = [t for t in chosen if t not in trained]
    if unknown:
        raise ValueError(
            f"tasks {unknown} were never trained by this model (trained tasks: {trained}); "
            "pass only trained task labels, or tasks=None for all of them"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"tasks has repeated labels: {list(chosen)}; list each task once")
    return chosen


def _check_batch(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor (a mini-batch of inputs), got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(
            f"x is an empty batch (shape {tuple(x.shape)}); pass a mini-batch with at least "
            "one sample, batch dimension first"
        )
    return x


def _output_head(model: SupermaskNet) -> MultiHeadClassifier | None:
    heads = model.heads
    if len(heads) > 1:
        raise ValueError(
            f"the model has {len(heads)} MultiHeadClassifier modules; task inference supports "
            "one, producing the model's output (or none, with a masked output layer)"
        )
    return heads[0] if heads else None


# ---------------------------------------------------------- model state
@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode inside; every module's own training flag restored after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextmanager
def _inference_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode, with autograd on even inside ``torch.no_grad()`` or
    ``torch.inference_mode()`` (as in Avalanche's evaluation loop)."""
    with _eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def _override(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Shadow a method with an instance attribute; the class's method comes back after."""
    missing = object()
    previous = obj.__dict__.get(name, missing)
    obj.__dict__[name] = value
    try:
        yield
    finally:
        if previous is missing:
            del obj.__dict__[name]
        else:
            obj.__dict__[name] = previous


# ------------------------------------------------------------- one round
def _round(
    model: SupermaskNet,
    x: Tensor,
    candidates: tuple[int, ...],
    head: MultiHeadClassifier | None,
    head_rule: str,
    per_sample: bool,
) -> InferenceRound:
    """Superpose ``candidates`` with uniform α, run ``x`` once and return ``-∂H/∂α``."""
    if x.is_inference():
        x = x.clone()
    layers = model.supermask_layers
    weights = [layer.weight.detach() for layer in layers]
    alpha = torch.full(
        (x.shape[0], len(candidates)),
        1.0 / len(candidates),
        device=weights[0].device,
        dtype=weights[0].dtype,
        requires_grad=True,
    )
    effective = _superposed_weights(model, weights, candidates)
    current = dict(zip(layers, effective, strict=True))
    seen: dict[SupermaskLayer, list[tuple[Tensor, Tensor]]] = {layer: [] for layer in layers}
    mixed: dict[str, Any] = {}
    with ExitStack() as stack:
        for layer in layers:
            stack.enter_context(_override(layer, "masked_weight", _weight_of(current, layer)))
            if per_sample:
                stack.enter_context(_recording(layer, seen[layer]))
        for bn in model.batchnorms:
            stack.enter_context(_override(bn, "forward", _mixed_batchnorm(bn, candidates, alpha)))
        if head is not None:
            # "mean" does not superpose the heads: α reaches them through the features only
            head_alpha = alpha.detach() if head_rule == "mean" else alpha
            forward = _mixed_head(head, candidates, head_alpha, mixed)
            stack.enter_context(_override(head, "forward", forward))
        if isinstance(model.net, MultiTaskModule):
            out = model.net(x, candidates[0])
        else:
            out = model.net(x)
        per_example = _objective(out, head, head_rule, mixed)
        if per_sample:
            grads = _sample_gradient(model, candidates, per_example.sum(), alpha, current, seen)
        else:
            grads = _batch_gradient(model, candidates, per_example.mean(), alpha, effective)
    return InferenceRound(candidates, -grads, float(per_example.detach().mean()))


def _superposed_weights(
    model: SupermaskNet, weights: list[Tensor], candidates: tuple[int, ...]
) -> list[Tensor]:
    """``W ⊙ Σ_t M_t / T`` per layer, as leaves that collect ``∂H/∂W_eff``; the masks
    are unpacked one task at a time."""
    counts = [torch.zeros_like(w) for w in weights]
    for task in candidates:
        for count, mask in zip(counts, model.task_masks(task), strict=True):
            count.add_(mask.to(count.dtype))
    return [
        (w * count.div_(len(candidates))).requires_grad_(True)
        for w, count in zip(weights, counts, strict=True)
    ]


def _batch_gradient(
    model: SupermaskNet,
    candidates: tuple[int, ...],
    objective: Tensor,
    alpha: Tensor,
    effective: list[Tensor],
) -> Tensor:
    """``∂H/∂α_t = Σ_layers ⟨∂H/∂W_eff, W ⊙ M_t⟩`` plus the BatchNorms' and heads'
    direct terms, shape ``(T,)``."""
    grads = torch.autograd.grad(objective, [alpha, *effective], allow_unused=True)
    result = _grad_or_zero(grads[0], alpha).sum(0)
    with torch.no_grad():
        products = [
            _grad_or_zero(g, w) * layer.weight
            for g, w, layer in zip(grads[1:], effective, model.supermask_layers, strict=True)
        ]
        for j, task in enumerate(candidates):
            for product, mask in zip(products, model.task_masks(task), strict=True):
                result[j] += product.mul(mask).sum()
    return result.detach()


def _sample_gradient(
    model: SupermaskNet,
    candidates: tuple[int, ...],
    objective: Tensor,
    alpha: Tensor,
    current: dict[SupermaskLayer, Tensor],
    seen: dict[SupermaskLayer, list[tuple[Tensor, Tensor]]],
) -> Tensor:
    """Per-sample ``∂H_i/∂α_t``, shape ``(B, T)``: for a layer with input ``a_i`` and
    output gradient ``δ_i``, ``⟨δ_i a_i^T, W ⊙ M_t⟩`` is ``δ_i`` dotted with the layer's
    output on ``a_i`` under task ``t``'s weights (one extra layer pass per task)."""
    layers = model.supermask_layers
    calls = [(index, inputs, y) for index, layer in enumerate(layers) for inputs, y in seen[layer]]
    grads = torch.autograd.grad(objective, [alpha, *(y for _, _, y in calls)], allow_unused=True)
    result = _grad_or_zero(grads[0], alpha).clone()
    with torch.no_grad():
        for j, task in enumerate(candidates):
            masks = model.task_masks(task)
            for (index, inputs, _), delta in zip(calls, grads[1:], strict=True):
                if delta is None:
                    continue
                layer = layers[index]
                current[layer] = layer.weight.detach() * masks[index]
                own = type(layer).forward(layer, inputs)
                result[:, j] += (delta * own).flatten(1).sum(1)
    return result.detach()


def _weight_of(current: dict[SupermaskLayer, Tensor], layer: SupermaskLayer) -> Callable:
    return lambda: current[layer]


@contextmanager
def _recording(layer: nn.Module, store: list[tuple[Tensor, Tensor]]) -> Iterator[None]:
    def hook(_module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        # the recorded output must not be changed by a later in-place op (ReLU(inplace=True))
        store.append((args[0].detach(), output))
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _grad_or_zero(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _per_sample(alpha: Tensor, j: int, like: Tensor) -> Tensor:
    """Column ``j`` of α shaped to broadcast over ``like`` (batch first)."""
    return alpha[:, j].view(-1, *([1] * (like.dim() - 1)))


def _mixed_batchnorm(bn: TaskBatchNorm, candidates: tuple[int, ...], alpha: Tensor) -> Callable:
    missing = [t for t in candidates if str(t) not in bn.per_task]
    if missing:
        raise ValueError(f"a TaskBatchNorm has no BatchNorm for tasks {missing}")

    def forward(x: Tensor) -> Tensor:
        total = None
        for j, task in enumerate(candidates):
            y = bn.per_task[str(task)](x)
            term = _per_sample(alpha, j, y) * y
            total = term if total is None else total + term
        return total

    return forward


def _own_classes(head: MultiHeadClassifier, task: int, width: int, device) -> Tensor:
    """Boolean ``(width,)``: the units of ``task``'s head that are its classes."""
    own = torch.ones(width, dtype=torch.bool, device=device)
    units = getattr(head, f"active_units_T{task}", None)
    if head.masking and units is not None and bool(units.any()):
        own.zero_()
        n = min(width, units.shape[0])
        own[:n] = units[:n].to(device=device, dtype=torch.bool)
    return own


def _mixed_head(
    head: MultiHeadClassifier, candidates: tuple[int, ...], alpha: Tensor, mixed: dict
) -> Callable:
    missing = [t for t in candidates if str(t) not in head.classifiers]
    if missing:
        raise ValueError(f"the MultiHeadClassifier has no head for tasks {missing}")

    def forward(features: Tensor, _task_labels: Any = None) -> Tensor:
        logits = [head.classifiers[str(task)](features) for task in candidates]
        width = max(z.shape[-1] for z in logits)
        owns = [
            _own_classes(head, t, z.shape[-1], z.device)
            for t, z in zip(candidates, logits, strict=True)
        ]
        total = features.new_zeros(features.shape[0], width)
        for j, (z, own) in enumerate(zip(logits, owns, strict=True)):
            total = total + _pad(_per_sample(alpha, j, z) * z * own, width)
        union = torch.zeros(width, dtype=torch.bool, device=total.device)
        for own in owns:
            union[: own.shape[0]] |= own
        mixed.update(output=total, logits=logits, owns=owns, union=union, alpha=alpha)
        return total

    return forward


def _pad(z: Tensor, width: int) -> Tensor:
    return z if z.shape[-1] == width else nn.functional.pad(z, (0, width - z.shape[-1]))


def _entropy(logits: Tensor, keep: Tensor | None = None) -> Tensor:
    """Per-sample entropy of ``softmax(logits)`` over the classes in ``keep``."""
    if keep is not None and not bool(keep.all()):
        logits = logits[:, keep]
    log_p = logits.log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def _objective(out: Tensor, head: MultiHeadClassifier | None, rule: str, mixed: dict) -> Tensor:
    """Per-sample objective ``H_i`` (see the module notes on heads)."""
    if head is None:
        return _entropy(out.flatten(1))
    if mixed.get("output") is not out:
        raise ValueError(
            "task inference needs the MultiHeadClassifier's output to be the model's output "
            "(the heads must be the model's last layer)"
        )
    if rule == "logits":
        return _entropy(out, mixed["union"])
    # Σ_t α_t Ĥ_t; for "mean" the α here are detached (uniform): the mean of the Ĥ_t
    total = out.new_zeros(out.shape[0])
    for j, (z, own) in enumerate(zip(mixed["logits"], mixed["owns"], strict=True)):
        n_classes = int(own.sum())
        if n_classes > 1:  # a one-class head is always sure: entropy 0
            total = total + mixed["alpha"][:, j] * _entropy(z, own) / math.log(n_classes)
    return total


def _argmax(scores: Tensor) -> int:
    """Index of the largest score, the earliest one among ties."""
    return int(torch.argmax(scores).item())


def _top_half(candidates: tuple[int, ...], scores: Tensor) -> tuple[int, ...]:
    """The ``⌈|S|/2⌉`` candidates with the largest scores, in their original order."""
    values = scores.tolist()
    order = sorted(range(len(candidates)), key=lambda j: (-values[j], j))
    keep = sorted(order[: math.ceil(len(candidates) / 2)])
    return tuple(candidates[j] for j in keep)
