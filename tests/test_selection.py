"""BestEpochPlugin: the epoch that scores best on the dev split is the one kept."""

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import tiny_ctr_model
from avalanche.training import Naive

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.selection import BestEpochPlugin
from avalanche_ctr.training import CTR


def dev_accuracy(model, experience, task):
    x, y = experience_tensors(experience)
    return float((task_logits(model, x, task).argmax(dim=1) == y).float().mean())


def test_ctr_keeps_its_best_dev_epoch_and_still_forgets_nothing(tokenizer, sentiment_stream):
    torch.manual_seed(0)
    model = tiny_ctr_model(tokenizer)
    dev = sentiment_stream.test_stream  # the tiny stream's held-out split serves as dev
    best = BestEpochPlugin(dev, batch_size=16)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
        train_mb_size=16,
        train_epochs=5,
        plugins=[best],
        evaluator=quiet_evaluator(),
    )
    first = None
    for task, experience in enumerate(sentiment_stream.train_stream[:2]):
        strategy.train(experience)
        history = best.history[-1]
        assert len(history) == 5
        assert best.best_epoch == history.index(max(history))
        assert dev_accuracy(model, dev[task], task) == pytest.approx(max(history))
        if task == 0:
            x, _ = experience_tensors(dev[0])
            first = task_logits(model, x, 0)
    assert torch.equal(task_logits(model, x, 0), first)  # bit-identical on the CPU
    assert any(h.index(max(h)) < 4 for h in best.history), best.history  # a restore happened


def test_any_strategy_gets_its_best_epoch_back():
    torch.manual_seed(0)
    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (32,))
    best = BestEpochPlugin(benchmark.test_stream)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        train_epochs=4,
        plugins=[best],
        evaluator=quiet_evaluator(),
    )
    strategy.train(benchmark.train_stream[0])
    task = benchmark.train_stream[0].task_label
    assert max(best.history[0]) > 0.9
    assert dev_accuracy(model, benchmark.test_stream[0], task) == pytest.approx(
        max(best.history[0])
    )


def dev_loss(model, experience, task):
    x, y = experience_tensors(experience)
    return float(torch.nn.functional.cross_entropy(task_logits(model, x, task), y))


def test_the_loss_criterion_keeps_the_lowest_dev_loss_epoch():
    """By loss (the official CTR code's choice), the kept epoch is the one of the lowest
    mean dev cross-entropy, which a high learning rate makes differ from the last one."""
    torch.manual_seed(0)
    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (32,))
    best = BestEpochPlugin(benchmark.test_stream, criterion="loss")
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=2.0),
        train_epochs=6,
        plugins=[best],
        evaluator=quiet_evaluator(),
    )
    strategy.train(benchmark.train_stream[0])
    task = benchmark.train_stream[0].task_label
    losses = best.loss_history[0]
    assert len(losses) == 6 and len(best.history[0]) == 6
    assert best.best_epoch == losses.index(min(losses)) < 5, losses  # a restore happened
    assert best.best_loss == min(losses)
    assert dev_loss(model, benchmark.test_stream[0], task) == pytest.approx(min(losses), rel=1e-5)
    assert best.state_dict()["loss_history"] == [losses]
    with pytest.raises(ValueError, match="criterion must be one of"):
        BestEpochPlugin(benchmark.test_stream, criterion="f1")


def test_a_misplaced_or_mismatched_plugin_is_refused(tokenizer, sentiment_stream):
    model = tiny_ctr_model(tokenizer)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        evaluator=quiet_evaluator(),
    )
    strategy.plugins.append(BestEpochPlugin(sentiment_stream.test_stream))
    with pytest.raises(ValueError, match="comes after CTRPlugin"):
        strategy.train(sentiment_stream.train_stream[0])
    short = CTR(
        model=tiny_ctr_model(tokenizer),
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        plugins=[BestEpochPlugin(sentiment_stream.test_stream[:1])],
        evaluator=quiet_evaluator(),
    )
    with pytest.raises(ValueError, match="has no validation experience"):
        short.train(sentiment_stream.train_stream[1])
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        BestEpochPlugin(sentiment_stream.test_stream, batch_size=0)


def test_exssnet_keeps_the_best_epoch_of_its_last_phase():
    """ExSSNeT trains scores, then weights under a fixed mask: only weight-phase epochs
    compete, and the restored state is one that was evaluated."""
    from avalanche_ctr.training import ExSSNeT

    torch.manual_seed(0)
    benchmark = SplitDigits(5, seed=0)
    model = MultiHeadMLP(64, (32,))
    best = BestEpochPlugin(benchmark.test_stream)
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.3,
        mask_epochs=2,
        weight_epochs=3,
        plugins=[best],
        evaluator=quiet_evaluator(),
    )
    for experience in benchmark.train_stream[:2]:
        strategy.train(experience)
        history = best.history[-1]
        assert len(history) == 5
        assert best.best_epoch >= 2  # a weight-phase epoch
        assert best.best_accuracy == max(history[2:])
    task = benchmark.train_stream[1].task_label
    accuracy = dev_accuracy(strategy.model, benchmark.test_stream[1], task)
    assert accuracy == pytest.approx(max(best.history[-1][2:]))
