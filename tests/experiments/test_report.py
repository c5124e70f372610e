import pytest

from avalanche_ctr.experiments.report import (
    aggregate,
    average_forgetting,
    backward_transfer,
    final_average,
    forward_transfer,
    markdown_table,
    paired_table,
)

# R[i][j]: accuracy on task j after training task i (j > i: not trained yet)
MATRIX = [
    [0.9, 0.55, 0.4],
    [0.8, 0.95, 0.45],
    [0.7, 0.99, 0.6],
]
INITIAL = [0.5, 0.5, 0.5]


def test_final_average_forgetting_and_backward_transfer():
    assert final_average(MATRIX) == pytest.approx((0.7 + 0.99 + 0.6) / 3)
    # task 0: best before the last task 0.9 -> 0.7; task 1: best 0.95 -> 0.99
    assert average_forgetting(MATRIX) == pytest.approx(((0.9 - 0.7) + (0.95 - 0.99)) / 2)
    assert backward_transfer(MATRIX) == pytest.approx(((0.7 - 0.9) + (0.99 - 0.95)) / 2)
    assert average_forgetting([[0.5]]) == backward_transfer([[0.5]]) == 0.0


def test_forward_transfer_compares_each_task_before_training_with_before_anything():
    # task 1 before its training: 0.55 (0.5 untrained); task 2: 0.45 (0.5)
    assert forward_transfer(MATRIX, INITIAL) == pytest.approx(((0.55 - 0.5) + (0.45 - 0.5)) / 2)
    assert forward_transfer([[0.9]], [0.5]) == 0.0


def summary(acc, time):
    return {
        "final_accuracy": acc,
        "final_macro_f1": acc,
        "forgetting": 0.0,
        "bwt": 0.0,
        "fwt": 0.0,
        "train_time_s": time,
        "peak_memory_mib": None,
        "bytes_per_task": 8.0,
        "iteration_s": 0.1,
    }


def test_aggregate_gives_mean_and_sample_std_per_strategy():
    records = [
        {"strategy": "b", "summary": summary(0.8, 1.0)},
        {"strategy": "a", "summary": summary(0.6, 3.0)},
        {"strategy": "b", "summary": summary(0.6, 2.0)},
    ]
    b, a = aggregate(records)
    assert (b["strategy"], b["seeds"], a["strategy"], a["seeds"]) == ("b", 2, "a", 1)
    assert b["final_accuracy_mean"] == pytest.approx(0.7)
    assert b["final_accuracy_std"] == pytest.approx(0.1414213, abs=1e-6)
    assert a["final_accuracy_std"] == 0.0
    assert b["peak_memory_mib_mean"] is None
    table = markdown_table([b, a])
    assert "| b | 2 | 70.00 ± 14.14 |" in table
    assert "| a | 1 | 60.00 |" in table
    assert "n/a" in table  # no memory figure


def test_paired_table_gives_seed_by_seed_differences_and_how_often_the_method_is_ahead():
    records = [
        {"strategy": "ctr", "seed": 0, "summary": summary(0.80, 1.0)},
        {"strategy": "ctr", "seed": 1, "summary": summary(0.70, 1.0)},
        {"strategy": "ctr", "seed": 2, "summary": summary(0.90, 1.0)},  # no ablation run
        {"strategy": "adapter_hat", "seed": 0, "summary": summary(0.75, 1.0)},
        {"strategy": "adapter_hat", "seed": 1, "summary": summary(0.72, 1.0)},
    ]
    lines = paired_table(records, {"ctr": "adapter_hat"}).splitlines()
    assert lines[0].startswith("| pair | seed | Δ final acc. (pts) | Δ final macro-F1 (pts) |")
    assert lines[2] == "| ctr − adapter_hat | 0 | +5.00 | +5.00 | +0.00 | +0.00 |"
    assert lines[3] == "| ctr − adapter_hat | 1 | -2.00 | -2.00 | +0.00 | +0.00 |"
    assert lines[4].startswith("| ctr − adapter_hat | mean (1/2 ahead) | **+1.50** |")
    assert len(lines) == 5
    assert paired_table(records, {"exssnet": "supsup"}) == ""
