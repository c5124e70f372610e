"""A tensor dataset that Avalanche's benchmark builders accept."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

__all__ = ["TargetTensorDataset"]


class TargetTensorDataset(TensorDataset):
    """A :class:`~torch.utils.data.TensorDataset` of ``(inputs, targets)`` exposing the
    ``targets`` field Avalanche's ``nc_benchmark`` reads.

    :param inputs: float tensor, one row per example.
    :param targets: int64 tensor of shape ``(N,)``.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        super().__init__(inputs, targets)
        self.targets = targets
