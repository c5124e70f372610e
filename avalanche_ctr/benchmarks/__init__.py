"""Benchmarks that build without network access.

* :func:`SplitDigits` -- task-incremental split of scikit-learn's 8x8 digits.
* :func:`SplitFashionMNIST` -- Avalanche's Split-FashionMNIST, fed from the
  Debian ``dataset-fashion-mnist`` files via :func:`prepare_fashion_mnist_root`.
"""

from avalanche_ctr.benchmarks.digits import SplitDigits
from avalanche_ctr.benchmarks.fashion_mnist import SplitFashionMNIST, prepare_fashion_mnist_root

__all__ = ["SplitDigits", "SplitFashionMNIST", "prepare_fashion_mnist_root"]
