"""The random states as tensors and plain values: restored exactly, checked first."""

import random

import numpy as np
import pytest
import torch

from avalanche_ctr import random_state


def draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(1))


def test_restore_puts_back_every_generator_and_the_gaussian_caches():
    random.seed(3)
    np.random.seed(4)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's and NumPy's state
    np.random.randn()
    state = random_state.capture()
    expected = draws()
    draws()
    random_state.restore(state)
    again = draws()
    assert again[:4] == expected[:4] and torch.equal(again[4], expected[4])


def test_the_state_is_tensors_and_plain_values_only():
    state = random_state.capture()
    assert state["numpy"]["keys"].dtype == torch.int64 and state["numpy"]["keys"].shape == (624,)
    assert isinstance(state["python"]["internal"], tuple)
    assert all(type(v) is int for v in state["python"]["internal"])

    def leaves(value):
        if isinstance(value, dict):
            return [x for v in value.values() for x in leaves(v)]
        if isinstance(value, list | tuple):
            return [x for v in value for x in leaves(v)]
        return [value]

    assert {type(v) for v in leaves(state)} <= {torch.Tensor, int, float, str, type(None)}


@pytest.mark.parametrize(
    "part, value, error",
    [
        ("numpy", b"\x80\x04pickled", "the numpy random state is not an MT19937 state"),
        ("python", b"\x80\x04pickled", "the python random state is not a dict"),
        ("torch", [1, 2], "the torch random state is not a 1-d uint8 tensor"),
    ],
)
def test_a_malformed_state_is_refused_and_nothing_changes(part, value, error):
    state = random_state.capture()
    random.seed(7)
    before = random.getstate()
    with pytest.raises(ValueError, match=error):
        random_state.restore({**state, part: value})
    assert random.getstate() == before


def test_out_of_range_keys_are_refused():
    state = random_state.capture()
    state["numpy"]["keys"] = state["numpy"]["keys"] + 2**32
    with pytest.raises(ValueError, match="keys are not 624 32-bit integers"):
        random_state.check(state)
