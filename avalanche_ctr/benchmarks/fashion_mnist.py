"""Offline Fashion-MNIST streams from the Debian ``dataset-fashion-mnist`` package.

Avalanche's :func:`~avalanche.benchmarks.classic.SplitFMNIST` loads the data
through torchvision's :class:`~torchvision.datasets.FashionMNIST` with
``download=True``. torchvision skips the download when the four uncompressed
idx files are already in ``<root>/FashionMNIST/raw/``, so
:func:`prepare_fashion_mnist_root` puts them there from the gzipped copies
installed by ``apt-get install dataset-fashion-mnist``.

* :func:`SplitFashionMNIST` -- Avalanche's Split-FashionMNIST (2 classes per task);
* :func:`PermutedFashionMNIST` -- 10-way tasks, each with its own fixed pixel
  permutation, built as Avalanche's ``PermutedMNIST`` builds its stream (a task
  has all ten classes, so a supermask of a few per cent of the weights is a real
  bottleneck).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.benchmarks import GenericCLScenario, NCScenario, dataset_benchmark
from avalanche.benchmarks.classic import SplitFMNIST
from torch import Tensor
from torch.utils.data import Dataset

from avalanche_ctr.compat import task_labelled_dataset

__all__ = [
    "DEFAULT_DATA_ROOT",
    "DEFAULT_FASHION_MNIST_SOURCE",
    "SplitFashionMNIST",
    "PermutedFashionMNIST",
    "prepare_fashion_mnist_root",
]

DEFAULT_FASHION_MNIST_SOURCE = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the gzipped idx files."""

DEFAULT_DATA_ROOT = Path("~/.cache/avalanche_ctr/data")
"""Default dataset root used by :func:`SplitFashionMNIST` (``~`` is expanded)."""

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def prepare_fashion_mnist_root(
    root: str | Path, *, source: str | Path = DEFAULT_FASHION_MNIST_SOURCE
) -> Path:
    """Unpack the Debian Fashion-MNIST files into a torchvision-style dataset root.

    The four ``*-ubyte.gz`` files in ``source`` are decompressed into
    ``<root>/FashionMNIST/raw/``, which is all torchvision's
    :class:`~torchvision.datasets.FashionMNIST` checks before deciding not to
    download. Files already present are left untouched, so the call is cheap
    to repeat.

    :param root: Dataset root to pass as ``dataset_root`` to Avalanche's
        :func:`~avalanche.benchmarks.classic.SplitFMNIST`.
    :param source: Directory holding the gzipped idx files.
    :return: ``root`` as a :class:`~pathlib.Path`.
    :raises FileNotFoundError: If a needed source file is missing.
    """
    root = Path(root).expanduser()
    source = Path(source).expanduser()
    raw_dir = root / "FashionMNIST" / "raw"

    todo = [name for name in _IDX_FILES if not (raw_dir / name).is_file()]
    missing = [source / f"{name}.gz" for name in todo if not (source / f"{name}.gz").is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST source file(s) not found: {', '.join(map(str, missing))}. "
            "Install them with `apt-get install dataset-fashion-mnist` (or pass another "
            "`source`); with internet access you can instead let Avalanche download the "
            "data by calling avalanche.benchmarks.classic.SplitFMNIST directly."
        )

    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in todo:
        target = raw_dir / name
        # a file of this process's own: concurrent runs may unpack the same file
        handle, partial = tempfile.mkstemp(dir=raw_dir, prefix=f"{name}.", suffix=".part")
        try:
            with gzip.open(source / f"{name}.gz", "rb") as src, os.fdopen(handle, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return root


def SplitFashionMNIST(
    n_experiences: int = 5,
    *,
    dataset_root: str | Path | None = None,
    seed: int | None = 0,
    return_task_id: bool = True,
    class_ids_from_zero_in_each_exp: bool | None = None,
    source: str | Path = DEFAULT_FASHION_MNIST_SOURCE,
    **kwargs: Any,
) -> NCScenario:
    """Build Avalanche's Split-FashionMNIST offline from the Debian data files.

    :param n_experiences: Number of experiences (must divide 10).
    :param dataset_root: Dataset root; defaults to :data:`DEFAULT_DATA_ROOT`.
    :param seed: Seed for the class order.
    :param return_task_id: Task-incremental (task label = experience index) if
        True, the default.
    :param class_ids_from_zero_in_each_exp: Remap the classes of each
        experience to ``0..k-1``. Defaults to ``return_task_id``.
    :param source: Directory holding the gzipped idx files, see
        :func:`prepare_fashion_mnist_root`.
    :param kwargs: Further keyword arguments for
        :func:`~avalanche.benchmarks.classic.SplitFMNIST` (e.g. transforms).
    :return: An Avalanche :class:`~avalanche.benchmarks.NCScenario`.
    :raises FileNotFoundError: If the data are neither in ``dataset_root`` nor
        in ``source``.
    """
    if class_ids_from_zero_in_each_exp is None:
        class_ids_from_zero_in_each_exp = return_task_id
    root = prepare_fashion_mnist_root(
        DEFAULT_DATA_ROOT if dataset_root is None else dataset_root, source=source
    )
    return SplitFMNIST(
        n_experiences=n_experiences,
        return_task_id=return_task_id,
        class_ids_from_zero_in_each_exp=class_ids_from_zero_in_each_exp,
        seed=seed,
        dataset_root=root,
        **kwargs,
    )


_MEAN, _STD = 0.2860, 0.3530  # Avalanche's Fashion-MNIST normalisation


class _PermutedImages(Dataset):
    """One task of a permuted stream: 28x28 images whose pixels are reordered by a
    fixed permutation when read (the images are stored once, for every task), then
    normalised as Avalanche's Fashion-MNIST transforms do.

    :param images: uint8 tensor ``(N, 28, 28)``.
    :param targets: int64 tensor ``(N,)``.
    :param permutation: int64 tensor ``(784,)``.
    """

    def __init__(self, images: Tensor, targets: Tensor, permutation: Tensor) -> None:
        self.images = images.view(len(images), -1)
        self.targets = targets
        self.permutation = permutation

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        pixels = self.images[index][self.permutation].float().div_(255)
        return pixels.sub_(_MEAN).div_(_STD).view(1, 28, 28), int(self.targets[index])


def PermutedFashionMNIST(
    n_experiences: int = 10,
    *,
    dataset_root: str | Path | None = None,
    seed: int | None = 0,
    source: str | Path = DEFAULT_FASHION_MNIST_SOURCE,
    n_train: int | None = None,
) -> GenericCLScenario:
    """Permuted Fashion-MNIST, offline: ``n_experiences`` tasks of all 10 classes, task
    ``i`` with its own pixel permutation, task label ``i`` (task-incremental).

    Built like Avalanche's :func:`~avalanche.benchmarks.classic.PermutedMNIST`: the
    permutations come from ``numpy.random.RandomState(seed)``, every task is permuted,
    and each experience holds the whole training (test) set under its permutation.
    The images are kept once in memory (47 MB) and permuted when read, so 100 tasks
    cost little more memory than one. The stream is a ``dataset_benchmark`` of
    task-labelled datasets (:func:`avalanche_ctr.compat.task_labelled_dataset`), which
    builds far faster than ``PermutedMNIST``'s ``nc_benchmark``.

    :param n_experiences: number of tasks (at least 1; 100 works).
    :param dataset_root: dataset root; defaults to :data:`DEFAULT_DATA_ROOT`.
    :param seed: seed of the permutations (``None``: NumPy's global state).
    :param source: directory of the gzipped idx files
        (:func:`prepare_fashion_mnist_root`).
    :param n_train: keep this many training images (the same random ones in every
        task, drawn from a generator seeded by ``seed``); ``None`` keeps all 60,000.
        The test sets stay whole.
    :return: an Avalanche benchmark with ``train_stream`` and ``test_stream``.
    :raises ValueError: if ``n_experiences`` or ``n_train`` is below 1.
    :raises FileNotFoundError: if the data are neither in ``dataset_root`` nor in
        ``source``.
    """
    if not isinstance(n_experiences, int) or n_experiences < 1:
        raise ValueError(f"n_experiences must be a positive integer, got {n_experiences!r}")
    if n_train is not None and n_train < 1:
        raise ValueError(f"n_train must be a positive number of images or None, got {n_train}")
    from torchvision.datasets import FashionMNIST

    root = prepare_fashion_mnist_root(
        DEFAULT_DATA_ROOT if dataset_root is None else dataset_root, source=source
    )
    train = FashionMNIST(str(root), train=True, download=False)
    test = FashionMNIST(str(root), train=False, download=False)
    train_data, train_targets = train.data, train.targets
    if n_train is not None and n_train < len(train_targets):
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        kept = torch.randperm(len(train_targets), generator=generator)[:n_train].sort().values
        train_data, train_targets = train_data[kept], train_targets[kept]
    rng = np.random.RandomState(seed)
    trains, tests = [], []
    for task in range(n_experiences):
        permutation = torch.from_numpy(rng.permutation(28 * 28)).long()
        for data, targets, out in (
            (train_data, train_targets, trains),
            (test.data, test.targets, tests),
        ):
            images = _PermutedImages(data, targets, permutation)
            out.append(task_labelled_dataset(images, task, targets))
    return dataset_benchmark(trains, tests)
