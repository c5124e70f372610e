"""``--config FILE.yaml``: a file gives the same run as the same flags, flags on the
command line win, and the ``config.yaml`` a run folder holds runs the same run again.
(The mistakes are rows of tests/test_user_errors.py.)"""

import pytest
import yaml

from avalanche_ctr.cli import main
from avalanche_ctr.run_folder import read_record

FLAGS = ["--strategy", "supsup", "--epochs", "1", "--n-experiences", "2", "--hidden-size", "16"]


def run(*argv: str) -> None:
    main(["run", *argv, "--seed", "3", "--threads", "1", "--no-progress"])


def saved(out) -> dict:
    return read_record(out / "runs" / "supsup-seed3.json")


@pytest.fixture(scope="module")
def by_flags(tmp_path_factory):
    out = tmp_path_factory.mktemp("flags")
    run(*FLAGS, "--out", str(out))
    return out


def test_a_config_file_runs_the_same_run_as_its_flags(by_flags, tmp_path):
    written = tmp_path / "mine.yaml"
    written.write_text(
        "strategy: supsup\nn_experiences: 2\nhidden-size: 16\nepochs: 4\n"
        f"out: {tmp_path / 'elsewhere'}\n"
    )
    # the file's epochs and out are overridden: flags given on the command line win
    run("--config", str(written), "--epochs", "1", "--out", str(tmp_path / "file"))
    # the folder's resolved config.yaml, passed back, runs the same run again
    run("--config", str(by_flags / "config.yaml"), "--out", str(tmp_path / "again"))
    expected = saved(by_flags)
    assert expected["identity"]["settings"]["epochs"] == 1
    for folder in ("file", "again"):
        found = saved(tmp_path / folder)
        assert found["identity"] == expected["identity"]
        assert found["record"]["acc_matrix"] == expected["record"]["acc_matrix"]
    assert not (tmp_path / "elsewhere").exists()


def test_the_run_folder_holds_the_resolved_configuration(by_flags):
    config = yaml.safe_load((by_flags / "config.yaml").read_text())
    # every flag, the benchmark's defaults filled in, strategy options left to each strategy
    assert config["strategy"] == "supsup" and config["seed"] == 3
    assert config["benchmark"] == "split_digits" and config["epochs"] == 1
    assert config["batch-size"] == 32 and config["lr"] == 0.01
    assert config["density"] is None and config["csv"] is False
    assert "config" not in config and "debug" not in config
