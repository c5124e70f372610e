import torch
from _helpers import quiet_evaluator
from avalanche.benchmarks import tensors_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.models import MTSimpleMLP
from sklearn.datasets import load_digits

from avalanche_ctr.exssnet import knn_accuracy
from avalanche_ctr.masking import topk_mask
from avalanche_ctr.training import ExSSNeT


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
