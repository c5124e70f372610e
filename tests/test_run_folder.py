"""The run folder (``--out``): a full disk at any write, a damaged or edited file, a
second command on the same folder, a file where a folder belongs: each gives one
error line or a stated rebuild, and the repeated command ends as an uninterrupted one.
``avalanche-ctr verify`` reports every damaged file."""

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from avalanche_ctr import files
from avalanche_ctr.cli import main
from avalanche_ctr.run_folder import (
    LOCK_NAME,
    DamagedFile,
    lock_folder,
    read_record,
    write_digested_json,
)

ARGS = [
    "run",
    "--strategy",
    "naive",
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
RECORD = ("runs", "naive-seed0.json")
CHECKPOINT = ("checkpoints", "naive-seed0.pt")
# what a run learned; train time, peak memory and iteration time are measurements
LEARNED = ("final_accuracy", "final_macro_f1", "forgetting", "bwt", "fwt", "bytes_per_task")
RECORDED = ("initial_acc", "initial_f1", "acc_matrix", "f1_matrix", "stored_bytes", "iterations")


def learned(out) -> list[dict]:
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in row.items() if k.startswith(LEARNED)} for row in rows]


def recorded(out) -> list[dict]:
    runs = json.loads((out / "runs.json").read_text())["runs"]
    return [{key: run[key] for key in RECORDED} for run in runs]


def error_of(argv) -> str:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    message = str(caught.value)
    assert message.startswith("avalanche-ctr: error: ") and "\n" not in message
    return message


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run, uninterrupted."""
    out = tmp_path_factory.mktemp("finished")
    main([*ARGS, "--out", str(out)])
    return out


@pytest.fixture
def copy(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


# ----------------------------------------------------------------------------- digests
@pytest.mark.parametrize(
    "content, reason",
    [
        (lambda good: good[: len(good) // 2], "not JSON"),
        (lambda good: b"", "empty"),
        (lambda good: b"{oops", "not JSON"),
        (lambda good: b"[1, 2]", "a JSON list, not an object"),
        (lambda good: b'{"identity": {}, "digest": "sha256:00"}', "no 'record'"),
        (lambda good: b'{"identity": {}, "record": {}}', "no 'digest'"),
        (lambda good: b"\xff\xfe" + good, "not UTF-8"),
        (lambda good: good.replace(b"0.75", b"0.95"), "digest does not match its content"),
    ],
    ids=["truncated", "empty", "not-json", "list", "no-record", "no-digest", "binary", "edited"],
)
def test_a_damaged_record_is_refused_with_its_reason(content, reason, tmp_path):
    path = tmp_path / "record.json"
    write_digested_json(path, {"identity": {"seed": 0}, "record": {"acc": [0.75, 0.5]}})
    assert read_record(path)["record"] == {"acc": [0.75, 0.5]}
    path.write_bytes(content(path.read_bytes()))
    with pytest.raises(DamagedFile, match=f"{path} is damaged \\(.*{reason}"):
        read_record(path)


def test_an_edited_record_is_rebuilt_from_its_checkpoint(copy, finished, capsys):
    path = copy.joinpath(*RECORD)
    saved = json.loads(path.read_text())
    saved["record"]["acc_matrix"][-1][0] = 1.0
    saved["record"]["summary"]["final_accuracy"] = 0.99
    path.write_text(json.dumps(saved))  # the digest is the original one
    main([*ARGS, "--out", str(copy)])
    assert (
        f"naive seed 0: {path} is damaged (its digest does not match its content: edited or "
        f"corrupted); rebuilt it from its checkpoint {copy.joinpath(*CHECKPOINT)}"
    ) in capsys.readouterr().out
    assert learned(copy) == learned(finished)
    assert recorded(copy) == recorded(finished)
    assert read_record(path)["record"]["acc_matrix"] == recorded(finished)[0]["acc_matrix"]


def test_a_damaged_record_without_its_checkpoint_names_the_files_to_delete(copy):
    copy.joinpath(*RECORD).write_bytes(b"")
    copy.joinpath(*CHECKPOINT).unlink()
    message = error_of([*ARGS, "--out", str(copy)])
    record = copy.joinpath(*RECORD)
    assert f"{record} is damaged (empty), and its checkpoint cannot rebuild it" in message
    assert f"delete {record} to train the run again" in message


# ----------------------------------------------------------------------------- full disk
class FullDisk:
    """``open`` of :mod:`avalanche_ctr.files` whose ``count``-th write of ``target`` fills
    the disk half way through."""

    def __init__(self, target: str, count: int) -> None:
        self.target, self.count, self.real = target, count, open

    def __call__(self, path, *args, **kwargs):
        handle = self.real(path, *args, **kwargs)
        if not os.path.basename(path).startswith(f".{self.target}."):
            return handle
        self.count -= 1
        if self.count:
            return handle
        write = handle.write

        def fails(data):
            write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = fails
        return handle


@pytest.mark.parametrize(
    "target, count, repeat",
    [
        ("naive-seed0.pt", 2, "resuming after experience 1 of 2"),
        ("naive-seed0.json", 1, "resuming after experience 2 of 2"),
        ("runs.json", 1, "finished earlier, kept"),
        ("results.md", 1, "finished earlier, kept"),
    ],
    ids=["checkpoint", "record", "runs.json", "report"],
)
def test_a_full_disk_at_any_write_then_a_repeat_ends_as_an_uninterrupted_run(
    target, count, repeat, finished, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    monkeypatch.setattr(files, "open", FullDisk(target, count), raising=False)
    message = error_of([*ARGS, "--out", str(out)])
    monkeypatch.undo()
    assert "no space left on the device; free some space" in message
    assert target in message
    assert not list(out.rglob("*.tmp"))
    capsys.readouterr()
    main([*ARGS, "--out", str(out)])
    assert f"naive seed 0: {repeat}" in capsys.readouterr().out
    assert learned(out) == learned(finished)
    assert recorded(out) == recorded(finished)
    assert main(["verify", str(out)]) == 0


# ----------------------------------------------------------------------------- lock
HOLD = (
    "import sys, time\n"
    "from avalanche_ctr.run_folder import lock_folder\n"
    "with lock_folder(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


def holder(out, seconds: float = 60.0) -> subprocess.Popen:
    """Another process holding the lock of ``out``."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_command_on_a_folder_is_refused_and_a_dead_holders_lock_taken_over(
    tmp_path, capsys
):
    out = tmp_path / "out"
    process = holder(out)
    try:
        message = error_of([*ARGS, "--out", str(out)])
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert f"{out} is in use by another avalanche-ctr command (process {process.pid})" in message
    assert not out.joinpath(*RECORD).exists()
    main([*ARGS, "--out", str(out)])
    assert (
        f"{out}: taking over the lock of process {process.pid}, which ended without releasing it"
    ) in capsys.readouterr().out
    assert out.joinpath(*RECORD).is_file()
    assert (out / LOCK_NAME).read_text() == ""  # released at the end


def test_the_lock_is_reentrant_and_a_child_of_its_holder_runs_under_it(tmp_path):
    with lock_folder(tmp_path, log=print), lock_folder(tmp_path, log=print):
        child = holder(tmp_path, seconds=0)  # a worker of compare --jobs
        assert child.wait() == 0
    process = holder(tmp_path, seconds=0)  # released: anyone can take it
    assert process.wait() == 0


def test_taking_the_lock_removes_the_temporaries_of_stopped_writers(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = ended.pid
    stale = tmp_path / "checkpoints" / f".naive-seed0.pt.{dead}.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half a checkpoint")
    messages = []
    with lock_folder(tmp_path, log=messages.append):
        assert not stale.exists()
    assert messages == [f"removed {stale}, a temporary file left by a process that was stopped"]


# ----------------------------------------------------------------------------- errors
def out_is_a_file(out):
    out.write_text("x")


def runs_is_a_file(out):
    out.mkdir()
    (out / "runs").write_text("x")


def record_is_a_folder(out):
    out.joinpath(*RECORD).mkdir(parents=True)


def checkpoint_is_not_a_zip(out):
    out.joinpath(*CHECKPOINT).parent.mkdir(parents=True)
    out.joinpath(*CHECKPOINT).write_bytes(b"not a zip")


@pytest.mark.parametrize(
    "damage, message",
    [
        (out_is_a_file, "{out} is a file where avalanche-ctr keeps a folder"),
        (runs_is_a_file, "{out}/runs is a file where avalanche-ctr keeps a folder"),
        (
            record_is_a_folder,
            "{out}/runs/naive-seed0.json is a folder where avalanche-ctr keeps a file",
        ),
        (
            checkpoint_is_not_a_zip,
            "checkpoint {out}/checkpoints/naive-seed0.pt is not a checkpoint file (not a zip "
            "archive); delete it to start the run over",
        ),
    ],
    ids=["out-is-a-file", "runs-is-a-file", "record-is-a-folder", "checkpoint-not-a-zip"],
)
def test_a_misplaced_or_foreign_file_is_one_error_line(damage, message, tmp_path):
    out = tmp_path / "out"
    damage(out)
    assert message.format(out=out) in error_of([*ARGS, "--out", str(out)])


def test_a_read_only_folder_is_one_error_line(tmp_path, monkeypatch):
    from avalanche_ctr import run_folder

    def read_only(path, *args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(run_folder.os, "open", read_only)
    message = error_of([*ARGS, "--out", str(tmp_path)])
    assert f"cannot write {tmp_path / LOCK_NAME}: read-only file system; make the folder " in (
        message
    )


def test_other_ranks_under_torchrun_run_under_rank_0s_lock(tmp_path, monkeypatch):
    from avalanche_ctr.experiments import runner
    from avalanche_ctr.experiments.runner import Settings, run_one

    process = holder(tmp_path)  # rank 0
    try:
        monkeypatch.setattr(runner, "is_main_process", lambda: False)
        record = run_one(
            Settings(benchmark="split_digits", n_experiences=2, epochs=1, hidden_size=16),
            "naive",
            0,
            out=tmp_path,
            progress=False,
            log=print,
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(record["acc_matrix"]) == 2
    assert not tmp_path.joinpath(*RECORD).exists()  # rank 0 writes the files


# ----------------------------------------------------------------------------- verify
def test_verify_passes_a_whole_folder_and_reports_each_damaged_file(copy, capsys):
    assert main(["verify", str(copy)]) == 0
    assert "no problem" in capsys.readouterr().out
    record = copy.joinpath(*RECORD)
    record.write_bytes(record.read_bytes().replace(b'"seed": 0', b'"seed": 1', 1))
    checkpoint = copy.joinpath(*CHECKPOINT)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    runs = copy / "runs.json"
    runs.write_bytes(runs.read_bytes()[:-20])
    assert main(["verify", str(copy)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"checkpoint {checkpoint} is ")
    assert lines[1] == (
        f"{record} is damaged (its digest does not match its content: edited or corrupted); "
        f"delete it and checkpoints/naive-seed0.pt to train the run again"
    )
    assert lines[2].startswith(f"{runs} is damaged (not JSON")
    assert lines[3] == f"{copy}: 3 problem(s) in 1 records, 1 checkpoints, 1 runs.json"
