"""``compare --jobs N``: the runs go to worker processes and end exactly as in a
sequential compare; a second call resumes per run; ``--device cuda`` spreads the
workers over the visible GPUs; the workers die with their parent, and a killed worker
is one error line."""

import csv
import json
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import torch

from avalanche_ctr.cli import main
from avalanche_ctr.experiments.errors import UsageError
from avalanche_ctr.experiments.parallel import worker_devices, worker_threads
from avalanche_ctr.experiments.runner import run_paths

ARGS = [
    "compare",
    "--strategies",
    "exssnet",
    "--seeds",
    "0,1",
    "--n-experiences",
    "2",
    "--epochs",
    "1",
    "--hidden-size",
    "16",
    "--threads",
    "1",
    "--no-progress",
]
# what a run learned; the other columns of results.csv are measurements of this machine
# (train time, peak memory, iteration time), which no two runs repeat
LEARNED = ("final_accuracy", "final_macro_f1", "forgetting", "bwt", "fwt", "bytes_per_task")
RECORDED = ("initial_acc", "initial_f1", "acc_matrix", "f1_matrix", "stored_bytes", "iterations")


def rows(out) -> list[dict]:
    with open(out / "results.csv") as handle:
        return list(csv.DictReader(handle))


def learned(out) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k in ("strategy", "seeds") or k.startswith(LEARNED)}
        for row in rows(out)
    ]


def records(out) -> list[dict]:
    runs = json.loads((out / "runs.json").read_text())["runs"]
    return [{key: run[key] for key in ("strategy", "seed", *RECORDED)} for run in runs]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    sequential, parallel = tmp_path_factory.mktemp("jobs1"), tmp_path_factory.mktemp("jobs2")
    main([*ARGS, "--out", str(sequential)])
    main([*ARGS, "--jobs", "2", "--out", str(parallel)])
    return sequential, parallel


def test_jobs_2_gives_the_numbers_of_jobs_1(both):
    sequential, parallel = both
    assert learned(parallel) == learned(sequential)
    assert records(parallel) == records(sequential)
    assert len(rows(parallel)) == 1 and set(rows(parallel)[0]) == set(rows(sequential)[0])


def test_jobs_2_resumes_each_run(both, capsys):
    _, parallel = both
    before = records(parallel)
    # seed 1 as if killed after its last checkpoint, before its record was written
    checkpoint, record = run_paths(parallel, "exssnet", 1)
    record.unlink()
    assert checkpoint.is_file()
    main([*ARGS, "--jobs", "2", "--out", str(parallel)])
    out = capsys.readouterr().out
    assert "exssnet seed 0: finished earlier, kept" in out
    assert "exssnet seed 1: resuming after experience 2 of 2" in out
    assert "2/2 runs finished" in out
    assert records(parallel) == before


def test_cuda_spreads_the_workers_over_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker_devices("cuda", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]
    assert worker_devices("cpu", 2) == ["cpu", "cpu"]


def test_worker_threads_share_the_cores_or_take_threads(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert worker_threads(4) == 4
    assert worker_threads(32) == 1
    assert worker_threads(4, threads=2) == 2


def test_bad_jobs_names_the_problem(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="no CUDA device; use --device cpu"):
        worker_devices("cuda", 2)
    with pytest.raises(SystemExit, match="--jobs must be at least 1, got 0"):
        main([*ARGS, "--jobs", "0", "--out", str(tmp_path)])


KILLED = [*ARGS, "--seeds", "0,1,2,3", "--epochs", "3", "--jobs", "2"]


def start_compare(out, log) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """``compare --jobs 2`` in a new process, once a worker wrote a checkpoint; with its
    worker processes."""
    parent = subprocess.Popen(
        [sys.executable, "-m", "avalanche_ctr.cli", *KILLED, "--out", str(out)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("checkpoints/*.pt")):
        assert parent.poll() is None, "compare ended before a worker wrote a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    children = psutil.Process(parent.pid).children(recursive=True)
    workers = [p for p in children if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2
    return parent, children


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    def running(process: psutil.Process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return [p for p in processes if running(p)]


def test_the_workers_die_with_their_killed_parent(tmp_path):
    with open(tmp_path / "log", "w") as log:
        parent, children = start_compare(tmp_path / "out", log)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(children), [p.cmdline() for p in alive(children)]


def test_a_killed_worker_is_one_error_line_and_the_repeated_command_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    ended: list[BaseException] = []

    def compare_here() -> None:
        try:
            main([*KILLED, "--out", str(out)])
        except BaseException as error:  # what the command line's caller gets
            ended.append(error)

    thread = threading.Thread(target=compare_here)
    thread.start()
    deadline = time.monotonic() + 120
    while not list(out.glob("checkpoints/*.pt")):
        assert thread.is_alive() and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    worker = next(p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline()))
    worker.send_signal(signal.SIGKILL)
    thread.join(timeout=60)
    (error,) = ended
    assert isinstance(error, SystemExit)
    assert re.fullmatch(
        r"avalanche-ctr: error: a worker process of compare --jobs 2 died \(killed, or out of "
        r"memory\) with [1-4] of 4 runs unfinished; repeat the command to resume them from "
        r"their checkpoints \(finished runs are kept\)",
        str(error),
    ), str(error)
    assert "Traceback" not in capsys.readouterr().out
    main([*KILLED, "--out", str(out)])
    assert "4/4 runs finished" in capsys.readouterr().out
    assert len(json.loads((out / "runs.json").read_text())["runs"]) == 4
    assert not list(out.rglob("*.tmp"))
