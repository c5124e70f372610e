"""Benchmarks that build without network access.

* :func:`SplitDigits` -- task-incremental split of scikit-learn's 8x8 digits.
* :func:`SplitFashionMNIST` -- Avalanche's Split-FashionMNIST, fed from the
  Debian ``dataset-fashion-mnist`` files via :func:`prepare_fashion_mnist_root`.
* :func:`PermutedFashionMNIST` -- 10-way tasks with one pixel permutation each, from
  the same files.
* :func:`SplitMNIST1D` -- task-incremental split of MNIST-1D, generated offline by
  the ``mnist1d`` package.
* :func:`text_benchmark`, :func:`DSC`, :func:`ASC` -- task-incremental text
  streams of the CTR paper, read from local files and tokenized with a
  HuggingFace tokenizer.
"""

from avalanche_ctr.benchmarks.digits import SplitDigits
from avalanche_ctr.benchmarks.fashion_mnist import (
    PermutedFashionMNIST,
    SplitFashionMNIST,
    prepare_fashion_mnist_root,
)
from avalanche_ctr.benchmarks.mnist1d import SplitMNIST1D, mnist1d_arrays
from avalanche_ctr.benchmarks.text import (
    ASC,
    ASC_TASKS,
    DSC,
    DSC_DOMAINS,
    DSCDomainError,
    dsc_domains,
    text_benchmark,
)

__all__ = [
    "ASC",
    "ASC_TASKS",
    "DSC",
    "DSC_DOMAINS",
    "DSCDomainError",
    "dsc_domains",
    "PermutedFashionMNIST",
    "SplitDigits",
    "SplitFashionMNIST",
    "SplitMNIST1D",
    "mnist1d_arrays",
    "prepare_fashion_mnist_root",
    "text_benchmark",
]
