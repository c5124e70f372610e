"""Avalanche's own strategy-test patterns, run against our strategies (and Naive beside
them): the canonical loop that evaluates the whole test stream after every experience,
periodic evaluation (``eval_every``), ``EarlyStoppingPlugin`` and ``LRSchedulerPlugin`` on
a validation stream, training a whole stream in one call, streams that repeat a task
label, and ``EvaluationPlugin`` with accuracy, loss, forgetting, forward transfer and BWT
through Avalanche's loggers (after Avalanche's ``tests/training/test_strategies.py``)."""

import io

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import DOMAINS, LENGTH, task_data, tiny_ctr_model
from avalanche.benchmarks import tensors_benchmark
from avalanche.evaluation.metrics import (
    accuracy_metrics,
    bwt_metrics,
    forgetting_metrics,
    forward_transfer_metrics,
    loss_metrics,
)
from avalanche.logging import CSVLogger, TensorboardLogger, TextLogger
from avalanche.models import MTSimpleMLP
from avalanche.training import Naive
from avalanche.training.plugins import EarlyStoppingPlugin, EvaluationPlugin, LRSchedulerPlugin

from avalanche_ctr.benchmarks import SplitDigits, text_benchmark
from avalanche_ctr.hat import HAT
from avalanche_ctr.training import CTR, ExSSNeT, SupSup

IMAGE = ("exssnet", "ssnet", "supsup", "naive")
WITH_HAT = (*IMAGE, "hat")
NO_FORGETTING = ("exssnet", "supsup", "ctr", "hat")


def image_strategy(name: str, evaluator=None, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    # HAT freezes the units a task claims: a later task needs room beside them
    model = MTSimpleMLP(input_size=64, hidden_size=128 if name == "hat" else 32)
    optimizer = kwargs.pop("optimizer", None) or torch.optim.Adam(model.parameters(), lr=0.01)
    common = {
        "model": model,
        "optimizer": optimizer,
        "train_mb_size": 32,
        "eval_mb_size": 256,
        "evaluator": evaluator or quiet_evaluator(),
        **kwargs,
    }
    if name == "naive":
        return Naive(train_epochs=2, **common)
    if name == "hat":
        return HAT(train_epochs=2, **common)
    if name == "supsup":
        return SupSup(density=0.1, train_epochs=2, **common)
    return ExSSNeT(
        density=0.1, mask_epochs=1, weight_epochs=1, exclusive=name == "exssnet", **common
    )


def ctr_strategy(tokenizer, evaluator=None, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = tiny_ctr_model(tokenizer)
    return CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=16,
        train_epochs=2,
        eval_mb_size=64,
        evaluator=evaluator or quiet_evaluator(),
        **kwargs,
    )


def full_evaluator(tmp_path, text: io.StringIO) -> EvaluationPlugin:
    return EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(epoch=True, experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        forward_transfer_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        loggers=[
            TextLogger(text),
            CSVLogger(str(tmp_path / "csv")),
            TensorboardLogger(tmp_path / "tb"),
        ],
    )


@pytest.fixture(scope="module")
def digits():
    return SplitDigits(5, seed=0)


def _accuracies(results: dict, n: int) -> list[float]:
    return [
        results[f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"] for j in range(n)
    ]


# --------------------------------------------------------------------- canonical loop
@pytest.mark.parametrize("name", WITH_HAT)
def test_canonical_loop_with_every_metric_and_logger(name, digits, tmp_path):
    text = io.StringIO()
    strategy = image_strategy(name, full_evaluator(tmp_path, text), eval_every=1)
    for experience in digits.train_stream:
        strategy.train(experience, eval_streams=[digits.test_stream])
        results = strategy.eval(digits.test_stream)
    accuracies = _accuracies(results, 5)
    assert min(accuracies) >= 0.8, accuracies
    if name in NO_FORGETTING:
        assert results["StreamForgetting/eval_phase/test_stream"] == 0.0
        assert results["StreamBWT/eval_phase/test_stream"] == 0.0
    assert "StreamForwardTransfer/eval_phase/test_stream" in results
    assert "Top1_Acc_Stream/eval_phase/test_stream" in text.getvalue()
    assert (tmp_path / "csv" / "eval_results.csv").read_text().count("\n") > 5
    assert any((tmp_path / "tb").iterdir())


@pytest.mark.parametrize("name", ("exssnet", "ssnet", "supsup"))
def test_unseen_tasks_score_at_chance_and_leave_no_trace(name, digits):
    strategy = image_strategy(name)
    strategy.train(digits.train_stream[0])
    heads = set(strategy.model.net.classifier.classifiers)
    state = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    rng = torch.get_rng_state()
    first = _accuracies(strategy.eval(digits.test_stream), 5)
    again = _accuracies(strategy.eval(digits.test_stream), 5)
    assert first == again  # deterministic
    unseen = sum(first[1:]) / 4
    assert abs(unseen - 0.5) <= 0.05, first  # 2-way tasks: chance is 50 %
    assert set(strategy.model.net.classifier.classifiers) == heads
    assert strategy.model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in strategy.model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


# --------------------------------------------------------------- bit-identical training
def _final_logits(strategy, stream, n):
    return [task_logits(strategy.model, experience_tensors(stream[j])[0], j) for j in range(n)]


@pytest.mark.parametrize("name", ("exssnet", "ssnet", "supsup"))
def test_evaluating_every_task_at_every_step_changes_no_result(name, digits):
    """A run that evaluates every task after every experience and during training ends
    bit-identically to one that evaluates only the tasks seen so far."""
    quiet = image_strategy(name)
    for i, experience in enumerate(digits.train_stream):
        quiet.train(experience)
        seen = _accuracies(quiet.eval(digits.test_stream[: i + 1]), i + 1)
    busy = image_strategy(name, eval_every=1)
    for experience in digits.train_stream:
        busy.train(experience, eval_streams=[digits.test_stream])
        everything = _accuracies(busy.eval(digits.test_stream), 5)
    assert everything == seen
    for ours, theirs in zip(
        _final_logits(busy, digits.test_stream, 5),
        _final_logits(quiet, digits.test_stream, 5),
        strict=True,
    ):
        assert torch.equal(ours, theirs)


def test_ctr_evaluating_every_task_at_every_step_changes_no_result(tokenizer, sentiment_stream):
    test = sentiment_stream.test_stream
    quiet = ctr_strategy(tokenizer)
    for i, experience in enumerate(sentiment_stream.train_stream):
        quiet.train(experience)
        seen = _accuracies(quiet.eval(test[: i + 1]), i + 1)
    busy = ctr_strategy(tokenizer, eval_every=1)
    for experience in sentiment_stream.train_stream:
        busy.train(experience, eval_streams=[test])
        everything = _accuracies(busy.eval(test), 3)
    assert everything == seen
    for ours, theirs in zip(
        _final_logits(busy, test, 3), _final_logits(quiet, test, 3), strict=True
    ):
        assert torch.equal(ours, theirs)


def test_ctr_canonical_loop_with_every_metric(tokenizer, sentiment_stream, tmp_path):
    text = io.StringIO()
    strategy = ctr_strategy(tokenizer, full_evaluator(tmp_path, text), eval_every=1)
    untrained = _accuracies(strategy.eval(sentiment_stream.test_stream), 3)
    assert all(abs(a - 0.5) <= 0.1 for a in untrained), untrained  # balanced 2-way tasks
    for experience in sentiment_stream.train_stream:
        strategy.train(experience, eval_streams=[sentiment_stream.test_stream])
        results = strategy.eval(sentiment_stream.test_stream)
    assert results["StreamForgetting/eval_phase/test_stream"] == 0.0
    assert "StreamForwardTransfer/eval_phase/test_stream" in results
    assert len(strategy.model.classifier.classifiers) == 3


# ------------------------------------------------------------------ periodic evaluation
@pytest.mark.parametrize("name", WITH_HAT)
def test_periodic_evaluation_sees_the_task_in_training(name, digits):
    """As Avalanche's periodic-eval test: with ``eval_every=1`` and 2 epochs the stream is
    evaluated before training and after each epoch; the task in training is evaluated
    with its current mask, and learns."""
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[])
    strategy = image_strategy(name, evaluator, eval_every=1)
    strategy.train(digits.train_stream[0], eval_streams=[digits.test_stream[:2]])
    curve = evaluator.get_all_metrics()["Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000"][1]
    assert len(curve) == 3  # before training, after epoch 1, after epoch 2
    assert curve[-1] >= 0.9 and curve[-1] > curve[0]


def _shuffled(experience):
    """An experience's inputs and targets in a fixed random order (they come by class)."""
    x, y = experience_tensors(experience)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


def _digits_with_validation(digits):
    """The digits stream with a quarter of each task's training data as ``valid_stream``
    (Avalanche 0.6's ``benchmark_with_validation_stream`` drops the task labels)."""
    train, valid = [], []
    for experience in digits.train_stream:
        x, y = _shuffled(experience)
        cut = len(x) // 4
        valid.append((x[:cut], y[:cut]))
        train.append((x[cut:], y[cut:]))
    return tensors_benchmark(
        train_tensors=train,
        test_tensors=[experience_tensors(e) for e in digits.test_stream],
        other_streams_tensors={"valid": valid},
        task_labels=list(range(len(train))),
    )


@pytest.mark.parametrize("name", IMAGE)
def test_early_stopping_and_lr_scheduling_on_a_validation_stream(name, digits):
    benchmark = _digits_with_validation(digits)
    torch.manual_seed(0)
    model = MTSimpleMLP(input_size=64, hidden_size=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    evaluator = EvaluationPlugin(
        accuracy_metrics(stream=True, experience=True), loss_metrics(stream=True), loggers=[]
    )
    plugins = [
        EarlyStoppingPlugin(patience=1, val_stream_name="valid_stream"),
        LRSchedulerPlugin(
            torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0), metric="val_loss"
        ),
    ]
    torch.manual_seed(0)
    strategy = image_strategy(
        name, evaluator, model=model, optimizer=optimizer, eval_every=1, plugins=plugins
    )
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience, eval_streams=[benchmark.valid_stream[i]])
    results = strategy.eval(benchmark.test_stream)
    accuracies = _accuracies(results, 5)
    assert min(accuracies[-1:] if name == "naive" else accuracies) >= 0.8, accuracies


def test_ctr_early_stopping_on_a_dev_stream(tokenizer):
    names = list(DOMAINS)[:2]
    train = [task_data(d, 64, seed=i) for i, d in enumerate(names)]
    dev = [task_data(d, 24, seed=50 + i) for i, d in enumerate(names)]
    test = [task_data(d, 24, seed=100 + i) for i, d in enumerate(names)]
    stream = text_benchmark(train, test, dev=dev, tokenizer=tokenizer, max_length=LENGTH)
    stopper = EarlyStoppingPlugin(patience=1, val_stream_name="dev_stream")
    strategy = ctr_strategy(tokenizer, eval_every=1, plugins=[stopper])
    x0, _ = experience_tensors(stream.test_stream[0])
    strategy.train(stream.train_stream[0], eval_streams=[stream.dev_stream[0]])
    first = task_logits(strategy.model, x0, 0)
    strategy.train(stream.train_stream[1], eval_streams=[stream.dev_stream[1]])
    assert torch.equal(task_logits(strategy.model, x0, 0), first)
    assert strategy.model.trained_tasks == [0, 1]


def test_a_whole_stream_in_one_call(digits):
    strategy = image_strategy("exssnet")
    strategy.train(digits.train_stream)
    assert strategy.model.trained_tasks == [0, 1, 2, 3, 4]
    assert min(_accuracies(strategy.eval(digits.test_stream), 5)) >= 0.8


# ------------------------------------------------------------- repeated task labels
def _digits_repeating_task_0(digits):
    """Task 0's training data split in two halves: experiences with task labels 0, 1, 0."""
    x0, y0 = _shuffled(digits.train_stream[0])
    x1, y1 = experience_tensors(digits.train_stream[1])
    half = len(x0) // 2
    test = [experience_tensors(digits.test_stream[j]) for j in (0, 1, 0)]
    return tensors_benchmark(
        train_tensors=[(x0[:half], y0[:half]), (x1, y1), (x0[half:], y0[half:])],
        test_tensors=test,
        task_labels=[0, 1, 0],
    )


@pytest.mark.parametrize("name", WITH_HAT)
def test_a_repeated_task_label_continues_that_task(name, digits):
    stream = _digits_repeating_task_0(digits)
    strategy = image_strategy(name)
    x1, _ = experience_tensors(stream.test_stream[1])
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    before = task_logits(strategy.model, x1, 1)
    strategy.train(stream.train_stream[2])
    after = task_logits(strategy.model, x1, 1)
    accuracies = _accuracies(strategy.eval(stream.test_stream[:2]), 2)
    assert min(accuracies) >= 0.8, accuracies
    if name in NO_FORGETTING:
        assert torch.equal(before, after)  # the other task forgets nothing
    if name != "naive":
        assert strategy.model.trained_tasks == [0, 1]


def test_exssnet_continuing_a_task_trains_only_weights_no_other_task_uses(digits):
    stream = _digits_repeating_task_0(digits)
    strategy = image_strategy("exssnet")
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    net = strategy.model
    weights = [layer.weight.detach().clone() for layer in net.supermask_layers]
    strategy.train(stream.train_stream[2])
    for layer, old, mask0, mask1 in zip(
        net.supermask_layers, weights, net.task_masks(0), net.task_masks(1), strict=True
    ):
        changed = layer.weight != old
        assert changed.any()
        assert not (changed & ~mask0).any() and not (changed & mask1).any()


def test_ctr_repeated_task_label_continues_that_task(tokenizer):
    names = list(DOMAINS)
    train = [task_data(names[0], 64, 0), task_data(names[1], 64, 1), task_data(names[0], 64, 2)]
    test = [
        task_data(names[0], 40, 100),
        task_data(names[1], 40, 101),
        task_data(names[0], 40, 100),
    ]
    stream = text_benchmark(
        train, test, tokenizer=tokenizer, max_length=LENGTH, task_labels=[0, 1, 0]
    )
    strategy = ctr_strategy(tokenizer)
    x0, _ = experience_tensors(stream.test_stream[0])
    x1, _ = experience_tensors(stream.test_stream[1])
    for experience in stream.train_stream[:2]:
        strategy.train(experience)
    before = [task_logits(strategy.model, x, t) for t, x in enumerate((x0, x1))]
    strategy.train(stream.train_stream[2])
    assert torch.equal(task_logits(strategy.model, x1, 1), before[1])  # task 1: untouched
    assert not torch.equal(task_logits(strategy.model, x0, 0), before[0])  # task 0 learned on
    assert strategy.model.trained_tasks == [0, 1]
    assert len(strategy.model.plugins[0].ksm.task_capsules.capsules) == 2


@pytest.mark.parametrize("name", ("exssnet", "supsup"))
def test_a_repeated_label_with_more_classes_is_refused_and_nothing_changes(name, digits):
    x0, y0 = experience_tensors(digits.train_stream[0])
    x1, y1 = experience_tensors(digits.train_stream[1])
    stream = tensors_benchmark(
        train_tensors=[(x0, y0), (x1, y1 + 2)],
        test_tensors=[(x0, y0), (x1, y1 + 2)],
        task_labels=[0, 0],
    )
    strategy = image_strategy(name)
    strategy.train(stream.train_stream[0])
    before = task_logits(strategy.model, x0, 0)
    with pytest.raises(ValueError, match=r"repeats task 0 with classes up to 3.*head of 2"):
        strategy.train(stream.train_stream[1])
    assert torch.equal(task_logits(strategy.model, x0, 0), before)
