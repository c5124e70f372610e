"""What the command line measures besides the metrics: time, memory, stored bytes,
and a progress bar.

* :class:`IterationTimer` -- wall time of every training iteration (forward,
  backward, every plugin's hooks and the optimizer step; not data loading);
* :class:`ProgressBar` -- a tqdm bar over the iterations of each experience;
* :class:`PeakMemory` -- peak memory of a block: the peak resident set size above
  the level at its start on CPU (Linux), ``torch.cuda.max_memory_allocated`` on CUDA;
* :func:`stored_bytes` -- bytes a strategy keeps to learn and serve its tasks:
  the model's state and whatever its plugins hold (copies of parameters,
  importance weights, earlier models, replay buffers).
"""

from __future__ import annotations

import ctypes
import re
import time
from pathlib import Path
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from avalanche_ctr.compat import held_data

__all__ = ["IterationTimer", "ProgressBar", "PeakMemory", "stored_bytes"]


class IterationTimer(SupervisedPlugin, supports_distributed=True):
    """Wall time of each training iteration, in seconds, per experience (``times``)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[list[float]] = []
        self._start = 0.0

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.times.append([])

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.times[-1].append(time.perf_counter() - self._start)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the times measured so far."""
        return {"times": [list(times) for times in self.times]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.times = [[float(t) for t in times] for times in state["times"]]


class ProgressBar(SupervisedPlugin, supports_distributed=True):
    """A tqdm bar over the training iterations of each experience.

    :param label: shown before the experience counter (e.g. ``"ewc seed 0"``).
    :param n_experiences: experiences in the stream.

    Checkpoints leave it out (``checkpoint_transient``): under torchrun only rank 0
    shows bars, and a run saved with bars resumes with ``--no-progress``.
    """

    checkpoint_transient = True

    def __init__(self, label: str, n_experiences: int) -> None:
        super().__init__()
        self.label = label
        self.n_experiences = n_experiences
        self._bar = None

    def before_training_exp(self, strategy, **kwargs) -> None:
        from tqdm.auto import tqdm

        index = strategy.clock.train_exp_counter
        self._bar = tqdm(
            total=len(strategy.dataloader) * strategy.train_epochs,
            desc=f"{self.label} experience {index + 1}/{self.n_experiences}",
            unit="it",
            leave=False,
            dynamic_ncols=True,
        )

    def after_training_iteration(self, strategy, **kwargs) -> None:
        if self._bar is not None:
            self._bar.update()

    def after_training_exp(self, strategy, **kwargs) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class PeakMemory:
    """Peak memory of a ``with`` block, in bytes (``peak``).

    On CUDA devices: ``torch.cuda.max_memory_allocated`` (reset at the start).
    On CPU: the process's peak resident set size (``VmHWM``, reset through
    ``/proc/self/clear_refs``) minus its resident size at the start, after freed
    heap memory has been handed back (``malloc_trim``); ``None`` where Linux's
    ``/proc`` is not available.

    :param device: the device the block computes on.
    """

    _STATUS = Path("/proc/self/status")

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.peak: int | None = None
        self._base = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self._proc_ok():
            _trim_heap()
            Path("/proc/self/clear_refs").write_text("5")
            self._base = self._status("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._proc_ok():
            self.peak = max(0, self._status("VmHWM") - self._base)

    def _proc_ok(self) -> bool:
        return self._STATUS.exists() and Path("/proc/self/clear_refs").exists()

    def _status(self, field: str) -> int:
        match = re.search(rf"{field}:\s+(\d+) kB", self._STATUS.read_text())
        return int(match.group(1)) * 1024 if match else 0


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def stored_bytes(strategy) -> int:
    """Bytes a strategy stores: the tensors of its model's state dict plus every
    tensor, module and dataset its plugins (and a ``Cumulative`` strategy's
    ``dataset``) hold, each tensor counted once. A dataset counts as its length
    times the size of its first input.
    """
    seen: set[tuple[int, int]] = set()
    total = _tensor_bytes(strategy.model.state_dict().values(), seen)
    held = [p for p in strategy.plugins if not _is_bookkeeping(p)]
    held.extend(held_data(strategy).values())
    return total + _walk(held, seen, set(), depth=0)


def _is_bookkeeping(plugin) -> bool:
    from avalanche.training.plugins import EvaluationPlugin

    return isinstance(plugin, (EvaluationPlugin, IterationTimer, ProgressBar))


def _tensor_bytes(tensors, seen: set) -> int:
    total = 0
    for tensor in tensors:
        key = (tensor.data_ptr(), tensor.numel())
        if key not in seen and tensor.numel():
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def _walk(obj, seen: set, visited: set, depth: int) -> int:
    if obj is None or depth > 6 or id(obj) in visited:
        return 0
    visited.add(id(obj))
    if isinstance(obj, Tensor):
        return _tensor_bytes([obj], seen)
    if isinstance(obj, nn.Module):
        return _tensor_bytes(obj.state_dict().values(), seen)
    if isinstance(obj, torch.optim.Optimizer) or _is_loader(obj):
        return 0
    if _is_dataset(obj):
        return _dataset_bytes(obj)
    if isinstance(obj, dict):
        return sum(_walk(v, seen, visited, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(_walk(v, seen, visited, depth + 1) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(_walk(v, seen, visited, depth + 1) for v in vars(obj).values())
    return 0


def _is_loader(obj) -> bool:
    """Data loaders and their iterators only point at datasets counted elsewhere."""
    module = type(obj).__module__
    return module.startswith("torch.utils.data.dataloader") or module.startswith(
        "avalanche.benchmarks.utils.data_loader"
    )


def _is_dataset(obj) -> bool:
    from avalanche.benchmarks.utils import AvalancheDataset

    return isinstance(obj, (torch.utils.data.Dataset, AvalancheDataset))


def _dataset_bytes(dataset) -> int:
    if len(dataset) == 0:
        return 0
    first = dataset[0]
    x = first[0] if isinstance(first, (tuple, list)) else first
    per_sample = x.numel() * x.element_size() if isinstance(x, Tensor) else 0
    return len(dataset) * per_sample
