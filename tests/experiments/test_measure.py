import torch
from _helpers import quiet_evaluator, state_bytes
from avalanche.training import EWC, Cumulative, Naive

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.experiments.measure import PeakMemory, stored_bytes


def _train(cls, n_experiences=2, **kwargs):
    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (32,))
    strategy = cls(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=64,
        evaluator=quiet_evaluator(),
        **kwargs,
    )
    sizes = []
    for experience in benchmark.train_stream[:n_experiences]:
        strategy.train(experience)
        sizes.append(stored_bytes(strategy))
    return benchmark, model, sizes


def test_naive_stores_only_its_model_and_grows_by_one_head():
    _, model, sizes = _train(Naive)
    assert sizes[1] == state_bytes(model)
    second_head = state_bytes(model.classifier.classifiers["1"]) + 2  # + its active units
    assert sizes[1] - sizes[0] == second_head


def test_ewc_stores_parameters_and_importances_per_task():
    _, model, sizes = _train(EWC, ewc_lambda=1.0)
    n_params = 64 * 32 + 32 + 2 * (32 * 2 + 2)
    assert sizes[1] - sizes[0] >= 2 * 4 * (n_params - 66)  # a copy + an importance per weight


def test_cumulative_counts_the_data_it_keeps():
    benchmark, _, sizes = _train(Cumulative)
    second = len(benchmark.train_stream[1].dataset) * 8 * 8 * 4
    assert sizes[1] - sizes[0] >= second


def test_peak_memory_sees_an_allocation():
    with PeakMemory("cpu") as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB
        block += 1
    assert memory.peak is not None
    assert memory.peak >= 60 * 2**20
