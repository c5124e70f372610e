"""CTR's diagnostics (free TSM units, mask movement, KSM size, gate on-rates) reach
Avalanche's evaluator after every training experience, and change nothing."""

import itertools
import json
import statistics

import pytest
import torch
from _helpers import quiet_evaluator
from _text_helpers import save_tiny_encoder, tiny_bert, tiny_ctr_model, write_dsc
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.checkpoint import save_checkpoint, verify_checkpoint
from avalanche_ctr.cli import main
from avalanche_ctr.ctr import CTRDiagnostics
from avalanche_ctr.ctr.diagnostics import free_fractions, plugin_names
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.experiments.benchmarks import text_tasks
from avalanche_ctr.experiments.report import (
    CTR_DIAGNOSTICS,
    aggregate,
    ctr_diagnostics_table,
    summarize,
)
from avalanche_ctr.models import CTRModel
from avalanche_ctr.training import CTR

STREAM = "train_phase/train_stream"
PLUGINS = ["Layer0.Attention", "Layer0.FeedForward", "Layer1.Attention", "Layer1.FeedForward"]
TSM_ONLY = ("FreeFraction", "MaskMovement", "TaskUse")
MASKS = ["Bottleneck", "Hidden", "KSM.Current", "KSM.Similarity", "KSM.Projection"]


def train(model, stream, diagnostics=None, n_tasks=3):
    torch.manual_seed(0)
    metrics = [accuracy_metrics(experience=True)]
    evaluator = EvaluationPlugin(*metrics, diagnostics, loggers=[]) if diagnostics else None
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=32,
        train_epochs=1,
        evaluator=evaluator or quiet_evaluator(),
    )
    snapshots = []
    for experience in stream.train_stream[:n_tasks]:
        strategy.train(experience)
        if diagnostics:
            snapshots.append(diagnostics.result())
    return strategy, snapshots


@pytest.fixture(scope="module")
def diagnosed(tokenizer, sentiment_stream):
    diagnostics = CTRDiagnostics()
    strategy, snapshots = train(tiny_ctr_model(tokenizer), sentiment_stream, diagnostics)
    return strategy, diagnostics, snapshots, strategy.evaluator.get_all_metrics()


def last(metrics, name):
    return metrics[name][1][-1]


def test_every_diagnostic_is_emitted_for_every_task_and_plugin(diagnosed):
    strategy, _, _, metrics = diagnosed
    assert plugin_names(strategy.model) == PLUGINS
    for task in range(3):
        for plugin in PLUGINS:
            for mask in MASKS:
                for metric in ("CTR_FreeFraction", "CTR_MaskMovement", "CTR_TaskUse"):
                    assert f"{metric}/{STREAM}/Task{task:03d}/{plugin}/{mask}" in metrics
            for metric in ("CTR_KSMRatio", "CTR_SelfGateOnRate"):
                assert f"{metric}/{STREAM}/Task{task:03d}/{plugin}" in metrics
            gates = sorted(
                name
                for name in metrics
                if name.startswith(f"CTR_GateOnRate/{STREAM}/Task{task:03d}/{plugin}/")
            )
            assert gates == [
                f"CTR_GateOnRate/{STREAM}/Task{task:03d}/{plugin}/Source{source:03d}"
                for source in range(task)  # one per earlier task, none for the first
            ]


def test_free_fraction_is_the_share_of_units_no_task_uses_and_never_grows(diagnosed):
    strategy, _, snapshots, _ = diagnosed
    model = strategy.model
    free = [{k: v for k, v in s.items() if k.startswith("FreeFraction/")} for s in snapshots]
    assert len(free) == 3 and all(len(f) == len(MASKS) * len(PLUGINS) for f in free)
    for before, after in itertools.pairwise(free):
        for key, value in after.items():
            assert 0.0 <= value <= before[key] <= 1.0
    assert min(free[0].values()) < 1.0  # the first task claimed units
    mask = model.plugins[1].tsm.mask1
    unused = ~(mask.used(0) | mask.used(1) | mask.used(2))  # no task's test-time mask
    assert free[-1]["FreeFraction/Layer0.FeedForward/Bottleneck"] == float(unused.float().mean())
    assert free_fractions(model) == {k.partition("/")[2]: v for k, v in free[-1].items()}


def test_mask_embeddings_of_a_trained_task_moved(diagnosed):
    _, _, snapshots, _ = diagnosed
    for snapshot in snapshots:
        moved = [v for k, v in snapshot.items() if k.startswith("MaskMovement/")]
        assert len(moved) == len(MASKS) * len(PLUGINS)
        assert all(0.0 < v < 12.0 for v in moved)  # embeddings stay within ±6


def test_ksm_ratio_is_positive_and_gate_rates_are_rates(diagnosed):
    _, _, snapshots, metrics = diagnosed
    for snapshot in snapshots:
        ratios = [v for k, v in snapshot.items() if k.startswith("KSMRatio/")]
        assert len(ratios) == len(PLUGINS) and all(r > 0 for r in ratios)
        for key, value in snapshot.items():
            if "GateOnRate/" in key:
                assert 0.0 <= value <= 1.0, key
    # training samples draw Gumbel noise: some gates are off, some on
    rates = [v for s in snapshots for k, v in s.items() if "GateOnRate/" in k]
    assert 0.0 < sum(rates) / len(rates) < 1.0
    assert (
        last(metrics, f"CTR_FreeFraction/{STREAM}/Task002/Layer1.Attention/Hidden")
        == (snapshots[-1]["FreeFraction/Layer1.Attention/Hidden"])
    )


def test_the_metric_holds_no_hook_and_can_be_checkpointed(diagnosed, tmp_path):
    strategy, diagnostics, _, _ = diagnosed
    for module in strategy.model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    save_checkpoint(strategy, tmp_path / "ctr.pt")  # the metric, as tensors and plain values
    assert verify_checkpoint(tmp_path / "ctr.pt")["tensors"] > 0


def test_diagnostics_change_no_training_result(tokenizer, sentiment_stream, diagnosed):
    strategy, _, _, _ = diagnosed
    plain, _ = train(tiny_ctr_model(tokenizer), sentiment_stream)
    observed = strategy.model.state_dict()
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, observed[name]), name


def test_without_knowledge_sharing_only_the_tsm_is_diagnosed(tokenizer, sentiment_stream):
    diagnostics = CTRDiagnostics()
    model = CTRModel(tiny_bert(tokenizer), bottleneck=32, knowledge_sharing=False)
    _, snapshots = train(model, sentiment_stream, diagnostics, n_tasks=2)
    for snapshot in snapshots:
        kinds = {k.partition("/")[0] for k in snapshot}
        assert kinds == {"FreeFraction", "MaskMovement", "TaskUse"}
        assert not any("/KSM." in k for k in snapshot)


def test_other_models_get_no_diagnostics():
    torch.manual_seed(0)
    model = MultiHeadMLP(64, (16,))
    diagnostics = CTRDiagnostics()
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        evaluator=EvaluationPlugin(diagnostics, loggers=[]),
    )
    strategy.train(SplitDigits(5, seed=0).train_stream[0])
    assert diagnostics.result() == {}
    assert not strategy.evaluator.get_all_metrics()


def record(strategy, diagnostics, n=3):
    return {
        "strategy": strategy,
        "acc_matrix": [[0.5] * n] * n,
        "f1_matrix": [[0.5] * n] * n,
        "initial_acc": [0.5] * n,
        "stored_bytes": [0] * n,
        "train_s": [1.0] * n,
        "iteration_s": [0.1] * n,
        "iterations": [1] * n,
        "ctr_diagnostics": diagnostics,
    }


def test_compare_report_summarises_the_diagnostics_in_their_own_table(diagnosed):
    _, _, snapshots, _ = diagnosed
    ablation = [
        {k: v for k, v in s.items() if k.startswith(TSM_ONLY) and "/KSM." not in k}
        for s in snapshots
    ]
    records = [record("ctr", snapshots), record("ctr_no_ksm", ablation), record("naive", [])]
    for one in records:
        one["summary"] = summarize(one)
    ctr, no_ksm, naive = (one["summary"] for one in records)
    assert not any(key.startswith("ctr_") for key in naive)
    assert "ctr_ksm_ratio" not in no_ksm and "ctr_gate_on_rate" not in no_ksm
    final_free = {k: v for k, v in snapshots[-1].items() if k.startswith("FreeFraction/")}
    tsm = [v for k, v in final_free.items() if "/KSM." not in k]
    ksm = [v for k, v in final_free.items() if "/KSM." in k]
    assert len(tsm) == 2 * len(PLUGINS) and len(ksm) == 3 * len(PLUGINS)
    assert ctr["ctr_free_fraction"] == pytest.approx(statistics.fmean(tsm))
    assert ctr["ctr_ksm_free_fraction"] == pytest.approx(statistics.fmean(ksm))
    later_gates = [v for s in snapshots[1:] for k, v in s.items() if k.startswith("GateOnRate/")]
    assert ctr["ctr_gate_on_rate"] == pytest.approx(sum(later_gates) / len(later_gates))
    assert set(CTR_DIAGNOSTICS) <= set(ctr)
    table = ctr_diagnostics_table(aggregate([{**r, "seed": 0} for r in records]))
    lines = table.splitlines()
    assert lines[0].startswith("| strategy | TSM units free at the end (%) |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| ctr", "| ctr_no_ksm"]
    assert lines[3].endswith("| n/a | n/a | n/a |")
    assert lines[3].split(" | ")[2] == "n/a"  # no KSM units
    assert ctr_diagnostics_table(aggregate([{**records[2], "seed": 0}])) == ""


def test_compare_records_and_reports_the_diagnostics(tmp_path, tokenizer):
    data = write_dsc(tmp_path / "dsc", n_train=8, n_test=4)
    encoder = save_tiny_encoder(tmp_path / "encoder", tokenizer)
    out = tmp_path / "out"
    options = ["--max-length", "16", "--n-train", "8", "--epochs", "1", "--batch-size", "8"]
    options += ["--seeds", "0", "--threads", "1", "--n-experiences", "3", "--best-dev-epoch"]
    options += ["--hat-lr", "0.05", "--warmup", "0.1", "--task-order", "random:3"]
    main(
        ["compare", "--strategies", "ctr,adapter_hat", "--benchmark", "dsc"]
        + ["--data-root", str(data), "--encoder", str(encoder), *options]
        + ["--out", str(out), "--no-progress"]
    )
    recorded = json.loads((out / "runs.json").read_text())
    assert recorded["tasks"] == text_tasks("dsc", "random:3", None)[:3]  # the order resolved
    run, ablation = recorded["runs"]
    assert len(run["ctr_diagnostics"]) == run["n_experiences"] == 3
    assert "GateOnRate/Layer0.Attention/Source001" in run["ctr_diagnostics"][-1]
    assert 0.0 <= run["summary"]["ctr_free_fraction"] <= 1.0
    assert len(run["best_epoch"]) == len(run["dev_acc"]) == 3  # one dev pass per epoch
    report = (out / "results.md").read_text()
    assert "| ctr |" in report.split("## CTR diagnostics")[1]
    paired = report.split("## Paired by seed")[1]
    delta = 100 * (run["summary"]["final_accuracy"] - ablation["summary"]["final_accuracy"])
    assert f"| ctr − adapter_hat | 0 | {delta:+.2f} |" in paired
