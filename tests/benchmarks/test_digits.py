"""Tests for :func:`avalanche_ctr.benchmarks.SplitDigits`."""

import pytest
import torch

from avalanche_ctr.benchmarks import SplitDigits


def _targets(stream):
    return [sorted({int(t) for t in exp.dataset.targets}) for exp in stream]


def test_task_incremental_structure():
    bm = SplitDigits(n_experiences=5, seed=0)

    assert len(bm.train_stream) == len(bm.test_stream) == 5
    assert [exp.task_label for exp in bm.train_stream] == list(range(5))
    assert [exp.task_label for exp in bm.test_stream] == list(range(5))
    assert _targets(bm.train_stream) == [[0, 1]] * 5
    assert _targets(bm.test_stream) == [[0, 1]] * 5

    original = [set(classes) for classes in bm.original_classes_in_exp]
    assert all(len(classes) == 2 for classes in original)
    assert set().union(*original) == set(range(10))

    n_train = sum(len(exp.dataset) for exp in bm.train_stream)
    n_test = sum(len(exp.dataset) for exp in bm.test_stream)
    assert n_train + n_test == 1797

    x, y, t = bm.train_stream[0].dataset[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y in (0, 1) and t == 0


def test_deterministic_for_same_seed():
    a, b = SplitDigits(seed=3), SplitDigits(seed=3)

    assert a.original_classes_in_exp == b.original_classes_in_exp
    for exp_a, exp_b in zip(a.train_stream, b.train_stream, strict=True):
        xa = torch.stack([exp_a.dataset[i][0] for i in range(len(exp_a.dataset))])
        xb = torch.stack([exp_b.dataset[i][0] for i in range(len(exp_b.dataset))])
        assert torch.equal(xa, xb)
        assert list(exp_a.dataset.targets) == list(exp_b.dataset.targets)


def test_class_incremental_keeps_original_ids():
    bm = SplitDigits(n_experiences=2, return_task_id=False, fixed_class_order=range(10))

    assert [exp.task_label for exp in bm.train_stream] == [0, 0]
    assert _targets(bm.train_stream) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("n_experiences", [0, 3, 4, 11])
def test_bad_n_experiences(n_experiences):
    with pytest.raises(ValueError, match="must divide"):
        SplitDigits(n_experiences=n_experiences)
