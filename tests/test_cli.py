import pytest

from avalanche_ctr.cli import main


def test_run_prints_final_metrics(capsys):
    main(["run", "--strategy", "supsup", "--epochs", "1", "--hidden-size", "64"])
    out = capsys.readouterr().out
    assert "after experience 4:" in out
    accuracy = float(out.split("final_average_accuracy: ")[1].split()[0])
    forgetting = float(out.split("average_forgetting: ")[1].split()[0])
    assert 0.8 <= accuracy <= 1.0
    assert forgetting == pytest.approx(0.0, abs=1e-9)  # SupSup never changes old tasks


def test_unknown_strategy_lists_the_valid_names():
    with pytest.raises(SystemExit, match="choose one of.*exssnet"):
        main(["run", "--strategy", "nope"])


def test_unknown_benchmark_lists_the_valid_names():
    with pytest.raises(SystemExit, match="choose one of.*split_digits"):
        main(["run", "--benchmark", "nope"])
