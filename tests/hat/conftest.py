"""One HAT run on SplitDigits, recorded once and shared by the tests."""

from dataclasses import dataclass, field

import pytest
import torch
from _hat_helpers import hat_strategy
from _helpers import experience_tensors, task_logits

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.hat import HAT, HATDiagnostics


@dataclass
class HATRun:
    strategy: HAT
    benchmark: SplitDigits
    results: dict
    logits_after_own_task: list = field(default_factory=list)
    cumulative: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)


@pytest.fixture(scope="session")
def hat_run() -> HATRun:
    """HAT on the five SplitDigits tasks, with AdamW's decoupled weight decay so that the
    protection of earlier tasks must hold against an optimizer that moves every weight."""
    benchmark = SplitDigits(5, seed=0)
    strategy = hat_strategy(
        optimizer=lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.01),
        epochs=4,
    )
    run = HATRun(strategy=strategy, benchmark=benchmark, results={})
    (metric,) = [m for m in strategy.evaluator.metrics if isinstance(m, HATDiagnostics)]
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        net = strategy.model
        run.cumulative.append([mask.cumulative.clone() for mask in net.masks()])
        run.weights.append([layer.layer.weight.detach().clone() for layer in net.hat_layers])
        run.diagnostics.append(metric.result())
        x, _ = experience_tensors(benchmark.test_stream[i])
        run.logits_after_own_task.append(task_logits(net, x, i))
    run.results = strategy.eval(benchmark.test_stream)
    return run
