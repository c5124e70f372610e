"""HAT learns every task and keeps every earlier task's outputs bit for bit, its free
units shrink as tasks claim them, and HATPlugin trains any strategy as HAT does."""

import pytest
import torch
from _hat_helpers import adam, hat_evaluator, hat_strategy
from _helpers import experience_tensors, task_logits
from avalanche.models import MTSimpleMLP
from avalanche.training import Naive

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.hat import HAT, HATPlugin, convert_to_hat


def test_earlier_tasks_outputs_are_unchanged_bit_for_bit(hat_run):
    benchmark = hat_run.benchmark
    accuracies = []
    for task, before in enumerate(hat_run.logits_after_own_task):
        x, y = experience_tensors(benchmark.test_stream[task])
        after = task_logits(hat_run.strategy.model, x, task)
        assert torch.equal(before, after), task
        accuracies.append(float((after.argmax(1) == y).float().mean()))
    assert min(accuracies) >= 0.75 and sum(accuracies) / 5 >= 0.9, accuracies  # chance: 0.5
    # the shared weights did change after the first task: what was kept was protected
    first, last = hat_run.weights[0], hat_run.weights[-1]
    assert all(not torch.equal(a, b) for a, b in zip(first, last, strict=True))


def test_free_units_shrink_as_tasks_claim_them(hat_run):
    net = hat_run.strategy.model
    for layer, mask in enumerate(net.masks()):
        claimed = [cumulative[layer].bool() for cumulative in hat_run.cumulative]
        for earlier, later in zip(claimed, claimed[1:], strict=False):
            assert torch.equal(earlier & later, earlier)  # nothing is ever released
        free = [float((~c).float().mean()) for c in claimed]
        assert free == sorted(free, reverse=True) and free[-1] < free[0] < 1.0, free
        union = torch.zeros_like(claimed[-1])
        for task in range(5):
            union |= mask.used(task)
        assert torch.equal(union, claimed[-1])  # the cumulative mask is the tasks' union


def test_hat_plugin_trains_naive_exactly_as_the_hat_strategy():
    benchmark = SplitDigits(5, seed=0)
    hat = hat_strategy(hat_lr=0.02)
    for experience in benchmark.train_stream[:3]:
        hat.train(experience)
    torch.manual_seed(0)  # as hat_strategy: the same initial weights and batch order
    net = convert_to_hat(MultiHeadMLP(64, (64, 64)))
    naive = Naive(
        model=net,
        optimizer=adam(net.parameters()),
        train_mb_size=32,
        train_epochs=2,
        eval_mb_size=512,
        evaluator=hat_evaluator(),
        plugins=[HATPlugin(hat_lr=0.02)],
    )
    for experience in benchmark.train_stream[:3]:
        naive.train(experience)  # Naive's own make_optimizer runs before each experience
    ours, theirs = hat.model.state_dict(), naive.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert naive.optimizer.param_groups[1]["lr"] == 0.02  # the embeddings' own group
    embeddings = {id(mask.embeddings[2]) for mask in net.masks()}
    assert {id(p) for p in naive.optimizer.param_groups[1]["params"]} == embeddings


def test_a_task_not_trained_yet_claims_no_unit():
    benchmark = SplitDigits(5, seed=0)
    strategy = hat_strategy()
    strategy.train(benchmark.train_stream[0])
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    results = strategy.eval(benchmark.test_stream[1:2])
    assert abs(results["Top1_Acc_Exp/eval_phase/test_stream/Task001/Exp001"] - 0.5) <= 0.1
    after = strategy.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in after)


def test_the_strategy_checks_its_options():
    model = MTSimpleMLP(input_size=64, hidden_size=8)
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="s_max must be positive, got 0"):
        HAT(model=model, optimizer=optimizer, s_max=0)
    with pytest.raises(ValueError, match="hat_lr must be a positive learning rate, got -1"):
        HAT(model=model, optimizer=optimizer, hat_lr=-1)
    with pytest.raises(ValueError, match="mask_reg must be 0 or more, got -0.5"):
        HAT(model=model, optimizer=optimizer, mask_reg=-0.5)
    strategy = HAT(model=model, optimizer=optimizer, s_max=100, thres_cosh=20, mask_reg=0.5)
    assert strategy.model.s_max == 100.0
    assert (strategy.hat_plugin.thres_cosh, strategy.hat_plugin.mask_reg) == (20, 0.5)


def test_hat_plugin_refuses_a_model_without_hat_masks():
    model = MTSimpleMLP(input_size=64, hidden_size=8)
    strategy = Naive(
        model=model,
        optimizer=adam(model.parameters()),
        evaluator=hat_evaluator(),
        plugins=[HATPlugin()],
    )
    with pytest.raises(TypeError, match="convert yours with avalanche_ctr.hat.convert_to_hat"):
        strategy.train(SplitDigits(5, seed=0).train_stream[0])
