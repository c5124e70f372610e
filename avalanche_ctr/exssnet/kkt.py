"""KNN-based Knowledge Transfer (KKT; ExSSNeT, Yadav & Bansal, ACL Findings 2023,
Sec. 3.3).

Before learning task ``t``, a small sample of its training data is passed
through the network under each earlier task's mask, and a k-nearest-neighbour
classifier is scored on the features; the earlier task whose mask gives the
best KNN accuracy, if that accuracy beats chance, initialises task ``t``'s mask.

Departure from the official code: it fits the KNN on one half of the sample and
scores it on the other. We score it leave-one-out over the whole sample (each
sample is classified by its ``k`` nearest other samples), which uses every
sample as query and as reference and so ranks the earlier tasks with less
variance for the same sample size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avalanche_ctr.exssnet.supermask_net import SupermaskNet

__all__ = ["knn_accuracy", "KKTChoice", "select_source_task"]


def knn_accuracy(features: Tensor, labels: Tensor, *, k: int = 5) -> float:
    """Leave-one-out accuracy of a Euclidean k-nearest-neighbour majority vote
    (vote ties go to the lowest label)."""
    n = features.shape[0]
    if n < 2:
        raise ValueError("KKT needs at least 2 samples of the new task")
    distances = torch.cdist(features, features)
    distances.fill_diagonal_(float("inf"))
    neighbours = distances.topk(min(k, n - 1), largest=False).indices
    votes = labels[neighbours]
    counts = torch.zeros(n, int(labels.max()) + 1, device=votes.device)
    counts.scatter_add_(1, votes, torch.ones_like(votes, dtype=counts.dtype))
    return (counts.argmax(dim=1) == labels).float().mean().item()


@dataclass(frozen=True)
class KKTChoice:
    """Outcome of KKT: the chosen earlier task (``None``: none beat chance) and
    the KNN accuracy of every earlier task."""

    source: int | None
    accuracies: dict[int, float]
    chance: float


@torch.no_grad()
def select_source_task(
    model: SupermaskNet, x: Tensor, y: Tensor, *, n_classes: int, k: int = 5
) -> KKTChoice:
    """Pick the earlier task whose mask gives ``(x, y)`` the best KNN accuracy.

    :param model: supermask network with at least one finished task.
    :param x: a sample of the new task's training inputs.
    :param y: their labels (``0 .. n_classes - 1``).
    :param n_classes: number of classes of the new task; chance is ``1/n_classes``.
    :param k: neighbours of the KNN classifier.
    """
    was_training = model.training
    model.eval()
    accuracies = {}
    try:
        for task in model.trained_tasks:
            accuracies[task] = knn_accuracy(model.features(x, task), y, k=k)
    finally:
        model.train(was_training)
    chance = 1.0 / n_classes
    best = max(accuracies, key=accuracies.__getitem__) if accuracies else None
    source = best if best is not None and accuracies[best] > chance else None
    return KKTChoice(source=source, accuracies=accuracies, chance=chance)
