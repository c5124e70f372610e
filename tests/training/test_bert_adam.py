"""BertAdam and its per-experience schedule: the official CTR code's optimizer."""

import math

import pytest
import torch
from _helpers import quiet_evaluator
from avalanche.training import Naive

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.ctr.lifecycle import WarmupLinearPlugin, warmup_linear
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.training import BertAdam, BertAdamSchedule
from avalanche_ctr.training.bert_adam import official_no_decay


def test_first_step_has_no_bias_correction_and_decay_skips_the_exempt():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    b = torch.nn.Parameter(torch.tensor([3.0]))
    opt = BertAdam([w, b], lr=0.1, weight_decay=0.5, max_grad_norm=None, no_decay=[b])
    w.grad, b.grad = torch.tensor([0.2, -0.4]), torch.tensor([0.1])
    opt.step()
    # m = 0.1 g, v = 0.001 g^2: the update is 0.1 g / (sqrt(0.001) |g| + 1e-6), no 1/(1-b^t)
    def moved(g, p, decay):
        return p - 0.1 * (0.1 * g / (math.sqrt(0.001) * abs(g) + 1e-6) + decay * p)

    assert w.tolist() == pytest.approx([moved(0.2, 1.0, 0.5), moved(-0.4, -2.0, 0.5)])
    assert b.item() == pytest.approx(moved(0.1, 3.0, 0.0))


def test_each_tensor_is_clipped_on_its_own():
    big, small = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = BertAdam([big, small], lr=1e-3, weight_decay=0.0, max_grad_norm=1.0)
    big.grad, small.grad = torch.tensor([30.0, 40.0]), torch.tensor([0.3, 0.4])
    opt.step()
    assert big.grad.norm().item() == pytest.approx(1.0)  # clipped from 50
    assert small.grad.tolist() == pytest.approx([0.3, 0.4])  # under the norm: untouched


def test_the_internal_schedule_follows_each_parameter_step():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = BertAdam([p], lr=1.0, warmup=0.5)
    group = opt.param_groups[0]
    assert opt.scheduled_lr(group, 3) == 1.0  # no t_total yet: constant
    group["t_total"] = 4
    assert [opt.scheduled_lr(group, s) for s in range(4)] == [
        warmup_linear(s / 4, 0.5) for s in range(4)
    ]
    p.grad = torch.ones(1)
    opt.step()  # step 0 of the warm-up: rate 0, nothing moves
    assert p.item() == 0.0 and opt.state[p]["step"] == 1


def test_official_no_decay_names():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.LayerNorm = torch.nn.LayerNorm(2)
    exempt = {id(p) for p in official_no_decay(model)}
    named = dict(model.named_parameters())
    assert exempt == {id(named[n]) for n in ("0.bias", "LayerNorm.weight", "LayerNorm.bias")}


def test_every_experience_runs_the_whole_schedule_twice_over():
    torch.manual_seed(0)
    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (16,))
    opt = BertAdam(model.parameters(), lr=0.01, warmup=0.2, no_decay=official_no_decay(model))
    seen = []

    class Watch(WarmupLinearPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            super().before_training_iteration(strategy, **kwargs)
            group = strategy.optimizer.param_groups[0]
            step = strategy.optimizer.state[group["params"][0]].get("step", 0)
            seen.append((group["lr"], strategy.optimizer.scheduled_lr(group, step)))

    strategy = Naive(
        model=model,
        optimizer=opt,
        train_mb_size=32,
        train_epochs=2,
        plugins=[BertAdamSchedule(), Watch(0.2)],
        evaluator=quiet_evaluator(),
    )
    per_exp = []
    for experience in benchmark.train_stream[:2]:
        start = len(seen)
        strategy.train(experience)
        total = opt.param_groups[0]["t_total"]
        assert total == 2 * math.ceil(len(experience.dataset) / 32)
        per_exp.append(seen[start:])
        # the moments and step counts of the experience's own steps only
        assert opt.state[opt.param_groups[0]["params"][0]]["step"] == total
    for steps in per_exp:
        total = len(steps)
        for s, (outer, inner) in enumerate(steps):
            factor = warmup_linear(s / total, 0.2)
            assert outer == pytest.approx(0.01 * factor)
            assert inner == pytest.approx(0.01 * factor * factor)  # the official square


def test_the_schedule_plugin_refuses_another_optimizer():
    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (16,))
    strategy = Naive(
        model=model,
        optimizer=torch.optim.Adam(model.parameters()),
        plugins=[BertAdamSchedule()],
        evaluator=quiet_evaluator(),
    )
    with pytest.raises(TypeError, match="BertAdam"):
        strategy.train(benchmark.train_stream[0])
