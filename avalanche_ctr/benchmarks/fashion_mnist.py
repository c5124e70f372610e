"""Offline Split-FashionMNIST from the Debian ``dataset-fashion-mnist`` package.

Avalanche's :func:`~avalanche.benchmarks.classic.SplitFMNIST` loads the data
through torchvision's :class:`~torchvision.datasets.FashionMNIST` with
``download=True``. torchvision skips the download when the four uncompressed
idx files are already in ``<root>/FashionMNIST/raw/``, so
:func:`prepare_fashion_mnist_root` puts them there from the gzipped copies
installed by ``apt-get install dataset-fashion-mnist``.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

from avalanche.benchmarks import NCScenario
from avalanche.benchmarks.classic import SplitFMNIST

__all__ = [
    "DEFAULT_DATA_ROOT",
    "DEFAULT_FASHION_MNIST_SOURCE",
    "SplitFashionMNIST",
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
        partial = raw_dir / f"{name}.part"
        with gzip.open(source / f"{name}.gz", "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(partial, target)
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
