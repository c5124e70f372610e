import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from avalanche.models import MTSimpleMLP, MultiHeadClassifier, MultiTaskModule
from torch import nn

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.exssnet import (
    SupermaskConv2d,
    SupermaskLinear,
    SupermaskNet,
    TaskBatchNorm,
    convert_to_supermask,
)
from avalanche_ctr.training import ExSSNeT, SupSup


class MTSmallCNN(MultiTaskModule):
    """A SimpleCNN-like net with BatchNorm and a multi-head classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.classifier = MultiHeadClassifier(128)

    def forward_single_task(self, x, task_label):
        return self.classifier(self.features(x), task_label)


def test_conversion_replaces_layers_and_keeps_heads():
    net = convert_to_supermask(MTSmallCNN(), density=0.2)
    assert isinstance(net, SupermaskNet)
    kinds = [type(m) for m in net.net.features]
    assert kinds[:5] == [SupermaskConv2d, TaskBatchNorm, nn.ReLU, SupermaskConv2d, TaskBatchNorm]
    assert isinstance(net.net.classifier, MultiHeadClassifier)
    assert net.n_maskable == 16 * 9 + 32 * 16 * 9
    assert all(layer.k == round(0.2 * layer.weight.numel()) for layer in net.supermask_layers)
    # signed-constant weights: one magnitude per layer
    for layer in net.supermask_layers:
        assert layer.weight.abs().unique().numel() == 1
        assert not layer.weight.requires_grad


def test_cnn_with_per_task_batchnorm_learns_and_keeps_old_tasks():
    benchmark = SplitDigits(5, seed=0)
    model = MTSmallCNN()
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.2,
        mask_epochs=3,
        weight_epochs=2,
        train_mb_size=32,
        evaluator=quiet_evaluator(),
    )
    net = strategy.model
    first = None
    x, _ = experience_tensors(benchmark.test_stream[0])
    for i, experience in enumerate(benchmark.train_stream[:3]):
        strategy.train(experience)
        if i == 0:
            first = task_logits(net, x, 0)
            stats = net.batchnorms[0].per_task["0"].running_mean.clone()
    assert (task_logits(net, x, 0) - first).abs().max() <= 1e-6
    assert torch.equal(net.batchnorms[0].per_task["0"].running_mean, stats)
    assert sorted(net.batchnorms[0].per_task.keys()) == ["0", "1", "2"]
    results = strategy.eval(benchmark.test_stream[:3])
    accuracies = [v for k, v in results.items() if k.startswith("Top1_Acc_Exp")]
    assert min(accuracies) >= 0.85, accuracies


def test_plain_model_gets_its_last_layer_masked_per_task():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
    net = convert_to_supermask(model, density=0.5)
    assert [type(m) for m in net.net][1::2] == [SupermaskLinear, SupermaskLinear]
    benchmark = SplitDigits(5, seed=0)
    strategy = ExSSNeT(
        model=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=0.01),
        train_mb_size=32,
        mask_epochs=3,
        evaluator=quiet_evaluator(),
    )
    for experience in benchmark.train_stream[:2]:
        strategy.train(experience)
    results = strategy.eval(benchmark.test_stream[:2])
    accuracies = [v for k, v in results.items() if k.startswith("Top1_Acc_Exp")]
    assert min(accuracies) >= 0.85, accuracies


def test_cached_evaluation_equals_recomputed_masked_weights():
    net = convert_to_supermask(MTSimpleMLP(input_size=64, hidden_size=32), density=0.3)
    net.start_task(0)
    net.finish_task()
    x = torch.rand(5, 1, 8, 8)
    layer = net.supermask_layers[0]
    net.activate(0)
    expected = x.flatten(1) @ (layer.weight * net.task_masks(0)[0]).T
    assert torch.allclose(layer(x.flatten(1)), expected)


@pytest.mark.parametrize(("rule", "floor"), [("unit", 0), ("layer", 0), ("layer_floor", 3)])
def test_output_topk_rules_keep_exactly_k_weights_of_the_output_layer(rule, floor):
    """Each rule of a masked output layer keeps exactly its ``k`` weights in every stored
    mask (10 units × 32 inputs at density 0.5: 160); ``layer_floor`` keeps at least
    ``floor`` in every unit; the hidden layer keeps the top half of its weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    net = convert_to_supermask(model, density=0.5, output_topk=rule, output_floor=floor)
    strategy = SupSup(
        model=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=0.05),
        density=0.5,
        train_epochs=1,
        train_mb_size=32,
        evaluator=quiet_evaluator(),
    )
    strategy.train(SplitDigits(5, seed=0).train_stream[0])
    hidden, output = net.task_masks(0)
    assert int(hidden.sum()) == 64 * 32 // 2
    assert int(output.sum()) == 160
    per_unit = output.sum(dim=1)
    if rule == "unit":
        assert per_unit.tolist() == [16] * 10
    if rule == "layer_floor":
        assert int(per_unit.min()) >= 3
    # the two classes of the task pull weights to their units under a layer-wide rule
    if rule != "unit":
        assert per_unit.tolist() != [16] * 10


def test_an_output_floor_above_the_density_raises_k_and_a_floor_above_fan_in_is_refused():
    model = nn.Sequential(nn.Linear(100, 10))
    net = convert_to_supermask(model, density=0.02, output_topk="layer_floor", output_floor=3)
    output = net.supermask_layers[-1]
    assert output.k == 30  # 3 in each of 10 units, more than 0.02 x 1000 = 20
    assert output.untrained_mask(torch.Generator().manual_seed(0)).sum(dim=1).min() >= 3
    with pytest.raises(ValueError, match="between 0 and the fan-in 100, got 101"):
        convert_to_supermask(model, density=0.02, output_topk="layer_floor", output_floor=101)
    with pytest.raises(ValueError, match="unknown top-k rule 'per_unit'"):
        convert_to_supermask(model, density=0.02, output_topk="per_unit")
