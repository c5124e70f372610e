"""Benchmarks: the image ones build without network access; the text ones read local
files, or fetch and verify them first with ``download=True``.

* :func:`SplitDigits` -- task-incremental split of scikit-learn's 8x8 digits.
* :func:`SplitFashionMNIST` -- Avalanche's Split-FashionMNIST, fed from the
  Debian ``dataset-fashion-mnist`` files via :func:`prepare_fashion_mnist_root`.
* :func:`PermutedFashionMNIST` -- 10-way tasks with one pixel permutation each, from
  the same files.
* :func:`SplitMNIST1D` -- task-incremental split of MNIST-1D, generated offline by
  the ``mnist1d`` package.
* :func:`text_benchmark`, :func:`DSC`, :func:`ASC`, :func:`TwentyNews` --
  task-incremental text streams of the CTR paper, read from local files (fetched
  and verified with ``download=True``, :mod:`avalanche_ctr.benchmarks.download`)
  and tokenized with a HuggingFace tokenizer.
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
    TWENTY_NEWS_TASKS,
    DSCDomainError,
    TwentyNews,
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
    "TWENTY_NEWS_TASKS",
    "TwentyNews",
    "mnist1d_arrays",
    "prepare_fashion_mnist_root",
    "text_benchmark",
]
