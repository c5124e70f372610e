"""Independent runs of ``compare`` in worker processes (``avalanche-ctr compare --jobs N``).

Each run (one strategy with one seed) seeds itself (:func:`~avalanche_ctr.experiments.
runner.run_one`), so it ends the same whichever process trains it: :func:`run_parallel`
hands the runs to a :class:`concurrent.futures.ProcessPoolExecutor` of ``jobs`` processes
started with ``spawn`` (a fresh interpreter each, so nothing of the parent's PyTorch state
is inherited). Each worker:

* is pinned to one device (:func:`worker_devices`): ``--device cuda`` spreads the workers
  round-robin over the visible GPUs, by making one of them each worker's current CUDA
  device (:func:`torch.cuda.set_device`), so the settings and hence every run's identity
  stay those of a sequential compare;
* uses ``threads`` intra-op threads (:func:`worker_threads`);
* sends its log lines to the parent, which writes them one whole line at a time, so the
  lines of concurrent runs never interleave; per-run progress bars are left out.

Resume works per run as in a sequential compare: a finished run's record is kept and an
interrupted one continues from its checkpoint, in whichever worker picks it up.

The workers die with their parent (:func:`die_with_parent`): a killed ``compare`` leaves no
process training and writing into ``--out``. The parent holds the folder's lock
(:func:`~avalanche_ctr.run_folder.lock_folder`), under which its workers run. A worker that
dies (killed, out of memory) stops the command with a :class:`WorkerError`; the repeated
command resumes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from avalanche_ctr.experiments.errors import UsageError

__all__ = ["WorkerError", "worker_devices", "worker_threads", "die_with_parent", "run_parallel"]

_POLL_S = 0.2
"""How often the parent passes on the workers' log lines while it waits, in seconds."""

_messages: Any = None
"""In a worker: the queue its log lines go to (set by :func:`_start_worker`)."""

_PR_SET_PDEATHSIG = 1
"""``prctl`` option of Linux: the signal a process receives when its parent dies."""


class WorkerError(RuntimeError):
    """A worker process of ``compare --jobs`` died; the message says how to resume."""


def worker_devices(device: str, jobs: int) -> list[str]:
    """The device each of ``jobs`` workers is pinned to.

    ``cuda`` without an index gives the visible GPUs round-robin (``cuda:0``, ``cuda:1``,
    ..., ``cuda:0``, ...); any other device (``cpu``, ``cuda:1``) is every worker's.

    :raises UsageError: if ``jobs`` is below 1, or ``cuda`` is asked for on a machine
        without a GPU.
    """
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    parsed = torch.device(device)
    if parsed.type != "cuda" or parsed.index is not None:
        return [device] * jobs
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UsageError(f"--device {device}: this machine has no CUDA device; use --device cpu")
    return [f"cuda:{i % count}" for i in range(jobs)]


def worker_threads(jobs: int, threads: int | None = None) -> int:
    """Intra-op threads per worker: ``threads`` when given, else this process's thread
    count shared out over the workers (at least 1 each)."""
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}")
        return threads
    return max(1, torch.get_num_threads() // jobs)


def run_parallel(
    run: Callable[..., dict[str, Any]],
    settings: Any,
    runs: Sequence[tuple[str, int]],
    *,
    out: Path,
    jobs: int,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Call ``run(settings, strategy, seed, out=out, progress=False, log=...)`` for every
    ``(strategy, seed)`` of ``runs`` in ``jobs`` worker processes; return the records in
    the order of ``runs``.

    :param run: a module-level function (it is sent to the workers by reference), e.g.
        :func:`~avalanche_ctr.experiments.runner.run_one`.
    :param threads: intra-op threads per worker (default: :func:`worker_threads`).
    :param log: receives every log line of every worker, in the parent process.
    :raises WorkerError: if a worker process died (killed, out of memory).
    :raises: the first error a run raised, once the runs in progress have stopped; the
        runs not started yet are cancelled.
    """
    devices = worker_devices(settings.device, jobs)
    per_worker = worker_threads(jobs, threads)
    context = multiprocessing.get_context("spawn")
    device_queue, messages = context.Queue(), context.Queue()
    for device in devices:
        device_queue.put(device)
    log(
        f"{len(runs)} runs in {jobs} worker processes ({per_worker} thread(s) each; "
        f"devices {', '.join(dict.fromkeys(devices))})"
    )
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_start_worker,
        initargs=(device_queue, messages, per_worker, os.getpid()),
    ) as pool:
        futures = [
            pool.submit(run, settings, name, seed, out=out, progress=False, log=_to_parent)
            for name, seed in runs
        ]
        try:
            _wait_all(futures, messages, log, total=len(runs))
        except BaseException as error:
            pool.shutdown(wait=True, cancel_futures=True)
            _pass_on(messages, log)
            if isinstance(error, BrokenProcessPool):
                finished = sum(f.done() and f.exception() is None for f in futures)
                raise WorkerError(
                    f"a worker process of compare --jobs {jobs} died (killed, or out of "
                    f"memory) with {len(runs) - finished} of {len(runs)} runs unfinished; "
                    "repeat the command to resume them from their checkpoints (finished "
                    "runs are kept)"
                ) from None
            raise
    _pass_on(messages, log)
    return [future.result() for future in futures]


def _wait_all(
    futures: list[Future], messages: Any, log: Callable[[str], None], *, total: int
) -> None:
    """Pass on log lines until every run has finished; raise the first run's error."""
    pending: set[Future] = set(futures)
    while pending:
        done, pending = wait(pending, timeout=_POLL_S, return_when=FIRST_COMPLETED)
        _pass_on(messages, log)
        for future in done:
            error = future.exception()
            if error is not None:
                raise error
        if done:
            log(f"{total - len(pending)}/{total} runs finished")


def _pass_on(messages: Any, log: Callable[[str], None]) -> None:
    while True:
        try:
            log(messages.get_nowait())
        except queue.Empty:
            return


def die_with_parent(parent: int) -> None:
    """End this process when its parent, the process ``parent``, ends: on Linux the
    kernel sends it ``SIGKILL`` (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread checks
    the parent's PID every second. Ends it at once if the parent has ended already."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was set up
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _start_worker(device_queue: Any, messages: Any, threads: int, parent: int) -> None:
    """Initialise a worker: tied to its parent's life (:func:`die_with_parent`), its
    threads, its device and its log queue. The parent has already shown qpsolvers'
    import-time warning (Avalanche imports it); the workers do not repeat it once each."""
    global _messages
    die_with_parent(parent)
    _messages = messages
    warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
    torch.set_num_threads(threads)
    device = torch.device(device_queue.get())
    if device.type == "cuda":
        torch.cuda.set_device(device)


def _to_parent(message: str) -> None:
    _messages.put(message)
