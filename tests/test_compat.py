"""The Avalanche workarounds of :mod:`avalanche_ctr.compat` fix what they say they fix."""

import pytest
import torch
import torch.nn.functional as F
from _helpers import quiet_evaluator
from avalanche.models import MultiTaskModule
from avalanche.training import Naive
from avalanche.training.plugins import SynapticIntelligencePlugin

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.compat import (
    PAD_LOGIT,
    CopyingSIPlugin,
    PaddedMultiTaskModule,
    ZeroLossMASPlugin,
)
from avalanche_ctr.experiments.backbones import MultiHeadMLP


def _si_importances(plugin_cls):
    benchmark = SplitDigits(5, seed=0)
    torch.manual_seed(0)
    model = MultiHeadMLP(64, (64, 64))
    plugin = plugin_cls(si_lambda=1000.0)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=32,
        train_epochs=2,
        plugins=[plugin],
        evaluator=quiet_evaluator(),
    )
    strategy.train(benchmark.train_stream[0])
    return torch.cat([p.data for p in plugin.ewc_data[1].values()])


def test_copying_si_plugin_learns_importances_that_avalanche_loses_on_cpu():
    assert _si_importances(SynapticIntelligencePlugin).abs().max() == 0  # Avalanche 0.6 on CPU
    importances = _si_importances(CopyingSIPlugin)
    assert (importances > 0).float().mean() > 0.5


def test_mas_plugin_trains_through_a_mini_batch_with_zero_loss():
    from types import SimpleNamespace

    from avalanche.training.plugins import MASPlugin

    model = torch.nn.Linear(3, 2)
    for cls in (MASPlugin, ZeroLossMASPlugin):
        plugin = cls(lambda_reg=1.0)
        plugin.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        plugin.importance = {n: torch.ones_like(p) for n, p in model.named_parameters()}
        strategy = SimpleNamespace(
            clock=SimpleNamespace(train_exp_counter=1), loss=torch.tensor(0.0), model=model
        )
        if cls is MASPlugin:  # Avalanche 0.6 takes a loss of exactly 0 for a missing one
            with pytest.raises(ValueError, match="Loss is not available"):
                plugin.before_backward(strategy)
        else:
            plugin.before_backward(strategy)
            assert 0 < float(strategy.loss) < 1e-30


def test_eval_adaptation_lists_and_removes_the_heads_evaluation_created():
    from avalanche_ctr.compat import EvalAdaptation

    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (16,))
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_mb_size=64,
        evaluator=quiet_evaluator(),
    )
    strategy.train(benchmark.train_stream[0])
    before = EvalAdaptation(model)
    labels = model.classifier.max_class_label
    strategy.eval(benchmark.test_stream[2:4])  # Avalanche adds heads "2" and "3"
    assert [task for task, _ in before.new_heads(model)] == ["2", "3"]
    before.undo(model)
    assert set(model.classifier.classifiers) == {"0"}
    assert not hasattr(model.classifier, "active_units_T3")
    assert model.classifier.max_class_label == labels


def test_replay_fills_its_buffer_without_avalanches_deprecation_warning():
    import warnings

    from avalanche_ctr.compat import PostAdaptReplayPlugin

    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (16,))
    plugin = PostAdaptReplayPlugin(mem_size=20)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_mb_size=64,
        plugins=[plugin],
        evaluator=quiet_evaluator(),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for experience in benchmark.train_stream[:2]:
            strategy.train(experience)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(plugin.storage_policy.buffer) == 20


@pytest.mark.parametrize("supermask", [False, True])
def test_heads_wider_than_their_classes_run_a_batch_of_several_tasks(supermask):
    """With superfluous head units (10 units for 2 classes) a mini-batch that mixes tasks
    needs the model's output as wide as the heads (``widest_head``)."""
    from avalanche.models.dynamic_modules import avalanche_model_adaptation

    from avalanche_ctr.exssnet import convert_to_supermask

    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (32,), head_units=10)
    if supermask:
        model = convert_to_supermask(model, density=0.5)
    for experience in benchmark.train_stream[:2]:
        avalanche_model_adaptation(model, experience)
    assert model.max_class_label == 10
    x = torch.rand(4, 64)
    out = model(x, torch.tensor([0, 1, 0, 1]))
    assert out.shape == (4, 10)
    for i, task in enumerate([0, 1, 0, 1]):
        torch.testing.assert_close(out[i], model(x[i : i + 1], task)[0])


def test_head_units_must_be_positive():
    with pytest.raises(ValueError, match="head_units must be a positive number of units, got 0"):
        MultiHeadMLP(64, (32,), head_units=0)


class _TwoWidths(PaddedMultiTaskModule):
    """Task 0 has a 2-class head with negative logits, task 1 a 3-class head."""

    def __init__(self) -> None:
        super().__init__()
        self.max_class_label = 3

    def forward_single_task(self, x, task_label):
        if task_label == 0:
            return torch.stack([x[:, 0] - 3.0, x[:, 0] - 1.0], dim=1)
        return torch.stack([x[:, 0], x[:, 0] + 1.0, x[:, 0] - 1.0], dim=1)


def test_padded_columns_never_win_and_weigh_nothing():
    model = _TwoWidths()
    x = torch.rand(6, 1)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    out = model(x, labels)
    assert out.argmax(dim=1).tolist() == [1] * 6  # task 0 predicts its own class 1
    expected = MultiTaskModule.forward(model, x, labels)
    expected[labels == 0, 2] = PAD_LOGIT  # Avalanche's output, padded with PAD_LOGIT
    assert torch.equal(out, expected)
    assert model(x[:0], labels[:0]).shape == (0, 3)
    x = torch.zeros(2, 1)
    single = model(x, torch.tensor([0, 0]))
    assert single.shape == (2, 3) and single.argmax(dim=1).tolist() == [1, 1]
    own = model.forward_single_task(x, 0)
    targets = torch.tensor([1, 0])
    assert torch.allclose(F.cross_entropy(single, targets), F.cross_entropy(own, targets))
    # what Avalanche's own padding does with the same logits: the zero column wins
    zero_padded = MultiTaskModule.forward(model, x, torch.tensor([0, 0]))
    assert zero_padded.argmax(dim=1).tolist() == [2, 2]


def _items(dataset):
    return [dataset[i] for i in range(len(dataset))]


def _same_items(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert [type(x) for x in a] == [type(x) for x in b]
        assert all(
            torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
            for x, y in zip(a, b, strict=True)
        )


def test_a_buffer_stored_as_samples_rebuilds_the_same_items_and_concatenates():
    """A replay buffer (a subset of two experiences, task labels 0 and 1) comes back
    with the same items, of the same types, and Avalanche can grow it as a buffer
    (``Cumulative`` and the reservoir buffer concatenate it with new experiences)."""
    from avalanche.benchmarks.utils.utils import concat_datasets

    from avalanche_ctr.compat import dataset_from_samples, dataset_samples

    stream = SplitDigits(5, seed=0).train_stream
    buffer = concat_datasets([stream[0].dataset, stream[1].dataset]).subset([5, 300, 2, 299])
    state = dataset_samples(buffer)
    assert {type(f) for f in state["fields"]} == {torch.Tensor}
    rebuilt = dataset_from_samples(state)
    assert type(rebuilt) is type(buffer)
    _same_items(_items(rebuilt), _items(buffer))
    assert list(rebuilt.targets_task_labels) == [0, 1, 0, 1]
    grown = concat_datasets([rebuilt, stream[2].dataset])
    _same_items(_items(grown), _items(concat_datasets([buffer, stream[2].dataset])))


def test_each_avalanche_plugin_in_use_has_its_state_named():
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_ctr.compat import PostAdaptReplayPlugin, plugin_state_attributes

    assert plugin_state_attributes(CopyingSIPlugin(si_lambda=1.0)) == ("ewc_data", "syn_data")
    assert plugin_state_attributes(PostAdaptReplayPlugin(mem_size=10)) == ("storage_policy",)
    assert "all_metric_results" in plugin_state_attributes(EvaluationPlugin(loggers=[]))
    assert plugin_state_attributes(object()) is None
