"""Split-Digits: a tiny, download-free task-incremental benchmark.

The data are the 1,797 real 8x8 handwritten digits shipped with scikit-learn
(:func:`sklearn.datasets.load_digits`), so the benchmark builds in well under a
second and needs no network. It is meant for smoke tests, examples and CI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from avalanche.benchmarks import NCScenario, nc_benchmark
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from avalanche_ctr.benchmarks._tensors import TargetTensorDataset

__all__ = ["SplitDigits"]

_N_CLASSES = 10
_VALID_N_EXPERIENCES = tuple(n for n in range(1, _N_CLASSES + 1) if _N_CLASSES % n == 0)


def SplitDigits(
    n_experiences: int = 5,
    *,
    return_task_id: bool = True,
    seed: int | None = 0,
    fixed_class_order: Sequence[int] | None = None,
    class_ids_from_zero_in_each_exp: bool | None = None,
    test_fraction: float = 0.3,
    train_transform: Callable | None = None,
    eval_transform: Callable | None = None,
) -> NCScenario:
    """Create a Split-Digits benchmark from scikit-learn's 8x8 digits.

    Images are float32 tensors of shape ``(1, 8, 8)`` with pixel values in
    ``[0, 1]``; targets are int64. The 10 classes are split evenly across the
    experiences with Avalanche's :func:`~avalanche.benchmarks.nc_benchmark`.

    :param n_experiences: Number of experiences; must divide 10 (1, 2, 5 or 10).
    :param return_task_id: If True (default) the benchmark is task-incremental:
        the task label of each experience is its index. If False all task
        labels are 0 (class-incremental).
    :param seed: Seed for the class order and for the train/test split
        (``None`` uses the split seed 0 and PyTorch's global RNG for the class
        order).
    :param fixed_class_order: Explicit class order (overrides ``seed`` for the
        class order).
    :param class_ids_from_zero_in_each_exp: Remap the classes of each
        experience to ``0..k-1``. Defaults to ``return_task_id``.
    :param test_fraction: Fraction of the data held out (stratified) for the
        test stream.
    :param train_transform: Transform applied to training images.
    :param eval_transform: Transform applied to evaluation images.
    :return: An Avalanche :class:`~avalanche.benchmarks.NCScenario`.
    :raises ValueError: If ``n_experiences`` does not divide 10.
    """
    if n_experiences not in _VALID_N_EXPERIENCES:
        raise ValueError(
            f"n_experiences must divide the {_N_CLASSES} digit classes, i.e. be one of "
            f"{_VALID_N_EXPERIENCES}; got {n_experiences!r}."
        )
    if class_ids_from_zero_in_each_exp is None:
        class_ids_from_zero_in_each_exp = return_task_id

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    targets = torch.tensor(digits.target, dtype=torch.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        targets,
        test_size=test_fraction,
        stratify=targets,
        random_state=seed or 0,
    )

    return nc_benchmark(
        train_dataset=TargetTensorDataset(x_train, y_train),
        test_dataset=TargetTensorDataset(x_test, y_test),
        n_experiences=n_experiences,
        task_labels=return_task_id,
        seed=seed,
        fixed_class_order=fixed_class_order,
        class_ids_from_zero_in_each_exp=class_ids_from_zero_in_each_exp,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )
