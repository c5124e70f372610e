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
different numbers of classes are comparable (a uniform guess scores 1). Four
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

* ``"superfluous"``: SupSup's ``G`` objective (Sec. 3.3, "superfluous
  neurons"; ``se_oneshot_g_minimization`` in the official code) for heads with
  more units than classes (``MultiHeadClassifier(in_features,
  initial_out_features=N, masking=False)``; the command line's
  ``--head-units N``). Training pushes a task's unused units down on its own
  inputs; ``G = logsumexp(z)`` of the superposed logits ``z = Σ_t α_t z_t``
  with every head's real classes held constant, so ``∂G/∂α_t`` asks how much
  task ``t``'s subnetwork and head lower the superfluous units. The classes a
  task was trained on are stored with its mask
  (:meth:`~avalanche_ctr.exssnet.supermask_net.SupermaskNet.task_classes`).
  Default (:func:`default_head_rule`) whenever every candidate's head has
  superfluous units, as in SupSup's SplitMNIST setting (10 units for 2 classes).

Where the gradient methods fail: split streams
----------------------------------------------
With two-class tasks of one dataset (Split MNIST / Fashion-MNIST) the model's
output does not identify the task: every task's subnetwork is confident on any
Fashion-MNIST input, whatever its task. Measured on Split-FashionMNIST (MLP
784-256-256, density 0.05, 4 epochs, test batches of 128, 5 tasks: chance 20 %;
``benchmarks/RESULTS.md``), one-shot and binary inference pick the right task
for 20-40 % of the batches with every head rule. The exhaustive oracle, which
runs every task's network and takes the one of lowest entropy or, with 10-unit
heads, of lowest ``G``, does no better (``benchmarks/task_inference_rules.py
--oracle`` at commit b1a7712): no approximation of the gradient can beat the objective it
approximates.

The statistics method (ours)
----------------------------
``method="statistics"`` does not use the network. While a task trains, its first
epoch records sufficient statistics of its inputs
(:func:`~avalanche_ctr.exssnet.supermask_net.input_sums`: per class the count
and the sum of the flattened inputs, and the sum of squares; ``(C+1)·(D+1)``
float64 numbers per task, stored with the task's mask only when
``input_statistics=True`` or ``task_inference="statistics"``). At test time
every input feature is standardised by the within-class variance pooled over
the candidate tasks (plus :data:`VARIANCE_FLOOR` of its mean), and the batch is
given to the task whose class means' convex hull is nearest to the batch's mean
input (:func:`hull_distance`). A batch of one task is a mixture of that task's
classes, so its mean lies near that hull whatever its class proportions:
Avalanche evaluates experiences in dataset order, where a test batch of 128 is
often one class, while shuffled batches mix the classes. Measured on the data
alone over four seeds (``benchmarks/task_inference_rules.py`` at commit b1a7712), the hull
distance picks the right task for every batch in both orders; the nearest class
mean does too in dataset order but falls to 44-89 % on shuffled batches, and a
per-class diagonal-Gaussian likelihood of the batch falls to 89 % in dataset
order on one seed.
It does not run the network: its cost is the hull distance's fixed number of
small ``C × C`` steps per batch, whatever the model's size (the measured cost
against labelled evaluation is in ``benchmarks/RESULTS.md``,
``benchmarks/task_inference_cost.py``). It is a departure from SupSup, which
stores nothing but masks; it identifies the task from the inputs' first
moments, so two tasks over inputs with the same class means (e.g. the same
images with different labels) cannot be told apart by it.

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
from avalanche.evaluation import GenericPluginMetric, Metric
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import Tensor, nn

from avalanche_ctr.exssnet.supermask import SupermaskLayer, TaskBatchNorm
from avalanche_ctr.exssnet.supermask_net import SupermaskNet
from avalanche_ctr.masking import apply_mask

__all__ = [
    "HEAD_RULES",
    "DEFAULT_HEAD_RULE",
    "METHODS",
    "default_head_rule",
    "InferenceRound",
    "TaskInference",
    "Prediction",
    "infer",
    "infer_task",
    "predict_without_task",
    "class_statistics",
    "hull_distance",
    "TaskInferenceAccuracy",
    "ExperienceTaskInference",
    "StreamTaskInference",
    "task_inference_metrics",
]

Method = Literal["one_shot", "binary", "statistics"]
HeadRule = Literal["mean", "mixture", "logits", "superfluous"]

METHODS: tuple[str, ...] = ("one_shot", "binary", "statistics")
"""Inference methods: SupSup's one-shot (Sec. 3.3) and binary (Sec. 3.4) algorithms,
and the input-statistics rule (ours; see the module notes)."""

VARIANCE_FLOOR = 0.1
"""The statistics method standardises every input feature by its within-class
variance plus this fraction of the mean variance, so that nearly constant
features (an image's border) do not dominate the distance."""

HULL_ITERATIONS = 100
"""Accelerated projected-gradient steps of :func:`hull_distance`. On the class means of
scikit-learn's digits, 100 steps leave a relative error of 2e-4 in the distance (200:
6e-6) and never changed which hull is nearest."""

HEAD_RULES: tuple[str, ...] = ("mean", "mixture", "logits", "superfluous")
"""How per-task heads enter the entropy (see the module notes)."""

DEFAULT_HEAD_RULE: dict[str, str] = {"one_shot": "mean", "binary": "mixture"}
"""The head rule each method uses by default when the heads have no superfluous
units (the one that inferred best); with superfluous units the default is
``"superfluous"`` (see :func:`default_head_rule`)."""


@dataclass(frozen=True)
class InferenceRound:
    """One forward and backward pass over a superposition of candidate tasks.

    :param candidates: task labels superposed with ``α_t = 1 / len(candidates)``.
    :param scores: ``-∂H/∂α_t`` for each candidate, in the order of ``candidates``:
        shape ``(T,)`` for the batch, or ``(B, T)`` with ``per_sample=True``.
    :param entropy: the objective ``H`` (or ``G``) of this round, averaged over the
        batch; NaN for the statistics method, whose scores are minus the hull
        distances.
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
    :param method: ``"one_shot"`` (Sec. 3.3: one forward and backward pass),
        ``"binary"`` (Sec. 3.4: halve the candidates ``⌈log2 T⌉`` times) or
        ``"statistics"`` (the likelihood of the inputs under each task's stored
        input statistics; no pass through the network).
    :param per_sample: also infer one task per sample (one-shot only); the batch
        decision is unchanged.
    :param tasks: candidate task labels (default: every finished task, in
        training order).
    :param head_rule: how per-task heads enter the objective: ``"mean"``,
        ``"mixture"``, ``"logits"`` or ``"superfluous"`` (see the module notes);
        ``None`` takes :func:`default_head_rule`.
    :raises ValueError: if the model learned no task yet, the batch is empty, or
        an argument is invalid; the message says how to fix it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if head_rule is not None and head_rule not in HEAD_RULES:
        raise ValueError(f"unknown head_rule {head_rule!r}; use one of {HEAD_RULES} or None")
    if per_sample and method == "binary":
        raise ValueError(
            "per_sample=True is not offered with method='binary': every sample would keep "
            "its own candidate set; use method='one_shot' or 'statistics', or per_sample=False"
        )
    candidates = _candidates(model, tasks)
    x = _check_batch(x)
    if method == "statistics":
        return _by_statistics(model, x, candidates, per_sample)
    head = _output_head(model)
    if head_rule is None:
        head_rule = default_head_rule(model, method, candidates)
    elif head_rule == "superfluous":
        _check_superfluous(model, head, candidates)
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


def default_head_rule(
    model: SupermaskNet, method: Method = "one_shot", tasks: Sequence[int] | None = None
) -> str:
    """The head rule :func:`infer` uses when given none: ``"superfluous"`` when every
    candidate task's head has superfluous units (an unmasked head wider than the
    classes the task was trained on), else :data:`DEFAULT_HEAD_RULE` of the method."""
    candidates = _candidates(model, tasks)
    head = _output_head(model)
    if head is not None and all(_superfluous_units(model, head, t).any() for t in candidates):
        return "superfluous"
    return DEFAULT_HEAD_RULE[method]


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


def _by_statistics(
    model: SupermaskNet, x: Tensor, candidates: tuple[int, ...], per_sample: bool
) -> TaskInference:
    """The candidate whose class means' convex hull is nearest to the batch's mean
    input (see the module notes)."""
    flat = x.detach().flatten(1).to(torch.float64)
    stats = []
    for task in candidates:
        sums = model.input_sums(task)
        if sums is None:
            raise ValueError(
                f"task {task} has no stored input statistics, so method='statistics' cannot "
                "score it; record them while training (ExSSNeTPlugin(input_statistics=True), "
                "or task_inference='statistics' on the ExSSNeT / SupSup strategy), or use "
                "method='one_shot' or 'binary'"
            )
        if sums.shape[1] - 1 != flat.shape[1]:
            raise ValueError(
                f"the batch has {flat.shape[1]} input features per sample but task {task} "
                f"stored statistics of {sums.shape[1] - 1}; pass inputs of the training shape"
            )
        stats.append(class_statistics(sums.to(flat.device)))
    total = sum(n for _, _, n in stats)
    pooled = sum(within * n for _, within, n in stats) / total
    scale = (pooled + VARIANCE_FLOOR * pooled.mean() + 1e-12).rsqrt()
    points = (flat if per_sample else flat.mean(0, keepdim=True)) * scale
    widest = max(means.shape[0] for means, _, _ in stats)
    hulls = torch.stack(
        [torch.cat([means, means[:1].expand(widest - len(means), -1)]) for means, _, _ in stats]
    )
    scores = -hull_distance(points, hulls * scale)
    task = candidates[_argmax(scores.mean(0))]
    sample_tasks = None
    if per_sample:
        sample_tasks = torch.tensor(candidates, device=scores.device)[scores.argmax(dim=1)]
    step = InferenceRound(candidates, (scores if per_sample else scores[0]).float(), float("nan"))
    return TaskInference(task, "statistics", candidates, (step,), sample_tasks)


def class_statistics(sums: Tensor) -> tuple[Tensor, Tensor, float]:
    """From a task's input sums (:func:`~avalanche_ctr.exssnet.supermask_net.input_sums`):
    the mean input of each class it saw (``(C, D)``), the within-class variance of
    every feature (``(D,)``) and the number of inputs."""
    counts = sums[:-1, 0]
    seen = counts > 0
    means = sums[:-1, 1:][seen] / counts[seen, None]
    n = float(sums[-1, 0])
    within = (sums[-1, 1:] - (counts[seen, None] * means**2).sum(0)) / n
    return means, within.clamp_min(0.0), n


def hull_distance(points: Tensor, vertices: Tensor) -> Tensor:
    """Mean squared distance per feature of each point (``(B, D)``) to the convex hull
    of ``vertices`` (``(C, D)``; or ``(T, C, D)`` for ``T`` hulls at once, giving
    ``(B, T)``): ``min_w ‖p - wᵀV‖² / D`` over the probability simplex, by
    :data:`HULL_ITERATIONS` accelerated projected-gradient (FISTA) steps of size
    ``1/L`` (``L`` the largest eigenvalue of ``VVᵀ``) from the hull's centroid, on
    the ``C × C`` Gram matrix. Hulls with fewer vertices can be padded by repeating one of theirs,
    which leaves the hull unchanged."""
    single = vertices.dim() == 2
    sets = vertices[None] if single else vertices
    gram = sets @ sets.transpose(1, 2)  # (T, C, C)
    step = 1.0 / torch.linalg.matrix_norm(gram, ord=2).clamp_min(1e-12)[:, None, None]
    target = torch.einsum("bd,tcd->tbc", points, sets)  # (T, B, C)
    n_sets, n_vertices = sets.shape[0], sets.shape[1]
    weights = points.new_full((n_sets, points.shape[0], n_vertices), 1.0 / n_vertices)
    if n_vertices > 1:
        # FISTA (Beck & Teboulle, 2009): projected gradient with Nesterov momentum
        ahead, momentum = weights, 1.0
        for _ in range(HULL_ITERATIONS):
            moved = ahead - step * (ahead @ gram - target)
            new = _simplex_projection(moved.flatten(0, 1)).view_as(weights)
            following = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            ahead = new + ((momentum - 1) / following) * (new - weights)
            weights, momentum = new, following
    # ‖p - wᵀV‖² = ‖p‖² - 2 wᵀ(Vp) + wᵀ G w, without forming wᵀV
    squared = (
        points.pow(2).sum(1)[None]
        - 2 * (weights * target).sum(2)
        + ((weights @ gram) * weights).sum(2)
    )
    distance = squared.clamp_min(0.0).T / points.shape[1]  # (B, T)
    return distance[:, 0] if single else distance


def _simplex_projection(v: Tensor) -> Tensor:
    """Each row of ``v`` projected onto the probability simplex (Duchi et al., ICML
    2008, Fig. 1)."""
    u, _ = v.sort(dim=1, descending=True)
    cumulative = u.cumsum(dim=1) - 1
    k = torch.arange(1, v.shape[1] + 1, dtype=v.dtype, device=v.device)
    last = ((u - cumulative / k) > 0).to(v.dtype).cumsum(dim=1).argmax(dim=1, keepdim=True)
    theta = cumulative.gather(1, last) / (last + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)


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


def _superfluous_units(model: SupermaskNet, head: MultiHeadClassifier, task: int) -> Tensor:
    """Boolean ``(width,)``: the units of ``task``'s head that it was never trained to
    predict (none for a masked head, whose other units are constant)."""
    width = head.classifiers[str(task)].classifier.out_features
    extra = torch.zeros(width, dtype=torch.bool)
    classes = model.task_classes(task)
    if head.masking or not classes:
        return extra
    extra[:] = True
    extra[[c for c in classes if c < width]] = False
    return extra


def _check_superfluous(
    model: SupermaskNet, head: MultiHeadClassifier | None, candidates: tuple[int, ...]
) -> None:
    lacking = (
        list(candidates)
        if head is None
        else [t for t in candidates if not _superfluous_units(model, head, t).any()]
    )
    if lacking:
        raise ValueError(
            f"head_rule='superfluous' needs per-task heads with superfluous units, and the "
            f"heads of tasks {lacking} have none; build the model with "
            "MultiHeadClassifier(in_features, initial_out_features=N, masking=False) with N "
            "larger than the classes per task (e.g. 10 for two-class tasks), or use another "
            "head_rule"
        )


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
            if head_rule == "superfluous":
                mixed["superfluous"] = [_superfluous_units(model, head, t) for t in candidates]
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
                current[layer] = apply_mask(layer.weight.detach(), masks[index])
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
    if rule == "superfluous":
        return _superfluous_objective(mixed)
    # Σ_t α_t Ĥ_t; for "mean" the α here are detached (uniform): the mean of the Ĥ_t
    total = out.new_zeros(out.shape[0])
    for j, (z, own) in enumerate(zip(mixed["logits"], mixed["owns"], strict=True)):
        n_classes = int(own.sum())
        if n_classes > 1:  # a one-class head is always sure: entropy 0
            total = total + mixed["alpha"][:, j] * _entropy(z, own) / math.log(n_classes)
    return total


def _superfluous_objective(mixed: dict) -> Tensor:
    """SupSup's ``G`` objective (Sec. 3.3, "superfluous neurons"), per sample:
    ``logsumexp`` of the superposed logits ``z = Σ_t α_t z_t`` with the real
    classes' logits held constant, so that ``∂G/∂α_t`` is the softmax-weighted
    change of the superfluous units only. Every task's head was trained to push
    its superfluous units down on its own inputs, so the task whose subnetwork and
    head lower them most is the likeliest."""
    alpha = mixed["alpha"]
    width = max(z.shape[-1] for z in mixed["logits"])
    total = None
    for j, (z, extra) in enumerate(zip(mixed["logits"], mixed["superfluous"], strict=True)):
        term = _per_sample(alpha, j, z) * z
        keep = extra.to(device=z.device, dtype=z.dtype)
        term = _pad(term * keep + (term * (1 - keep)).detach(), width)
        total = term if total is None else total + term
    return total.logsumexp(dim=1)


def _argmax(scores: Tensor) -> int:
    """Index of the largest score, the earliest one among ties."""
    return int(torch.argmax(scores).item())


def _top_half(candidates: tuple[int, ...], scores: Tensor) -> tuple[int, ...]:
    """The ``⌈|S|/2⌉`` candidates with the largest scores, in their original order."""
    values = scores.tolist()
    order = sorted(range(len(candidates)), key=lambda j: (-values[j], j))
    keep = sorted(order[: math.ceil(len(candidates) / 2)])
    return tuple(candidates[j] for j in keep)


# ------------------------------------------------------------ Avalanche metrics
class TaskInferenceAccuracy(Metric[float]):
    """Fraction of evaluated samples whose inferred task is their true task."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.count = 0

    def update(self, n_correct: int, n_samples: int) -> None:
        self.correct += n_correct
        self.count += n_samples

    def result(self) -> float:
        """The fraction; 0 before any inferred mini-batch."""
        return self.correct / self.count if self.count else 0.0


class _TaskInferencePluginMetric(GenericPluginMetric[float, TaskInferenceAccuracy]):
    def __init__(self, reset_at: str, emit_at: str) -> None:
        super().__init__(TaskInferenceAccuracy(), reset_at=reset_at, emit_at=emit_at, mode="eval")

    def reset(self) -> None:
        self._metric.reset()

    def result(self) -> float:
        return self._metric.result()

    def update(self, strategy) -> None:
        for plugin in strategy.plugins:
            inference = getattr(plugin, "last_inference", None)
            if inference is not None:
                self._metric.update(inference.n_correct, len(inference.true_tasks))
                return

    def _package_result(self, strategy) -> list:
        # nothing inferred (inference off, or no task finished yet): nothing to report
        return super()._package_result(strategy) if self._metric.count else []


class ExperienceTaskInference(_TaskInferencePluginMetric):
    """Task-inference accuracy of each evaluated experience
    (``TaskInference_Acc_Exp``): the fraction of its samples whose mini-batch was
    assigned its true task. Emitted only when evaluation inferred tasks
    (``task_inference`` of :class:`~avalanche_ctr.exssnet.lifecycle.ExSSNeTPlugin`)."""

    def __init__(self) -> None:
        super().__init__(reset_at="experience", emit_at="experience")

    def __str__(self) -> str:
        return "TaskInference_Acc_Exp"


class StreamTaskInference(_TaskInferencePluginMetric):
    """Task-inference accuracy over the evaluated stream (``TaskInference_Acc_Stream``)."""

    def __init__(self) -> None:
        super().__init__(reset_at="stream", emit_at="stream")

    def __str__(self) -> str:
        return "TaskInference_Acc_Stream"


def task_inference_metrics(*, experience: bool = False, stream: bool = False) -> list:
    """Plugin metrics for an ``EvaluationPlugin``, like ``accuracy_metrics``."""
    metrics: list = []
    if experience:
        metrics.append(ExperienceTaskInference())
    if stream:
        metrics.append(StreamTaskInference())
    return metrics
