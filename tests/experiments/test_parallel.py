"""``compare --jobs N``: the runs go to worker processes and end exactly as in a
sequential compare; a second call resumes per run; ``--device cuda`` spreads the
workers over the visible GPUs."""

import csv
import json

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
