"""The command line: ``compare`` writes its report, ``run`` trains one strategy, and
bad input gets an error that names the problem and the fix."""

import csv
import json
import math

import matplotlib.image
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from avalanche_ctr.cli import main

RANGES = {
    "final_accuracy": (0.0, 1.0),
    "final_macro_f1": (0.0, 1.0),
    "forgetting": (-1.0, 1.0),
    "bwt": (-1.0, 1.0),
    "fwt": (-1.0, 1.0),
    "train_time_s": (0.0, math.inf),
    "peak_memory_mib": (0.0, math.inf),
    "bytes_per_task": (0.0, math.inf),
    "iteration_s": (0.0, math.inf),
}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    main(
        [
            "compare",
            "--strategies",
            "exssnet,naive",
            "--seeds",
            "0,1",
            "--epochs",
            "2",
            "--hidden-size",
            "32",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    return out


def test_compare_writes_results_with_every_metric_in_range(compared):
    with open(compared / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["strategy"] for row in rows] == ["exssnet", "naive"]
    for row in rows:
        assert row["seeds"] == "2"
        for metric, (low, high) in RANGES.items():
            mean, std = float(row[f"{metric}_mean"]), float(row[f"{metric}_std"])
            assert low <= mean <= high, (row["strategy"], metric, mean)
            assert std >= 0 and math.isfinite(std), (row["strategy"], metric, std)
    exssnet, naive = rows
    assert float(exssnet["final_accuracy_mean"]) >= 0.9
    assert float(exssnet["forgetting_mean"]) == 0.0  # nothing learned is lost
    assert float(exssnet["bytes_per_task_mean"]) > float(naive["bytes_per_task_mean"])
    table = (compared / "results.md").read_text()
    assert "| exssnet | 2 |" in table and "| naive | 2 |" in table


def test_compare_keeps_every_run_and_its_accuracy_matrix(compared):
    runs = json.loads((compared / "runs.json").read_text())["runs"]
    assert sorted((r["strategy"], r["seed"]) for r in runs) == [
        ("exssnet", 0),
        ("exssnet", 1),
        ("naive", 0),
        ("naive", 1),
    ]
    for run in runs:
        matrix = run["acc_matrix"]  # every task after every experience, as Avalanche's loop
        assert [len(row) for row in matrix] == [5, 5, 5, 5, 5]
        assert len(run["initial_acc"]) == 5
        assert all(0.0 <= a <= 1.0 for row in matrix for a in row)
        if run["strategy"] == "exssnet":  # a task not trained yet is at chance (2 classes)
            untrained = [matrix[i][j] for i in range(5) for j in range(i + 1, 5)]
            assert abs(sum(untrained) / len(untrained) - 0.5) <= 0.05


def test_compare_logs_every_strategy_and_seed_to_tensorboard(compared):
    for strategy in ("exssnet", "naive"):
        for seed in (0, 1):
            folder = compared / "tensorboard" / strategy / f"seed{seed}"
            events = EventAccumulator(str(folder))
            events.Reload()
            tags = events.Tags()["scalars"]
            stream = "Top1_Acc_Stream/eval_phase/test_stream/Task004"
            assert stream in tags, tags
            assert 0.0 <= events.Scalars(stream)[-1].value <= 1.0
            assert any(tag.startswith("MacroF1_Exp") for tag in tags)


def test_compare_reports_exssnets_diagnostics(compared):
    text = (compared / "results.md").read_text()
    section = text.split("## ExSSNeT diagnostics")[1]
    assert "| exssnet |" in section and "| naive |" not in section
    runs = json.loads((compared / "runs.json").read_text())["runs"]
    exssnet = next(r for r in runs if r["strategy"] == "exssnet")
    assert len(exssnet["diagnostics"]) == exssnet["n_experiences"]
    assert exssnet["diagnostics"][0]["ExclusiveFraction"] == 1.0
    assert 0.0 <= exssnet["summary"]["exclusive_fraction"] <= 1.0


def test_compare_draws_both_plots(compared):
    for name in ("accuracy_matrices.png", "final_accuracy_forgetting.png"):
        image = matplotlib.image.imread(compared / name)
        height, width = image.shape[:2]
        assert height > 300 and width > 600


def test_run_trains_one_strategy_and_prints_its_table(tmp_path, capsys):
    main(
        [
            "run",
            "--strategy",
            "supsup",
            "--epochs",
            "1",
            "--hidden-size",
            "32",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert "| supsup | 1 |" in out
    with open(tmp_path / "results.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["final_accuracy_mean"]) >= 0.8
    assert float(row["forgetting_mean"]) == 0.0  # SupSup never changes an old task


def test_compare_reports_accuracy_with_inferred_tasks_next_to_given_labels(tmp_path, capsys):
    argv = ["compare", "--strategies", "supsup,naive", "--seeds", "0", "--epochs", "2"]
    argv += ["--hidden-size", "32", "--head-units", "4", "--eval-batch-size", "64"]
    argv += ["--task-inference", "statistics,one_shot"]
    main([*argv, "--out", str(tmp_path), "--no-progress"])
    printed = capsys.readouterr().out
    assert "| supsup | statistics |" in printed and "| supsup | one_shot |" in printed
    assert "| naive | statistics |" not in printed  # only the supermask strategies infer
    assert "## Without task labels" in (tmp_path / "results.md").read_text()
    (supsup, naive) = json.loads((tmp_path / "runs.json").read_text())["runs"]
    assert naive["inferred"] == {}
    statistics = supsup["inferred"]["statistics"]
    # the digits' class pairs are told apart by their pixel statistics: every batch right,
    # so the accuracy equals the accuracy with the given labels
    assert statistics["task_acc"] == [1.0] * 5
    assert statistics["acc"] == supsup["acc_matrix"][-1]
    assert 0.0 <= supsup["summary"]["task_inference_one_shot"] <= 1.0
    assert supsup["summary"]["inference_time_ratio_statistics"] > 0


def test_compare_runs_hat_with_its_flags_and_logs_its_free_units(tmp_path):
    argv = ["compare", "--strategies", "hat", "--seeds", "0", "--epochs", "2"]
    argv += ["--hidden-size", "64", "--hat-smax", "200", "--hat-lambda", "0.5"]
    argv += ["--hat-thres-cosh", "30", "--hat-lr", "0.02"]
    main([*argv, "--out", str(tmp_path), "--no-progress"])
    runs = json.loads((tmp_path / "runs.json").read_text())
    settings = runs["settings"]
    assert (settings["hat_smax"], settings["hat_lambda"]) == (200.0, 0.5)
    assert (settings["hat_thres_cosh"], settings["hat_lr"]) == (30.0, 0.02)
    (run,) = runs["runs"]
    assert run["summary"]["forgetting"] == 0.0 and run["summary"]["bwt"] == 0.0
    assert run["summary"]["final_accuracy"] >= 0.8
    events = EventAccumulator(str(tmp_path / "tensorboard" / "hat" / "seed0"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for layer in ("features.1", "features.3"):
        free = []
        for task in range(5):
            tag = f"HAT_FreeFraction/train_phase/train_stream/Task{task:03d}/{layer}"
            assert tag in tags, tags
            free.append(events.Scalars(tag)[-1].value)
        assert free == sorted(free, reverse=True) and free[-1] < free[0], free
        assert [d[f"FreeFraction/{layer}"] for d in run["hat_diagnostics"]] == pytest.approx(free)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--task-inference", "guess"], r"unknown --task-inference .* \['guess'\]"),
        (["run", "--head-units", "0"], r"--head-units must be at least 1"),
        (
            ["run", "--benchmark", "split_cifar100", "--output-layer", "masked"],
            r"--output-layer 'masked' is not offered for split_cifar100; use one of: heads",
        ),
        (
            ["run", "--strategy", "packnet", "--output-layer", "masked"],
            r"run it with --output-layer heads",
        ),
        (
            ["run", "--n-train", "10"],
            r"--n-train applies to the text benchmarks and permuted_fmnist",
        ),
        (["run", "--strategy", "nope"], r"unknown strategy 'nope'; choose one of: exssnet, .*ewc"),
        (
            ["compare", "--benchmark", "nope"],
            r"unknown benchmark 'nope'; choose one of: split_digits, .*asc",
        ),
        (["compare", "--strategies", "naive,bogus"], r"unknown strategy 'bogus'"),
        (["run", "--strategy", "ctr"], r"ctr needs a text benchmark \(dsc, asc, 20news\)"),
        (
            ["run", "--strategy", "packnet", "--benchmark", "dsc", "--data-root", "."],
            r"packnet needs an image benchmark.*On text use exssnet, ssnet, supsup, ctr",
        ),
        (["compare", "--seeds", "0,x"], r"--seeds must be comma-separated integers"),
        (["run", "--device", "cuda:7"], r"--device cuda:7: .*use --device cpu"),
        (["run", "--density", "1.5"], r"--density: density must be in \(0, 1\]"),
        (["run", "--epochs", "0"], r"--epochs must be at least 1"),
        (["run", "--n-experiences", "0"], r"--n-experiences must be at least 1"),
        (
            ["run", "--benchmark", "dsc", "--strategy", "ctr", "--n-experiences", "11"]
            + ["--data-root", "."],
            r"--n-experiences 11: the dsc order has 10 tasks; give at most 10",
        ),
        (["run", "--n-test", "5"], r"--n-test keeps a positive number of test reviews"),
        (
            ["run", "--best-dev-epoch"],
            r"--best-dev-epoch needs a dev split, which only the text benchmarks have",
        ),
        (["run", "--strategy", "packnet", "--epochs", "1"], r"packnet .* needs --epochs >= 2"),
        (
            ["run", "--strategy", "hat", "--output-layer", "masked"],
            r"hat gives every task its own head.*--output-layer heads",
        ),
        (["run", "--strategy", "hat", "--hat-smax", "0"], r"--hat-smax: must be positive"),
    ],
)
def test_bad_input_names_the_problem_and_the_fix(argv, message, tmp_path):
    with pytest.raises(SystemExit, match=message):
        main([*argv, "--out", str(tmp_path), "--no-progress"])


def test_missing_text_data_says_where_it_looked(tmp_path):
    with pytest.raises(SystemExit, match=r"DSC root .*not a directory|Pet_Supplies_train.tsv"):
        main(
            [
                "run",
                "--strategy",
                "naive",
                "--benchmark",
                "dsc",
                "--data-root",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path, monkeypatch):
    from avalanche_ctr.benchmarks import fashion_mnist

    monkeypatch.setitem(fashion_mnist.SplitFashionMNIST.__kwdefaults__, "source", tmp_path)
    with pytest.raises(SystemExit, match="apt-get install dataset-fashion-mnist"):
        main(
            [
                "run",
                "--benchmark",
                "split_fmnist",
                "--data-root",
                str(tmp_path / "root"),
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )


def test_split_mnist1d_with_a_bad_number_of_tasks_names_the_flag(tmp_path):
    with pytest.raises(SystemExit, match="--n-experiences 3: split_mnist1d splits its 10 classes"):
        main(
            ["run", "--benchmark", "split_mnist1d", "--n-experiences", "3", "--out", str(tmp_path)]
        )


def test_a_nan_in_a_later_task_is_one_error_line_and_the_run_resumes_after_the_last_task(
    tmp_path, capsys, monkeypatch
):
    import numpy as np

    from avalanche_ctr.benchmarks import SplitDigits, digits

    later = sorted(SplitDigits(5, seed=0).original_classes_in_exp[1])  # experience 1's
    real = digits.load_digits

    def with_a_nan_pixel():
        data = real()
        data.images = data.images.copy()
        data.images[np.isin(data.target, later), 3, 4] = np.nan
        return data

    monkeypatch.setattr(digits, "load_digits", with_a_nan_pixel)
    argv = ["run", "--strategy", "exssnet", "--epochs", "2", "--hidden-size", "32"]
    argv += ["--out", str(tmp_path), "--no-progress"]
    message = (
        r"^avalanche-ctr: error: the loss is nan and the gradients of \d+ parameters are not "
        r"finite \(.*\) in training experience 1 \(task 1\), epoch 0, iteration \d+ \(counted "
        r"from 0\); [^\n]*$"
    )
    with pytest.raises(SystemExit, match=message):
        main(argv)
    checkpoint = tmp_path / "checkpoints" / "exssnet-seed0.pt"
    saved = checkpoint.read_bytes()
    assert not (tmp_path / "runs" / "exssnet-seed0.json").exists()
    with pytest.raises(SystemExit, match=message):
        main(argv)  # the same data again: resumed after experience 0, stopped again
    assert "resuming after experience 1 of 5" in capsys.readouterr().out
    assert checkpoint.read_bytes() == saved  # the finished task's checkpoint is intact
