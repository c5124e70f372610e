"""Tests for :func:`avalanche_ctr.benchmarks.SplitMNIST1D`."""

import random

import numpy as np
import pytest
import torch

from avalanche_ctr.benchmarks import SplitMNIST1D, mnist1d_arrays


def test_task_incremental_split_of_the_standard_mnist1d():
    bm = SplitMNIST1D(5, seed=0, num_samples=500)
    assert [exp.task_label for exp in bm.train_stream] == list(range(5))
    for stream in (bm.train_stream, bm.test_stream):
        assert [sorted({int(t) for t in e.dataset.targets}) for e in stream] == [[0, 1]] * 5
    assert set().union(*map(set, bm.original_classes_in_exp)) == set(range(10))
    assert sum(len(e.dataset) for e in bm.train_stream) == 400  # 80 % of 500
    x, y, t = bm.train_stream[0].dataset[0]
    assert x.shape == (40,) and x.dtype == torch.float32 and t == 0
    # the data do not depend on the run seed, only the class order does
    other = SplitMNIST1D(5, seed=1, num_samples=500)
    assert bm.original_classes_in_exp != other.original_classes_in_exp
    assert np.array_equal(mnist1d_arrays(500)["x"], mnist1d_arrays(500)["x"])


def test_building_draws_nothing_from_the_global_generators():
    np.random.seed(7)
    random.seed(7)
    expected = np.random.rand(), random.random()
    np.random.seed(7)
    random.seed(7)
    mnist1d_arrays(100)
    assert (np.random.rand(), random.random()) == expected


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="must divide the 10"):
        SplitMNIST1D(3)
    with pytest.raises(ValueError, match="num_samples must be at least 20"):
        mnist1d_arrays(10)
