import pytest
import torch
from _helpers import quiet_evaluator
from avalanche.benchmarks import tensors_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.models import MTSimpleMLP
from sklearn.datasets import load_digits

from avalanche_ctr.exssnet import (
    KKT_PRESETS,
    ExSSNeTPlugin,
    KKTSettings,
    convert_to_supermask,
    knn_accuracy,
)
from avalanche_ctr.exssnet.kkt import STEPS_LIFT_FRACTION, steps_lift
from avalanche_ctr.masking import topk_mask
from avalanche_ctr.training import ExSSNeT, SupSup


def digits_task(classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    index = torch.cat([torch.nonzero(y == c).flatten() for c in classes])
    return x[index], torch.tensor([classes.index(int(c)) for c in y[index]])


class InitialMaskRecorder(SupervisedPlugin):
    """Records each task's mask at the start of its first epoch (after KKT)."""

    def __init__(self):
        super().__init__()
        self.initial = []

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == 0:
            layers = strategy.model.supermask_layers
            self.initial.append([topk_mask(layer.scores, layer.k) for layer in layers])


def test_kkt_picks_the_earlier_task_that_the_new_task_repeats():
    tasks = [digits_task([0, 1, 2, 3, 4]), digits_task([5, 6, 7, 8, 9])]
    tasks.append(tasks[0])
    benchmark = tensors_benchmark(train_tensors=tasks, test_tensors=tasks, task_labels=[0, 1, 2])
    model = MTSimpleMLP(input_size=64, hidden_size=16)
    recorder = InitialMaskRecorder()
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.05,
        mask_epochs=2,
        weight_epochs=1,
        train_mb_size=32,
        plugins=[recorder],
        evaluator=quiet_evaluator(),
    )
    plugin = strategy.exssnet_plugin
    strategy.train(benchmark.train_stream[0])
    assert plugin.last_kkt is None  # nothing to transfer from yet
    strategy.train(benchmark.train_stream[1])
    strategy.train(benchmark.train_stream[2])
    choice = plugin.last_kkt
    assert choice.source == 0, choice
    assert choice.accuracies[0] > choice.accuracies[1] > choice.chance
    # the repeated task starts from task 0's mask
    for initial, stored in zip(recorder.initial[2], strategy.model.task_masks(0), strict=True):
        assert torch.equal(initial, stored)


def test_kkt_off_starts_from_a_random_mask():
    tasks = [digits_task([0, 1]), digits_task([0, 1])]
    benchmark = tensors_benchmark(train_tensors=tasks, test_tensors=tasks, task_labels=[0, 1])
    model = MTSimpleMLP(input_size=64, hidden_size=16)
    recorder = InitialMaskRecorder()
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        kkt=False,
        plugins=[recorder],
        train_mb_size=32,
        evaluator=quiet_evaluator(),
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
    assert strategy.exssnet_plugin.last_kkt is None
    overlap = sum(
        (a & b).sum().item()
        for a, b in zip(recorder.initial[1], strategy.model.task_masks(0), strict=True)
    )
    assert overlap < 0.5 * strategy.model.n_maskable * 0.1


def test_knn_accuracy_is_leave_one_out():
    features = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert knn_accuracy(features, labels, k=2) == 1.0
    # alternating labels: each point's nearest other point has the other label; a KNN
    # that counted the point itself as its own neighbour would score 1.0 here
    assert knn_accuracy(features, torch.tensor([0, 1, 0, 1, 0, 1]), k=1) == 0.0


class SampleRecorder(SupervisedPlugin):
    """Records the inputs of KKT's sample (what ``ExSSNeTPlugin._sample`` drew)."""

    def __init__(self, plugin):
        super().__init__()
        self.samples = []
        draw = plugin._sample

        def recording(strategy, task):
            x, y = draw(strategy, task)
            self.samples.append(x.clone())
            return x, y

        plugin._sample = recording


def kkt_samples(seed: int) -> list[torch.Tensor]:
    tasks = [digits_task([0, 1, 2, 3, 4]), digits_task([5, 6, 7, 8, 9])]
    benchmark = tensors_benchmark(train_tensors=tasks, test_tensors=tasks, task_labels=[0, 1])
    torch.manual_seed(seed)
    model = MTSimpleMLP(input_size=64, hidden_size=16)
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        mask_epochs=1,
        weight_epochs=0,
        train_mb_size=32,
        evaluator=quiet_evaluator(),
    )
    recorder = SampleRecorder(strategy.exssnet_plugin)
    for experience in benchmark.train_stream:
        strategy.train(experience)
    return recorder.samples


def test_kkts_sample_follows_the_run_seed():
    first, again, other = kkt_samples(0), kkt_samples(0), kkt_samples(1)
    assert len(first) == 1 and first[0].shape == (256, 64)
    assert torch.equal(first[0], again[0])
    assert not torch.equal(first[0], other[0])


class InitialScoresRecorder(SupervisedPlugin):
    """Records each task's float scores at the start of its first epoch (after KKT)."""

    def __init__(self):
        super().__init__()
        self.initial = []

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == 0:
            self.initial.append([layer.scores.detach().clone() for layer in strategy.model._layers])


def balanced_task() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_task([0, 1])
    index = torch.cat([torch.nonzero(y == c).flatten()[:60] for c in (0, 1)])
    return x[index], y[index]


def two_task_run(**options) -> tuple[ExSSNeT, InitialScoresRecorder, SampleRecorder]:
    """Two copies of one task of 2 x 60 digits under ExSSNeT with ``options``."""
    tasks = [balanced_task(), balanced_task()]
    benchmark = tensors_benchmark(train_tensors=tasks, test_tensors=tasks, task_labels=[0, 1])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    scores = InitialScoresRecorder()
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.2,
        mask_epochs=2,
        weight_epochs=1,
        train_mb_size=32,
        plugins=[scores],
        evaluator=quiet_evaluator(),
        **options,
    )
    samples = SampleRecorder(strategy.exssnet_plugin)
    for experience in benchmark.train_stream:
        strategy.train(experience)
    return strategy, scores, samples


def test_kkt_samples_and_neighbours_do_what_they_say():
    strategy, _, samples = two_task_run(kkt_samples=40)
    assert samples.samples[0].shape == (40, 64)
    assert strategy.exssnet_plugin.last_kkt.source == 0
    # all 120 samples of two balanced classes, each voted on by the 119 others: the
    # other class always has one more, so leave-one-out accuracy is 0 and no task is chosen
    strategy, _, samples = two_task_run(kkt_samples=120, kkt_k=119)
    assert samples.samples[0].shape == (120, 64)
    choice = strategy.exssnet_plugin.last_kkt
    assert choice.accuracies == {0: 0.0} and choice.source is None


def test_kkt_feature_points_read_before_and_after_the_relu():
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    net = convert_to_supermask(model, density=0.3)
    x, _ = balanced_task()
    net.eval()
    before = net.features(x, 0, point="pre_activation")
    after = net.features(x, 0, point="post_activation")
    assert before.shape == after.shape == (120, 32)
    assert (before < 0).any() and torch.equal(torch.relu(before), after)
    hidden = net.net[0]
    assert torch.allclose(before, x @ (hidden.weight * net.untrained_masks(0)[0]).T)


def test_pre_activation_features_need_a_linear_layer_before_the_output():
    net = convert_to_supermask(torch.nn.Sequential(torch.nn.Linear(64, 2)), density=0.3)
    with pytest.raises(ValueError, match="has none there; use kkt_features='post_activation'"):
        net.features(torch.zeros(3, 64), 0, point="pre_activation")


def test_kkt_init_copies_scores_or_lifts_the_mask():
    strategy, scores, _ = two_task_run(kkt_init="copy_scores")
    net = strategy.model
    assert strategy.exssnet_plugin.last_kkt.source == 0
    copied = torch.cat([s.reshape(-1) for s in scores.initial[1]])
    assert torch.equal(copied, net.task_scores_0)  # task 0's final scores, exactly
    assert net.task_scores_1.dtype == torch.float32 and net.task_scores_1.numel() == net.n_maskable

    for lift in (1.0, 10.0):  # the default, and a mask that stays on task 0's longer
        strategy, scores, _ = two_task_run(kkt_init="lift_mask", kkt_lift=lift)
        net = strategy.model
        assert strategy.exssnet_plugin.last_kkt.source == 0
        assert not hasattr(net, "task_scores_0")  # only the bit-packed masks are kept
        layers, masks = net._layers, net.task_masks(0)
        for layer, start, source in zip(layers, scores.initial[1], masks, strict=True):
            assert torch.equal(topk_mask(start, layer.k, rule=layer.topk_rule), source)
            # the source's entries sit lift x the largest fresh score above the others
            ratio = float(start[source].min() / start[~source].max())
            assert lift <= ratio < lift + 1.5, (lift, ratio)


def test_kkt_presets_and_overrides():
    official = ExSSNeTPlugin(kkt_preset="official").kkt_settings
    assert official == KKTSettings(
        samples=1280, k=200, features="pre_activation", init="copy_scores"
    )
    assert ExSSNeTPlugin().kkt_settings == KKT_PRESETS["default"]
    mixed = ExSSNeTPlugin(kkt_preset="official", kkt_k=50, kkt_init="lift_mask").kkt_settings
    assert (mixed.samples, mixed.k, mixed.features, mixed.init) == (
        1280,
        50,
        "pre_activation",
        "lift_mask",
    )
    with pytest.raises(
        ValueError, match="unknown kkt_preset 'paper'; use one of default, official"
    ):
        ExSSNeTPlugin(kkt_preset="paper")
    with pytest.raises(ValueError, match="unknown kkt_init 'copy'; use one of lift_mask, copy_"):
        ExSSNeTPlugin(kkt_init="copy")


def test_steps_lift_is_a_fifth_of_the_phase_within_one_and_ten():
    assert STEPS_LIFT_FRACTION == 0.2
    # issue 27's stream: 282 steps of 0.01; split_digits: 8 steps of 0.01
    assert steps_lift(0.1, 0.01, 282) == pytest.approx(5.64)
    assert steps_lift(0.0357, 0.01, 282) == 10.0
    assert steps_lift(0.125, 0.01, 8) == 1.0
    assert steps_lift(0.1, 0.01, 100) == pytest.approx(2.0)
    assert steps_lift(0.1, 0.01, 100, fraction=0.25, most=2.0) == 2.0
    assert steps_lift(0.1, 0.01, 0) == 1.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0.0, 0.01, 8), "largest must be"),
        ((0.1, -0.01, 8), "lr must be"),
        ((0.1, 0.01, -1), "steps must be"),
        ((0.1, 0.01, 2.5), "steps must be"),
    ],
)
def test_steps_lift_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        steps_lift(*arguments)
    with pytest.raises(ValueError, match="most must be"):
        steps_lift(0.1, 0.01, 8, most=0.5)


@pytest.mark.parametrize(
    ("lr", "optimizer"), [(0.01, "adam"), (0.3, "adam"), (1.0, "adam"), (1.0, "sgd")]
)
def test_steps_lift_lifts_each_layer_by_its_own_rule(lr, optimizer):
    """120 samples in batches of 32 and 2 mask epochs: 8 steps, so with Adam each layer's
    lift is min(10, max(1, 0.2 * lr * 8 / its largest fresh score)): 1 at 0.01, one per
    layer (fan-in 64 and 32) at 0.3, 10 and 9 at 1.0; with SGD 1."""
    tasks = [balanced_task(), balanced_task()]
    benchmark = tensors_benchmark(train_tensors=tasks, test_tensors=tasks, task_labels=[0, 1])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    scores = InitialScoresRecorder()
    strategy = ExSSNeT(
        model=model,
        optimizer=(torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(
            model.parameters(), lr=lr
        ),
        density=0.2,
        mask_epochs=2,
        weight_epochs=1,
        train_mb_size=32,
        plugins=[scores],
        evaluator=quiet_evaluator(),
        kkt_samples=40,
    )
    assert strategy.exssnet_plugin.kkt_settings.lift == "steps"  # ExSSNeT's default
    for experience in benchmark.train_stream:
        strategy.train(experience)
    assert strategy.exssnet_plugin.last_kkt.source == 0
    net = strategy.model
    lifts = []
    for layer, start, source in zip(net._layers, scores.initial[1], net.task_masks(0), strict=True):
        fresh = start[~source].max()  # the largest fresh score, to within a hair
        lift = min(10.0, max(1.0, 0.2 * lr * 8 / float(fresh))) if optimizer == "adam" else 1.0
        ratio = float(start[source].min() / fresh)
        assert lift <= ratio < lift + 1.5, (lr, lift, ratio)
        assert torch.equal(topk_mask(start, layer.k, rule=layer.topk_rule), source)
        lifts.append(lift)
    if (lr, optimizer) == (0.3, "adam"):
        assert 1.0 < lifts[1] < lifts[0] < 10.0, lifts
    if (lr, optimizer) == (1.0, "adam"):
        assert lifts[0] == 10.0 and 1.0 < lifts[1] < 10.0, lifts


def test_supsup_keeps_the_presets_lift_and_exssnet_takes_steps():
    def settings(strategy_class, **options):
        model = MTSimpleMLP(input_size=64, hidden_size=16)
        strategy = strategy_class(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
            evaluator=quiet_evaluator(),
            **options,
        )
        return strategy.exssnet_plugin.kkt_settings

    assert settings(ExSSNeT).lift == "steps"
    assert settings(SupSup, kkt=True).lift == 1.0
    assert settings(ExSSNeT, kkt_lift=None).lift == 1.0  # None: the preset's
    assert settings(SupSup, kkt=True, kkt_lift="steps").lift == "steps"
    with pytest.raises(ValueError, match="kkt_lift must be a positive number or one of steps"):
        settings(ExSSNeT, kkt_lift="stairs")


def test_a_lift_per_layer_needs_one_number_per_supermask_layer():
    strategy, _, _ = two_task_run()
    net = strategy.model
    net.start_task(2)
    with pytest.raises(ValueError, match="one number per supermask layer \\(2\\)"):
        net.init_scores_from_task(0, lift=[1.0])
    net.init_scores_from_task(0, lift=[1.0, 3.0])
    layers, masks = net._layers, net.task_masks(0)
    for layer, mask, lift in zip(layers, masks, (1.0, 3.0), strict=True):
        scores = layer.scores.detach()
        ratio = float(scores[mask].min() / scores[~mask].max())
        assert lift <= ratio < lift + 1.5
