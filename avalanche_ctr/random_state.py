"""The random-number states of PyTorch (CPU and CUDA), NumPy and Python as one value,
for checkpoints and for evaluation that must not move them."""

from __future__ import annotations

import pickle
import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture", "restore"]


def capture() -> dict[str, Any]:
    """Every random state, as tensors and bytes (loadable with ``weights_only=True``)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": pickle.dumps(np.random.get_state()),
        "python": pickle.dumps(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Put back the states :func:`capture` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(pickle.loads(state["numpy"]))
    random.setstate(pickle.loads(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
