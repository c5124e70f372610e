"""``--csv`` and ``--wandb``: Avalanche's CSVLogger and WandBLogger beside TensorBoard,
one log per run (strategy, seed) in the run folder."""

import csv
import sys

import pytest

from avalanche_ctr.cli import main
from avalanche_ctr.run_folder import read_record

TINY = ["--epochs", "1", "--n-experiences", "2", "--hidden-size", "16", "--threads", "1"]


def compare(out, *flags: str) -> None:
    main(["compare", "--strategies", "naive", "--seeds", "0,1", *TINY, *flags, "--out", str(out)])


def test_csv_logs_every_evaluation_of_every_run(tmp_path):
    compare(tmp_path, "--csv", "--no-progress")
    for seed in (0, 1):
        folder = tmp_path / "csv" / "naive" / f"seed{seed}"
        with open(folder / "eval_results.csv") as handle:
            rows = list(csv.DictReader(handle))
        with open(folder / "training_results.csv") as handle:
            epochs = list(csv.DictReader(handle))
        record = read_record(tmp_path / "runs" / f"naive-seed{seed}.json")["record"]
        # before training, then after each of the 2 experiences: every test experience
        assert [(r["training_exp"], r["eval_exp"]) for r in rows] == [
            ("None", "0"),
            ("None", "1"),
            ("0", "0"),
            ("0", "1"),
            ("1", "0"),
            ("1", "1"),
        ]
        logged = [float(r["eval_accuracy"]) for r in rows[2:]]
        expected = [a for row in record["acc_matrix"] for a in row]
        assert logged == pytest.approx(expected, abs=5e-5)  # the CSV keeps 4 decimals
        assert [(e["training_exp"], e["epoch"]) for e in epochs] == [("0", "0"), ("1", "0")]
        assert all(float(e["training_loss"]) > 0 for e in epochs)


def test_wandb_offline_leaves_one_run_per_strategy_and_seed(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    compare(tmp_path, "--wandb", "tiny-project", "--no-progress")
    runs = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    names = set()
    for folder in runs:
        (log,) = folder.glob("run-*.wandb")  # the run's records, for `wandb sync`
        data = log.read_bytes()
        assert b"tiny-project" in data
        assert b"Top1_Acc_Stream/eval_phase/test_stream/Task001" in data  # metrics logged
        names |= {name for name in (b"naive-seed0", b"naive-seed1") if name in data}
    assert names == {b"naive-seed0", b"naive-seed1"}


def test_wandb_without_the_package_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails
    with pytest.raises(SystemExit) as exit_:
        compare(tmp_path, "--wandb", "--no-progress")
    assert exit_.value.code == 2
    assert str(exit_.value) == (
        "avalanche-ctr: error: --wandb needs the wandb package, an optional dependency: "
        "pip install 'avalanche-ctr[wandb]' (or leave --wandb out)"
    )
    assert not (tmp_path / "runs").exists()  # refused before any run
