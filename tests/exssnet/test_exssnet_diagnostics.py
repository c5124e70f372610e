"""ExSSNeT's mask and KKT diagnostics reach Avalanche's evaluator."""

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.exssnet import ExSSNeTDiagnostics, mask_diagnostics
from avalanche_ctr.training import ExSSNeT, SupSup


def trained(cls, **kwargs):
    torch.manual_seed(0)
    model = MultiHeadMLP(64, (32, 32))
    evaluator = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True), ExSSNeTDiagnostics(), loggers=[]
    )
    strategy = cls(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.3,
        train_mb_size=32,
        evaluator=evaluator,
        **kwargs,
    )
    for experience in SplitDigits(5, seed=0).train_stream[:3]:
        strategy.train(experience)
    return strategy, evaluator.get_all_metrics()


def last(metrics, name):
    return metrics[name][1][-1]


def test_exclusive_fraction_overlap_and_kkt_are_emitted_per_task():
    strategy, metrics = trained(ExSSNeT, mask_epochs=1, weight_epochs=1, kkt=True)
    model = strategy.model
    prefix = "ExSSNeT_ExclusiveFraction/train_phase/train_stream"
    assert last(metrics, f"{prefix}/Task000") == 1.0  # nothing else existed
    for task in (1, 2):
        fraction = last(metrics, f"{prefix}/Task{task:03d}")
        assert 0.0 <= fraction <= 1.0
        # what the weight phase of the task could train: its mask minus the earlier masks
        mask = torch.cat([m.flatten() for m in model.task_masks(task)])
        earlier = torch.zeros_like(mask)
        for other in range(task):
            earlier |= torch.cat([m.flatten() for m in model.task_masks(other)])
        assert fraction == pytest.approx(float((mask & ~earlier).sum() / mask.sum()))
        shared = float((mask & torch.cat([m.flatten() for m in model.task_masks(0)])).sum())
        overlap = last(metrics, f"ExSSNeT_Overlap/train_phase/train_stream/Task{task:03d}/With000")
        assert overlap == pytest.approx(shared / float(mask.sum()))
        source = last(metrics, f"ExSSNeT_KKTSource/train_phase/train_stream/Task{task:03d}")
        assert source in {-1.0, *map(float, range(task))}
        assert f"ExSSNeT_KKTMargin/train_phase/train_stream/Task{task:03d}" in metrics
    assert "ExSSNeT_KKTSource/train_phase/train_stream/Task000" not in metrics  # no KKT yet


def test_supsup_without_kkt_reports_masks_only():
    strategy, metrics = trained(SupSup, train_epochs=1)
    assert not [k for k in metrics if k.startswith("ExSSNeT_KKT")]
    final = mask_diagnostics(strategy.model, 0)
    # task 0's overlap with the later tasks, seen from the finished model
    assert set(final) == {"ExclusiveFraction", "Overlap/With001", "Overlap/With002"}
    assert 0.0 <= final["ExclusiveFraction"] <= 1.0


def test_first_epoch_accuracy_is_the_first_mask_epochs_training_accuracy():
    _, metrics = trained(ExSSNeT, mask_epochs=1, weight_epochs=1, kkt=True)
    for task in range(3):
        first = last(metrics, f"ExSSNeT_FirstEpochAccuracy/train_phase/train_stream/Task{task:03d}")
        # Avalanche's running accuracy of the task's epochs: mask epoch, then weight epoch
        epochs = metrics[f"Top1_Acc_Epoch/train_phase/train_stream/Task{task:03d}"][1]
        assert len(epochs) == 2
        assert first == pytest.approx(epochs[0])
        assert 0.5 < first < epochs[1]  # it learns within the epoch, and more in the next
