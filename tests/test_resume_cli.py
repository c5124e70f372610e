"""``avalanche-ctr run`` killed with SIGKILL after its first checkpoint and started again
with the same command ends with the metrics of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from _text_helpers import save_tiny_encoder, write_dsc

CLI = [sys.executable, "-m", "avalanche_ctr.cli", "run", "--no-progress", "--threads", "1"]


def run(args, out):
    return subprocess.run(
        [*CLI, *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def kill_after_first_checkpoint(args, out, checkpoint):
    process = subprocess.Popen(
        [*CLI, *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert process.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def final_runs(out):
    runs = json.loads((out / "runs.json").read_text())["runs"]
    return {(r["strategy"], r["seed"]): r for r in runs}


def check_resume(args, name, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = run(args, whole)
    assert done.returncode == 0, done.stderr[-2000:]
    kill_after_first_checkpoint(args, cut, cut / "checkpoints" / f"{name}-seed0.pt")
    assert not (cut / "runs" / f"{name}-seed0.json").exists(), "killed too late: it had finished"
    resumed = run(args, cut)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after experience" in resumed.stdout
    ours, theirs = final_runs(cut)[(name, 0)], final_runs(whole)[(name, 0)]
    for key in ("acc_matrix", "f1_matrix"):
        for row, other in zip(ours[key], theirs[key], strict=True):
            assert row == pytest.approx(other, abs=1e-6), key
    assert ours["summary"]["final_accuracy"] == pytest.approx(
        theirs["summary"]["final_accuracy"], abs=1e-6
    )


def test_exssnet_on_split_digits_resumes_after_sigkill(tmp_path):
    args = [
        "--strategy",
        "exssnet",
        "--benchmark",
        "split_digits",
        "--epochs",
        "40",
        "--hidden-size",
        "64",
    ]
    check_resume(args, "exssnet", tmp_path)


def test_ctr_on_a_tiny_text_stream_resumes_after_sigkill(tmp_path, tokenizer):
    data = write_dsc(tmp_path / "dsc", n_train=32, n_test=16)
    encoder = save_tiny_encoder(tmp_path / "encoder", tokenizer)
    args = [
        "--strategy",
        "ctr",
        "--benchmark",
        "dsc",
        "--data-root",
        str(data),
        "--encoder",
        str(encoder),
        "--max-length",
        "16",
        "--n-train",
        "32",
        "--epochs",
        "15",
        "--batch-size",
        "8",
    ]
    check_resume(args, "ctr", tmp_path)
