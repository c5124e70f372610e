"""HATDiagnostics reports, per masked layer, the free units (shrinking task by task),
the units each task uses and how far its embeddings moved."""

import torch

from avalanche_ctr.hat.diagnostics import HATDiagnostics


def test_free_units_task_use_and_movement_per_layer(hat_run):
    net = hat_run.strategy.model
    names = [name for name, _ in net.named_masks]
    assert names == ["features.1", "features.3"]  # the Linear layers of Flatten-(Linear-ReLU)x2
    for task, values in enumerate(hat_run.diagnostics):
        for layer, (name, mask) in enumerate(net.named_masks):
            free = float((hat_run.cumulative[task][layer] == 0).float().mean())
            assert values[f"FreeFraction/{name}"] == free
            assert values[f"TaskUse/{name}"] == float(mask.used(task).float().mean())
            assert 0.0 < values[f"MaskMovement/{name}"] <= 12.0  # the embeddings stay in ±6
    for name in names:
        free = [values[f"FreeFraction/{name}"] for values in hat_run.diagnostics]
        assert free == sorted(free, reverse=True) and free[-1] < free[0], free


def test_nothing_for_a_model_without_hat_masks():
    metric = HATDiagnostics()

    class Strategy:
        model = torch.nn.Linear(2, 2)

    metric.before_training_exp(Strategy())
    assert metric.after_training_exp(Strategy()) is None and metric.result() == {}
