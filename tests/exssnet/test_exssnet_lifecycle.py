"""A NaN in a later task's inputs stops ExSSNeT, SSNeT and SupSup with a clear error
before any weight changes, and the finished task keeps its outputs."""

import pytest
import torch
from _helpers import NaNAt, assert_state_unchanged, experience_tensors, quiet_evaluator, task_logits
from avalanche.models import MTSimpleMLP

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.finite import NonFiniteError
from avalanche_ctr.training import ExSSNeT, SupSup


@pytest.mark.parametrize(
    ("method", "epoch", "iteration"),
    [
        ("exssnet", 1, 2),  # the weight phase: shared weights are trainable but protected
        ("ssnet", 1, 0),  # SSNeT may change task 0's weights, so the NaN comes before it can
        ("supsup", 0, 3),
    ],
)
def test_a_nan_input_in_task_1_stops_training_and_task_0_keeps_its_outputs(
    method, epoch, iteration
):
    benchmark = SplitDigits(5, seed=0)
    model = MTSimpleMLP(input_size=64, hidden_size=64)
    nan = NaNAt(experience=1, epoch=epoch, iteration=iteration)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    common = dict(model=model, optimizer=optimizer, density=0.1, train_mb_size=32)
    common.update(plugins=[nan], evaluator=quiet_evaluator())
    if method == "supsup":
        strategy = SupSup(train_epochs=1, **common)
    else:
        strategy = ExSSNeT(mask_epochs=1, weight_epochs=1, exclusive=method == "exssnet", **common)
    x, _ = experience_tensors(benchmark.test_stream[0])
    strategy.train(benchmark.train_stream[0])
    before = task_logits(strategy.model, x, 0)
    message = (
        rf"the loss is nan and the gradients of \d+ parameters are not finite \(.*\) in "
        rf"training experience 1 \(task 1\), epoch {epoch}, iteration {iteration} \(counted "
        r"from 0\); training stopped before the optimizer step, so no weight changed"
    )
    with pytest.raises(NonFiniteError, match=message):
        strategy.train(benchmark.train_stream[1])
    assert_state_unchanged(nan.state, strategy.model)
    assert torch.equal(task_logits(strategy.model, x, 0), before)


def test_without_the_check_a_nan_in_later_weights_still_leaves_task_0_exactly(monkeypatch):
    """The freezing and the finished task's weight ``W ⊙ M_0`` select entries instead of
    multiplying by 0/1 masks, so a NaN the weight phase of task 1 writes into its own
    free weights never reaches task 0 (with products: NaN · 0 = NaN)."""
    monkeypatch.setattr("avalanche_ctr.exssnet.lifecycle.check_finite_step", lambda s: None)
    benchmark = SplitDigits(5, seed=0)
    model = MTSimpleMLP(input_size=64, hidden_size=64)
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4),
        density=0.1,
        mask_epochs=1,
        weight_epochs=1,
        train_mb_size=32,
        plugins=[NaNAt(experience=1, epoch=1, iteration=2)],
        evaluator=quiet_evaluator(),
    )
    x, _ = experience_tensors(benchmark.test_stream[0])
    strategy.train(benchmark.train_stream[0])
    before = task_logits(strategy.model, x, 0)
    strategy.train(benchmark.train_stream[1])
    weights = torch.cat([layer.weight.reshape(-1) for layer in strategy.model.supermask_layers])
    assert weights.isnan().any()  # task 1's free weights took the NaN
    assert torch.equal(task_logits(strategy.model, x, 0), before)
