"""Data-parallel training of one run over several processes, launched by ``torchrun``.

Built on Avalanche's :data:`~avalanche.distributed.DistributedHelper`, with its
conventions (Avalanche's ``examples/distributed_training.py``): :func:`init_distributed`
initialises ``torch.distributed`` through it (gloo on CPU, nccl on GPU, one GPU per
rank), loggers and files belong to the main process (:func:`is_main_process`), and the
mini-batch is shared out over the processes: ``train_mb_size`` stays the *global*
mini-batch, and each of ``N`` ranks trains on about ``train_mb_size / N`` of its
samples.

Avalanche 0.6's templates do not wrap the model in ``DistributedDataParallel`` nor
average gradients: each rank would train its own model on its own data.
:class:`DistributedTraining` adds what is missing, as a plugin placed before every
plugin that changes gradients:

* **sharding**: each rank trains on its part of every global mini-batch, drawn as a
  single process draws it (:class:`~avalanche_ctr.compat.RankSlicedLoader`), and
  evaluates the whole of every experience (:func:`~avalanche_ctr.compat.unsharded_loader`),
  so every rank reports the metrics a single process does;
* **gradients**: after the backward pass the gradients of the parameters the optimizer
  updates are averaged over the ranks in one all-reduce, each rank weighted by its
  samples, so they equal the gradients of the global mini-batch's mean loss. The
  plugins that come later (ExSSNeT's and CTR's gradient masks, CTR's embedding-gradient
  compensation) and the optimizer's step then act on the averaged gradients, and the
  restore of frozen weights after the step is the same on every rank;
* **identical state**: the random-number states of rank 0 are sent to every rank
  before each experience and each epoch, so whatever is drawn from them (new task
  parameters, the data order, KKT's sample) is the same everywhere; at the start of
  each experience the parameters and buffers of rank 0 are broadcast, as
  ``DistributedDataParallel`` does when it wraps a model, and after each iteration the
  BatchNorm statistics of rank 0 are (``DistributedDataParallel``'s
  ``broadcast_buffers``). Everything else our plugins compute (supermask top-k, KKT's
  choice, HAT's annealed ``s`` and cumulative masks) is a deterministic function of
  that state, so it is identical on every rank without communication. Ranks other
  than 0 draw dropout from their own stream during an epoch, so their dropout masks
  differ from rank 0's.

Why not ``DistributedDataParallel``: it fixes its parameters when it wraps the model,
while our strategies add parameters with every task and change which ones train
between phases, and its wrapper hides the model's own methods that our plugins call.
Averaging the gradients in a hook is what ``DistributedDataParallel`` does during the
backward pass, at a point where the plugins' order guarantees that masking sees the
averaged gradients.
"""

from __future__ import annotations

import os
from itertools import chain

import torch
import torch.distributed as dist
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from torch import nn

from avalanche_ctr import random_state
from avalanche_ctr.compat import RankSlicedLoader, unsharded_loader

__all__ = [
    "DistributedError",
    "launched",
    "init_distributed",
    "finish_distributed",
    "is_distributed",
    "is_main_process",
    "barrier",
    "unsupported_plugins",
    "DistributedTraining",
]


class DistributedError(RuntimeError):
    """A distributed run that cannot work as set up; the message says what to change."""


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting ``LOCAL_RANK`` and
    ``WORLD_SIZE``) started this process as one of several."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str, *, seed: int = 0) -> bool:
    """Join the process group ``torchrun`` set up, if it did; return whether it did.

    The backend is gloo for ``device="cpu"`` and nccl for ``device="cuda"``, where each
    rank makes GPU ``rank`` its current CUDA device, so ``cuda`` means a different GPU
    in every process. A single process (``WORLD_SIZE`` 1 or unset) is left alone.

    :param device: ``cpu`` or ``cuda`` (without an index).
    :param seed: seeds every random-number generator (Avalanche's ``RNGManager``).
    :raises DistributedError: for a device with an index, or fewer GPUs than processes.
    """
    if not launched():
        return False
    parsed = torch.device(device)
    world_size = int(os.environ["WORLD_SIZE"])
    if parsed.type == "cuda":
        if parsed.index is not None:
            raise DistributedError(
                f"--device {device} under torchrun: give --device cuda, each process then "
                "uses its own GPU (GPU i for rank i)"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < world_size:
            fix = f"--nproc_per_node {count} or --device cpu" if count else "--device cpu"
            raise DistributedError(
                f"torchrun started {world_size} processes with --device cuda, one GPU each, "
                f"but this machine has {count} GPU(s); use {fix}"
            )
    elif parsed.type != "cpu":
        raise DistributedError(f"--device {device} under torchrun: use cpu or cuda")
    DistributedHelper.init_distributed(random_seed=seed, use_cuda=parsed.type == "cuda")
    return True


def finish_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether this process is one rank of an initialised process group."""
    return DistributedHelper.is_distributed


def is_main_process() -> bool:
    """Whether this process writes files and logs: rank 0, or the only process."""
    return DistributedHelper.is_main_process


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    DistributedHelper.barrier()


def unsupported_plugins(strategy) -> list[str]:
    """The class names of ``strategy``'s plugins that do not declare
    ``supports_distributed`` (Avalanche's flag)."""
    return [
        type(plugin).__name__
        for plugin in strategy.plugins
        if not getattr(plugin, "supports_distributed", False)
    ]


class DistributedTraining(SupervisedPlugin, supports_distributed=True):
    """Trains a strategy data-parallel over the ranks of the process group.

    Place it before every plugin that changes gradients (our strategies append their
    own plugin after those they are given, so pass it in ``plugins``). Outside a
    process group it does nothing. See the module's documentation for what it does.

    It keeps nothing across experiences, so checkpoints leave it out
    (``checkpoint_transient``, :func:`~avalanche_ctr.checkpoint.kept_plugins`): a run
    saved on any number of processes resumes on any other.

    :raises DistributedError: at the start of training, if a plugin that changes
        gradients (``after_backward``) comes before it.
    """

    checkpoint_transient = True

    def before_training(self, strategy, **kwargs) -> None:
        if not is_distributed():
            return
        for plugin in strategy.plugins:
            if plugin is self:
                return
            if type(plugin).after_backward is not SupervisedPlugin.after_backward:
                raise DistributedError(
                    f"{type(plugin).__name__} changes gradients after the backward pass "
                    "before DistributedTraining averages them over the ranks; put "
                    "DistributedTraining first in the strategy's plugins"
                )

    def before_training_exp(self, strategy, **kwargs) -> None:
        if is_distributed():
            _align_random_states()
            _shard(strategy)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if not is_distributed():
            return
        _align_random_states()
        _shard(strategy)  # a later plugin may have put its own loader in place
        if strategy.clock.train_exp_epochs == 0:
            _broadcast(chain(strategy.model.parameters(), strategy.model.buffers()))

    def before_training_iteration(self, strategy, **kwargs) -> None:
        rank = DistributedHelper.rank
        if is_distributed() and rank > 0 and strategy.clock.train_epoch_iterations == 0:
            # the epoch's data order is drawn: dropout may now differ from rank 0's
            torch.manual_seed(int(torch.randint(0, 2**62, ())) + rank)

    def after_backward(self, strategy, **kwargs) -> None:
        if is_distributed():
            _average_gradients(strategy)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        if is_distributed():
            _broadcast(
                buffer
                for module in strategy.model.modules()
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
                for buffer in module.buffers(recurse=False)
            )

    def before_eval_exp(self, strategy, **kwargs) -> None:
        if is_distributed():
            strategy.dataloader = unsharded_loader(strategy.dataloader)


def _align_random_states() -> None:
    """Give every rank the random-number states of rank 0."""
    state = DistributedHelper.broadcast_object(random_state.capture())
    if not is_main_process():
        random_state.restore(state)


def _shard(strategy) -> None:
    if not isinstance(strategy.dataloader, RankSlicedLoader):
        strategy.dataloader = RankSlicedLoader(
            strategy.dataloader, DistributedHelper.rank, DistributedHelper.world_size
        )


@torch.no_grad()
def _broadcast(tensors) -> None:
    for tensor in tensors:
        DistributedHelper.broadcast(tensor.data)


@torch.no_grad()
def _average_gradients(strategy) -> None:
    """Replace each gradient by the sample-weighted mean of the ranks' gradients (the
    gradient of the global mini-batch's mean loss), in one all-reduce."""
    params = [
        p
        for group in strategy.optimizer.param_groups
        for p in group["params"]
        if p.grad is not None
    ]
    counts = strategy.dataloader.counts
    count = float(counts[strategy.clock.train_epoch_iterations])
    device = params[0].grad.device if params else strategy.device
    grads = [p.grad.reshape(-1) for p in params]
    flat = torch.cat([*grads, torch.ones(1, device=device)]).mul_(count)
    dist.all_reduce(flat)
    total = flat[-1]
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad).div_(total))
        offset += n
