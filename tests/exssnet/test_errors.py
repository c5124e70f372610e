import warnings

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from avalanche.models import MTSimpleMLP, MultiHeadClassifier, MultiTaskModule
from avalanche.training import Naive
from torch import nn

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.exssnet import convert_to_supermask
from avalanche_ctr.training import ExSSNeT, ExSSNeTPlugin


def small_exssnet(**kwargs) -> ExSSNeT:
    model = MTSimpleMLP(input_size=64, hidden_size=32)
    return ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=32,
        evaluator=quiet_evaluator(),
        **kwargs,
    )


def test_stream_without_task_labels_is_refused_and_nothing_is_lost():
    """Without task labels every experience has task 0 and classes beyond its head."""
    benchmark = SplitDigits(5, return_task_id=False, seed=0)
    strategy = small_exssnet()
    strategy.train(benchmark.train_stream[0])
    x, _ = experience_tensors(benchmark.test_stream[0])
    before = task_logits(strategy.model, x, 0)
    with pytest.raises(ValueError, match="repeats task 0 with classes up to .*new task label"):
        strategy.train(benchmark.train_stream[1])
    assert torch.equal(task_logits(strategy.model, x, 0), before)
    assert strategy.model.trained_tasks == [0]


def test_a_task_never_trained_has_no_head_outside_evaluation():
    benchmark = SplitDigits(5, seed=0)
    strategy = small_exssnet()
    strategy.train(benchmark.train_stream[0])
    with pytest.raises(ValueError, match=r"task 7 was never trained.*has no head.*strategy\.eval"):
        task_logits(strategy.model, torch.rand(2, 1, 8, 8), 7)


@pytest.mark.parametrize("density", [0, -0.1, 1.5, float("nan")])
def test_density_outside_unit_interval_is_refused(density):
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        small_exssnet(density=density)


def test_density_one_is_accepted():
    assert small_exssnet(density=1.0).model.density == 1.0


def test_a_density_leaving_units_without_weights_warns_naming_the_layers():
    """Layer 0 keeps round(0.01 * 64 * 32) = 20 weights for 32 units; the masked output
    layer keeps weights per unit, so it never leaves one empty, but it sets the density
    at which every layer has one weight per unit: 10 / 320."""
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.warns(UserWarning) as caught:
        convert_to_supermask(model, density=0.01)
    (message,) = [str(w.message) for w in caught]
    assert message == (
        "density 0.01 keeps fewer weights than output units in 1 layer(s) (0: 20 of 2,048 "
        "weights for 32 units): some units get no input in a task's mask and the task may "
        "train to chance; use a density of at least 0.0312 (one weight per unit in every layer)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert_to_supermask(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))


class HeadsOnly(MultiTaskModule):
    def __init__(self):
        super().__init__()
        self.classifier = MultiHeadClassifier(64)

    def forward_single_task(self, x, task_label):
        return self.classifier(x.flatten(1), task_label)


def test_model_with_nothing_to_mask_is_refused():
    with pytest.raises(ValueError, match="nothing to mask"):
        convert_to_supermask(HeadsOnly())


def test_layer_that_cannot_be_masked_is_named():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LayerNorm(32), nn.Linear(32, 2))
    with pytest.raises(ValueError, match=r"layer '2' \(LayerNorm\) has parameters"):
        convert_to_supermask(model)


def test_plugin_refuses_a_model_that_was_not_converted():
    model = MTSimpleMLP(input_size=64, hidden_size=16)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_epochs=2,
        plugins=[ExSSNeTPlugin()],
        evaluator=quiet_evaluator(),
    )
    with pytest.raises(TypeError, match="convert_to_supermask"):
        strategy.train(SplitDigits(5).train_stream[0])
