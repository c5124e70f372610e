"""ONE (a fresh adapters model per task) and MTL (all tasks jointly) through ``compare``
(issue 25)."""

import pytest
import torch
from _text_helpers import save_tiny_encoder, write_dsc

from avalanche_ctr.experiments.errors import UsageError
from avalanche_ctr.experiments.runner import Settings, compare


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("headroom")
    return Settings(
        benchmark="dsc",
        data_root=str(write_dsc(root / "dsc", n_train=96, n_test=32)),
        encoder=str(save_tiny_encoder(root / "encoder", tokenizer)),
        n_experiences=2,
        max_length=16,
        n_train=96,
        epochs=10,
        batch_size=16,
        lr=0.01,
        bottleneck=32,
    )


def test_one_and_mtl_run_through_compare(two_domains, tmp_path):
    one, mtl = compare(
        two_domains, ["one", "mtl"], [0], out=tmp_path, progress=False, log=lambda _: None
    )
    assert (tmp_path / "checkpoints" / "one-seed0.pt").exists()
    # ONE: each task learns with adapters of its own; the first is untouched by the second
    assert min(one["acc_matrix"][1]) >= 0.7, one["acc_matrix"]
    assert one["acc_matrix"][1][0] == one["acc_matrix"][0][0]
    # MTL trains nothing until it has every task, then both at once
    assert mtl["acc_matrix"][0][0] <= 0.65, mtl["acc_matrix"]
    assert min(mtl["acc_matrix"][1]) >= 0.7, mtl["acc_matrix"]


def test_one_keeps_each_tasks_adapters_apart(two_domains):
    from avalanche.training import Naive

    from avalanche_ctr.models import AdapterBERT

    torch.manual_seed(0)
    benchmark = two_domains.spec.build(0, two_domains)
    model = AdapterBERT(two_domains.encoder, bottleneck=8, per_task_adapters=True)
    params = [p for p in model.parameters() if p.requires_grad]
    strategy = Naive(
        model=model, optimizer=torch.optim.Adam(params, lr=0.01), train_mb_size=16, train_epochs=1
    )
    strategy.train(benchmark.train_stream[0])
    first = {n: p.detach().clone() for n, p in model.named_parameters() if "adapters.0." in n}
    assert len(first) == 4 * 2 * 2  # fc1 and fc2 (weight, bias) in 2 layers x 2 places
    strategy.train(benchmark.train_stream[1])
    for name, before in first.items():
        assert torch.equal(model.get_parameter(name), before), name
    assert any("adapters.1." in n for n, _ in model.named_parameters())


def test_mtl_refuses_a_second_joint_training(two_domains, tmp_path):
    from avalanche_ctr.experiments.runner import build_strategy
    from avalanche_ctr.experiments.strategies import get_strategy

    benchmark = two_domains.spec.build(0, two_domains)
    strategy = build_strategy(two_domains, get_strategy("mtl"), plugins=[], evaluator=None)
    strategy.train_epochs = 1
    assert strategy.train(benchmark.train_stream[0]) == {}
    strategy.train(benchmark.train_stream[1])
    with pytest.raises(UsageError, match="trains once, on all tasks together"):
        strategy.train(benchmark.train_stream[1])


def test_one_and_mtl_checkpoint_with_the_warm_up_schedule(two_domains, tmp_path):
    """The recipe's --warmup adds WarmupLinearPlugin; every checkpoint must take it."""
    from dataclasses import replace

    settings = replace(two_domains, epochs=1, options={"warmup": 0.1})
    records = compare(
        settings, ["one", "mtl"], [0], out=tmp_path, progress=False, log=lambda _: None
    )
    assert [r["strategy"] for r in records] == ["one", "mtl"]
    assert (tmp_path / "checkpoints" / "one-seed0.pt").exists()
