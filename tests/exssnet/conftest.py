"""One ExSSNeT run on SplitDigits, recorded once and shared by the tests of this folder."""

from dataclasses import dataclass, field

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, state_bytes, task_logits
from avalanche.models import MTSimpleMLP

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.training import ExSSNeT


@dataclass
class Run:
    strategy: ExSSNeT
    benchmark: object
    results: dict
    logits_after_own_task: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    free_before: list = field(default_factory=list)
    masks: list = field(default_factory=list)
    state_growth: list = field(default_factory=list)
    head_growth: list = field(default_factory=list)


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


@pytest.fixture(scope="session")
def exssnet_run() -> Run:
    """ExSSNeT with an MTSimpleMLP on 5 SplitDigits tasks, with SGD + momentum + weight
    decay so that exclusivity must hold against an optimizer that moves every weight."""
    torch.manual_seed(0)
    benchmark = SplitDigits(5, seed=0)
    model = MTSimpleMLP(input_size=64, hidden_size=256)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    strategy = ExSSNeT(
        model=model,
        optimizer=optimizer,
        density=0.1,
        mask_epochs=3,
        weight_epochs=2,
        train_mb_size=32,
        eval_mb_size=512,
        evaluator=quiet_evaluator(),
    )
    net = strategy.model
    heads = net.net.classifier
    run = Run(strategy=strategy, benchmark=benchmark, results={})
    for i, experience in enumerate(benchmark.train_stream):
        weights_before = flat(layer.weight.detach().clone() for layer in net.supermask_layers)
        used_before = flat(net.used_masks())
        state_before, head_before = state_bytes(net), state_bytes(heads)
        strategy.train(experience)
        weights_after = flat(layer.weight.detach() for layer in net.supermask_layers)
        run.changed.append(weights_before != weights_after)
        run.masks.append(flat(net.task_masks(i)))
        run.free_before.append(run.masks[-1] & ~used_before)
        if i > 0:
            run.state_growth.append(state_bytes(net) - state_before)
            run.head_growth.append(state_bytes(heads) - head_before)
        x, _ = experience_tensors(benchmark.test_stream[i])
        run.logits_after_own_task.append(task_logits(net, x, i))
    run.results = strategy.eval(benchmark.test_stream)
    return run
