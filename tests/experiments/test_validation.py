"""The checks of :mod:`avalanche_ctr.experiments.validation` guard the Python API too:
``compare``, ``run_one`` and ``Settings`` refuse what the command line refuses, before
anything is written or trained (tests/test_user_errors.py runs every case through the
command line)."""

import pytest

from avalanche_ctr.experiments import Settings, UsageError, compare, run_one


@pytest.mark.parametrize(
    ("strategies", "seeds", "message"),
    [
        (["naive"], [3, 3], r"--seeds names 3 more than once"),
        (["naive", "naive"], [0], r"--strategies names naive more than once"),
        (["naive"], [-1], r"--seeds -1: a seed must be an integer from 0 to 4294967295"),
    ],
)
def test_compare_refuses_a_run_counted_twice_or_an_unusable_seed(
    strategies, seeds, message, tmp_path
):
    with pytest.raises(UsageError, match=message):
        compare(Settings(), strategies, seeds, out=tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_run_one_refuses_a_seed_numpy_cannot_take(tmp_path):
    with pytest.raises(UsageError, match=r"--seed 4294967296: a seed must be"):
        run_one(Settings(), "naive", 2**32, out=tmp_path, log=lambda _: None)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": float("inf")}, r"--lr must be a positive finite number, got inf"),
        ({"hidden_layers": 0}, r"--hidden-layers must be at least 1, got 0"),
        ({"benchmark": "dsc", "max_length": 1}, r"--max-length 1: give at least 2 tokens"),
    ],
)
def test_settings_refuse_numbers_no_run_can_use(settings, message):
    with pytest.raises(UsageError, match=message):
        Settings(**settings)


def test_options_refuse_non_finite_values_whatever_their_check(tmp_path):
    settings = Settings(options={"ewc_lambda": float("nan")})
    with pytest.raises(UsageError, match=r"--ewc-lambda nan: give a finite number"):
        compare(settings, ["ewc"], [0], out=tmp_path, log=lambda _: None)
