"""A run interrupted after any experience and resumed ends exactly as an uninterrupted
run of the same seed, for every strategy of the command line."""

import pytest

from avalanche_ctr.experiments import runner
from avalanche_ctr.experiments.runner import Settings, run_one, run_paths
from avalanche_ctr.experiments.strategies import default_strategies

SETTINGS = dict(benchmark="split_digits", epochs=2, hidden_size=32)
METRICS = ("acc_matrix", "f1_matrix", "stored_bytes")


def flat(values) -> list[float]:
    return [v for row in values for v in (row if isinstance(row, list) else [row])]


def quiet(_message: str) -> None:
    pass


class Killed(Exception):
    pass


def interrupted_run(out, name, *, after: int, monkeypatch):
    """Run ``name`` until its checkpoint after experience ``after`` is written, then stop
    as a killed process would (nothing after the save runs)."""
    save = runner.save_checkpoint
    count = {"saves": 0}

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        count["saves"] += 1
        if count["saves"] == after + 1:
            raise Killed

    monkeypatch.setattr(runner, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run_one(Settings(**SETTINGS), name, 0, out=out, progress=False, log=quiet)
    monkeypatch.undo()


@pytest.mark.parametrize("name", default_strategies("image"))
def test_resumed_run_ends_as_an_uninterrupted_one(name, tmp_path, monkeypatch):
    whole = run_one(
        Settings(**SETTINGS), name, 0, out=tmp_path / "whole", progress=False, log=quiet
    )
    interrupted_run(tmp_path / "cut", name, after=1, monkeypatch=monkeypatch)
    checkpoint, record = run_paths(tmp_path / "cut", name, 0)
    assert checkpoint.is_file() and not record.exists()
    resumed = run_one(
        Settings(**SETTINGS), name, 0, out=tmp_path / "cut", progress=False, log=quiet
    )
    for key in METRICS:
        assert flat(resumed[key]) == pytest.approx(flat(whole[key]), abs=1e-6), (name, key)
    assert record.is_file()


def test_runs_are_deterministic_for_a_seed(tmp_path):
    first, second = (
        run_one(Settings(**SETTINGS), "ewc", 3, out=tmp_path / str(i), progress=False, log=quiet)
        for i in range(2)
    )
    assert first["acc_matrix"] == second["acc_matrix"]


def test_a_finished_run_is_kept_and_not_trained_again(tmp_path):
    out = tmp_path / "run"
    first = run_one(Settings(**SETTINGS), "naive", 0, out=out, progress=False, log=quiet)
    messages = []
    again = run_one(Settings(**SETTINGS), "naive", 0, out=out, progress=False, log=messages.append)
    assert again["acc_matrix"] == first["acc_matrix"]
    assert "finished earlier" in messages[0]


def test_resuming_with_other_settings_is_refused(tmp_path, monkeypatch):
    from avalanche_ctr.checkpoint import CheckpointError

    interrupted_run(tmp_path, "exssnet", after=0, monkeypatch=monkeypatch)
    with pytest.raises(CheckpointError, match=r"belongs to another run \(epochs=2 there, 3 here"):
        run_one(
            Settings(**{**SETTINGS, "epochs": 3}),
            "exssnet",
            0,
            out=tmp_path,
            progress=False,
            log=quiet,
        )


def test_a_record_made_before_an_option_existed_counts_it_as_its_default(tmp_path):
    from avalanche_ctr.checkpoint import CheckpointError
    from avalanche_ctr.run_folder import read_record, write_digested_json

    settings = dict(benchmark="split_digits", epochs=1, hidden_size=16)
    out = tmp_path / "run"
    first = run_one(Settings(**settings), "supsup", 0, out=out, progress=False, log=quiet)
    _, record_path = run_paths(out, "supsup", 0)
    finished = read_record(record_path)
    del finished["identity"]["settings"]["lr_schedule"]  # as written before the option
    write_digested_json(record_path, finished)
    again = run_one(Settings(**settings), "supsup", 0, out=out, progress=False, log=quiet)
    assert again["acc_matrix"] == first["acc_matrix"]
    other = Settings(**settings, options={"lr_schedule": "cosine"})
    with pytest.raises(CheckpointError, match="lr_schedule=None there, 'cosine' here"):
        run_one(other, "supsup", 0, out=out, progress=False, log=quiet)


def test_a_resumed_run_keeps_recording_the_diagnostics(tmp_path, monkeypatch):
    whole = run_one(
        Settings(**SETTINGS), "exssnet", 0, out=tmp_path / "whole", progress=False, log=quiet
    )
    interrupted_run(tmp_path / "cut", "exssnet", after=1, monkeypatch=monkeypatch)
    resumed = run_one(
        Settings(**SETTINGS), "exssnet", 0, out=tmp_path / "cut", progress=False, log=quiet
    )
    assert len(whole["diagnostics"]) == whole["n_experiences"]
    assert resumed["diagnostics"] == whole["diagnostics"]


def test_an_asc_run_made_before_the_padding_fix_is_refused(tmp_path):
    from avalanche_ctr.checkpoint import CheckpointError

    settings = Settings(benchmark="asc")
    here = {"strategy": "ctr", "seed": 0, "settings": settings.config()}
    before = {**here, "settings": {k: v for k, v in here["settings"].items() if k != "pad_logit"}}
    runner._check_same_run(here, here, tmp_path, settings.spec)  # the same run is accepted
    with pytest.raises(CheckpointError, match="pad_logit=None there, -1000.0 here"):
        runner._check_same_run(before, here, tmp_path, settings.spec)
    assert "pad_logit" not in Settings(benchmark="dsc").config()  # 2-class tasks: runs stay valid
