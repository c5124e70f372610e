"""The random-number states of PyTorch (CPU and CUDA), NumPy and Python as one value,
for checkpoints and for evaluation that must not move them.

The value holds tensors and plain numbers only, so that a checkpoint keeps it
without pickling and :func:`restore` can check every part before using it:

* ``torch``: ``torch.get_rng_state()`` (a ``uint8`` tensor), and ``cuda`` likewise;
* ``numpy``: the legacy global ``MT19937`` state, its 624 keys as an ``int64`` tensor
  and its position and Gaussian cache as plain numbers;
* ``python``: ``random.getstate()`` -- its version, a tuple of 625 ints and the
  Gaussian cache (``None`` or a float).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture", "restore", "check"]

_MT_KEYS = 624


def capture() -> dict[str, Any]:
    """Every random state, as tensors and plain values (see the module's docstring)."""
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "algorithm": str(algorithm),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(version),
            "internal": tuple(int(v) for v in internal),
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _byte_tensor(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
        raise ValueError(f"{what} is not a 1-d uint8 tensor")
    return value


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} is not an int in [{low}, {high}]")
    return value


def check(state: Any) -> None:
    """Raise ``ValueError`` naming the first part of ``state`` that is not what
    :func:`capture` returns (types, shapes and ranges)."""
    if not isinstance(state, dict) or not {"torch", "numpy", "python"} <= set(state):
        raise ValueError("the random state is not a dict with torch, numpy and python states")
    _byte_tensor(state["torch"], "the torch random state")
    if "cuda" in state and not (
        isinstance(state["cuda"], list | tuple)
        and all(_byte_tensor(s, "a CUDA random state") is not None for s in state["cuda"])
    ):
        raise ValueError("the CUDA random states are not a list of tensors")
    numpy = state["numpy"]
    if not isinstance(numpy, dict) or numpy.get("algorithm") != "MT19937":
        raise ValueError("the numpy random state is not an MT19937 state")
    keys = numpy.get("keys")
    if not (
        isinstance(keys, torch.Tensor)
        and keys.dtype == torch.int64
        and tuple(keys.shape) == (_MT_KEYS,)
        and bool(((keys >= 0) & (keys < 2**32)).all())
    ):
        raise ValueError(f"the numpy random state's keys are not {_MT_KEYS} 32-bit integers")
    _integer(numpy.get("pos"), "the numpy random state's position", 0, _MT_KEYS)
    _integer(numpy.get("has_gauss"), "the numpy random state's has_gauss", 0, 1)
    if not isinstance(numpy.get("cached_gaussian"), float):
        raise ValueError("the numpy random state's cached Gaussian is not a float")
    python = state["python"]
    if not isinstance(python, dict):
        raise ValueError("the python random state is not a dict")
    _integer(python.get("version"), "the python random state's version", 3, 3)
    internal = python.get("internal")
    if not (
        isinstance(internal, tuple)
        and len(internal) == _MT_KEYS + 1
        and all(not isinstance(v, bool) and isinstance(v, int) for v in internal)
        and all(0 <= v < 2**32 for v in internal[:-1])
        and 0 <= internal[-1] <= _MT_KEYS
    ):
        raise ValueError(f"the python random state is not a tuple of {_MT_KEYS + 1} ints")
    if python.get("gauss_next") is not None and not isinstance(python["gauss_next"], float):
        raise ValueError("the python random state's gauss_next is neither None nor a float")


def restore(state: dict[str, Any]) -> None:
    """Put back the states :func:`capture` returned (checked first with :func:`check`:
    ``ValueError`` and nothing changed if any part is malformed)."""
    check(state)
    numpy, python = state["numpy"], state["python"]
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        (
            numpy["algorithm"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    random.setstate((python["version"], python["internal"], python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
