"""SupSup's task inference (Sec. 3.3-3.4) on SupSup and ExSSNeT models.

The streams are permuted 8x8 digits (SupSup's PermutedMNIST in miniature): every
task has the ten digit classes under its own pixel permutation, so a batch's task
is recognisable from the input, as task inference needs.
"""

import math
from contextlib import ExitStack

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from avalanche.benchmarks import nc_benchmark
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import TensorDataset

from avalanche_ctr.exssnet import convert_to_supermask
from avalanche_ctr.exssnet.task_inference import (
    _override,
    infer,
    infer_task,
    predict_without_task,
)
from avalanche_ctr.training import ExSSNeT, SupSup

N_TASKS = 4
BATCH = 32


class _Dataset(TensorDataset):
    def __init__(self, x, y):
        super().__init__(x, y)
        self.targets = y


def _digits():
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).reshape(-1, 64)
    y = torch.tensor(digits.target)
    return train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)


def permuted_digits(n_tasks: int = N_TASKS):
    """Task ``t``: the ten digits with pixels permuted by the ``t``-th permutation
    (the identity for task 0)."""
    x_train, x_test, y_train, y_test = _digits()
    generator = torch.Generator().manual_seed(0)
    perms = [torch.arange(64)] + [
        torch.randperm(64, generator=generator) for _ in range(n_tasks - 1)
    ]
    return nc_benchmark(
        [_Dataset(x_train[:, p], y_train) for p in perms],
        [_Dataset(x_test[:, p], y_test) for p in perms],
        n_tasks,
        task_labels=True,
        shuffle=False,
        one_dataset_per_exp=True,
        class_ids_from_zero_in_each_exp=True,
    ), [(x_test[:, p], y_test) for p in perms]


class MLP(MultiTaskModule):
    """``initial_out_features=10``: heads of the permuted digits have ten classes from the
    start."""

    def __init__(self, hidden: int = 128, batchnorm: bool = False, initial_classes: int = 10):
        super().__init__()
        norm = [nn.BatchNorm1d(hidden)] if batchnorm else []
        self.features = nn.Sequential(
            nn.Linear(64, hidden), *norm, nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.classifier = MultiHeadClassifier(hidden, initial_out_features=initial_classes)

    def forward_single_task(self, x, task_label):
        return self.classifier(self.features(x), task_label)


def train(strategy_cls, benchmark, **kwargs):
    torch.manual_seed(0)
    model = kwargs.pop("model", None) or MLP()
    strategy = strategy_cls(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.1,
        train_mb_size=64,
        evaluator=quiet_evaluator(),
        **kwargs,
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
    return strategy.model


@pytest.fixture(scope="module")
def stream():
    return permuted_digits()


@pytest.fixture(scope="module")
def models(stream):
    benchmark, _ = stream
    return {
        "supsup": train(SupSup, benchmark, train_epochs=3),
        "exssnet": train(ExSSNeT, benchmark, mask_epochs=2, weight_epochs=1),
    }


def batches(stream):
    _, test = stream
    generator = torch.Generator().manual_seed(0)
    for task, (x, _) in enumerate(test):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - BATCH + 1, BATCH):
            yield task, x[order[start : start + BATCH]]


@pytest.mark.parametrize("method", ["one_shot", "binary"])
@pytest.mark.parametrize("name", ["supsup", "exssnet"])
def test_infers_the_task_of_most_batches(stream, models, name, method):
    model = models[name]
    assert model.trained_tasks == list(range(N_TASKS))
    outcomes = [infer_task(model, x, method=method) == task for task, x in batches(stream)]
    assert sum(outcomes) / len(outcomes) >= 0.9, (name, method, sum(outcomes), len(outcomes))


def test_binary_halves_the_candidates(stream, models):
    x = next(batches(stream))[1]
    result = infer(models["supsup"], x, method="binary")
    assert [len(r.candidates) for r in result.rounds] == [4, 2]
    assert result.task in result.rounds[-1].candidates
    assert set(result.rounds[1].candidates) <= set(result.rounds[0].candidates)


def superposed_entropy_gradient(model, x, tasks, rule="mean"):
    """Reference: -dH/dα by autograd through an explicit superposition of the masks and
    BatchNorms; the heads' entropies over their own classes, normalised by
    log n_classes, averaged ("mean") or α-weighted ("mixture")."""
    alpha = torch.full((len(tasks),), 1.0 / len(tasks), requires_grad=True)
    masks = [model.task_masks(t) for t in tasks]
    layers = model.supermask_layers
    head = model.net.classifier
    with ExitStack() as stack:
        for i, layer in enumerate(layers):

            def weight(i=i, layer=layer):
                return layer.weight * sum(a * m[i] for a, m in zip(alpha, masks, strict=True))

            stack.enter_context(_override(layer, "masked_weight", weight))
        for bn in model.batchnorms:

            def mix(h, bn=bn):
                return sum(a * bn.per_task[str(t)](h) for a, t in zip(alpha, tasks, strict=True))

            stack.enter_context(_override(bn, "forward", mix))
        model.eval()
        features = model.net.features(x)
        entropy = 0
        for a, t in zip(alpha, tasks, strict=True):
            z = head.classifiers[str(t)](features)
            z = z[:, getattr(head, f"active_units_T{t}").bool()]
            h = -(z.softmax(1) * z.log_softmax(1)).sum(1).mean()
            weight = a if rule == "mixture" else 1 / len(tasks)
            entropy = entropy + weight * h / math.log(z.shape[1])
        (grad,) = torch.autograd.grad(entropy, alpha)
    return -grad, entropy.item()


@pytest.mark.parametrize("rule", ["mean", "mixture"])
@pytest.mark.parametrize("name", ["supsup", "exssnet"])
def test_scores_are_minus_the_entropy_gradient(stream, models, name, rule):
    model = models[name]
    x = next(batches(stream))[1]
    expected, entropy = superposed_entropy_gradient(model, x, model.trained_tasks, rule)
    result = infer(model, x, head_rule=rule)
    torch.testing.assert_close(result.scores, expected, rtol=1e-4, atol=1e-5)
    assert result.entropy == pytest.approx(entropy, rel=1e-5)
    # the batch's scores are the mean of the per-sample scores
    per_sample = infer(model, x, per_sample=True, head_rule=rule)
    assert per_sample.scores.shape == (BATCH, N_TASKS)
    torch.testing.assert_close(per_sample.scores.mean(0), expected, rtol=1e-4, atol=1e-5)
    assert per_sample.task == result.task
    assert per_sample.sample_tasks.shape == (BATCH,)


def test_per_sample_inference_mostly_right(stream, models):
    _, test = stream
    model = models["supsup"]
    right = total = 0
    for task, (x, _) in enumerate(test):
        result = infer(model, x[:100], per_sample=True)
        right += int((result.sample_tasks == task).sum())
        total += 100
    assert right / total >= 0.6


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["one_shot", "binary"])
def test_inference_changes_nothing(stream, models, method):
    model = models["exssnet"]
    _, test = stream
    x = test[1][0][:BATCH]
    logits = [task_logits(model, x, t) for t in model.trained_tasks]
    model(x, 2)  # select a task, as evaluation leaves it
    model.train()
    model.net.classifier.eval()  # mixed training flags must come back as they were
    flags = {name: m.training for name, m in model.named_modules()}
    model.zero_grad(set_to_none=True)
    model.net.classifier.requires_grad_(True)  # as while training a task
    grad_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    selected = [(layer.active_task, id(layer._active)) for layer in model.supermask_layers]
    cached = [list(layer._cache) for layer in model.supermask_layers]
    before = state(model)

    infer(model, x, method=method)
    with torch.no_grad():
        infer(model, x, method=method, per_sample=method == "one_shot")
    with torch.inference_mode():
        infer(model, x, method=method)

    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grad_flags
    assert all(p.grad is None for p in model.parameters())
    assert [(layer.active_task, id(layer._active)) for layer in model.supermask_layers] == selected
    assert [list(layer._cache) for layer in model.supermask_layers] == cached
    for task, expected in zip(model.trained_tasks, logits, strict=True):
        assert torch.equal(task_logits(model, x, task), expected)
    model.eval()
    model.requires_grad_(False)


def test_deterministic_for_a_batch(stream, models):
    x = next(batches(stream))[1]
    for method in ("one_shot", "binary"):
        first = infer(models["exssnet"], x, method=method)
        second = infer(models["exssnet"], x.clone(), method=method)
        assert first.task == second.task
        for a, b in zip(first.rounds, second.rounds, strict=True):
            assert a.candidates == b.candidates
            assert torch.equal(a.scores, b.scores)


def test_predict_without_task_gives_the_inferred_tasks_logits(stream, models):
    model = models["supsup"]
    _, test = stream
    x = test[3][0][:BATCH]
    task_logits(model, x, 0)
    selected = [(layer.active_task, list(layer._cache)) for layer in model.supermask_layers]
    logits, task = predict_without_task(model, x)
    # the labelled forward's selection and caching are undone (SupermaskNet.eval_state)
    assert [(layer.active_task, list(layer._cache)) for layer in model.supermask_layers] == (
        selected
    )
    assert task == infer_task(model, x) == 3
    assert torch.equal(logits, task_logits(model, x, 3))


def test_candidates_can_be_restricted(stream, models):
    _, test = stream
    x = test[3][0][:BATCH]
    result = infer(models["supsup"], x, tasks=[0, 1])
    assert result.candidates == (0, 1) and result.task in (0, 1)
    assert result.scores.shape == (2,)


def uneven_digits():
    """Split digits whose tasks have 2, 3 and 5 classes (heads of different sizes)."""
    x_train, x_test, y_train, y_test = _digits()
    return nc_benchmark(
        _Dataset(x_train, y_train),
        _Dataset(x_test, y_test),
        3,
        task_labels=True,
        seed=0,
        per_exp_classes={0: 2, 1: 3},
        class_ids_from_zero_in_each_exp=True,
    )


def test_batchnorm_and_heads_of_different_sizes():
    benchmark = uneven_digits()
    model = MLP(hidden=32, batchnorm=True, initial_classes=2)
    model = train(SupSup, benchmark, model=model, train_epochs=1)
    heads = model.net.classifier.classifiers
    assert [heads[str(t)].classifier.out_features for t in range(3)] == [2, 3, 5]
    assert len(model.batchnorms) == 1
    x = experience_tensors(benchmark.test_stream[1])[0][:BATCH]
    for rule in ("mean", "mixture"):
        expected, _ = superposed_entropy_gradient(model, x, [0, 1, 2], rule)
        result = infer(model, x, head_rule=rule)
        torch.testing.assert_close(result.scores, expected, rtol=1e-4, atol=1e-5)
    assert infer(model, x, head_rule="logits").scores.shape == (3,)
    # a single candidate is exactly that task's network: its normalised entropy
    single = infer(model, x, tasks=[2])
    z = task_logits(model, x, 2)
    h = -(z.softmax(1) * z.log_softmax(1)).sum(1).mean() / math.log(5)
    assert single.entropy == pytest.approx(h.item(), rel=1e-5)
    assert single.task == 2
    assert infer(model, x, method="binary").task in (0, 1, 2)


def test_model_without_heads_uses_the_output_entropy():
    """A plain model's last layer is masked per task (SupSup's GN networks): the
    objective is the entropy of the output. Masks from random scores suffice here."""
    model = convert_to_supermask(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    for task in range(3):
        model.start_task(task)
        model.finish_task()
    x = torch.rand(8, 64)
    alpha = torch.full((3,), 1 / 3, requires_grad=True)
    masks = [model.task_masks(t) for t in range(3)]
    with ExitStack() as stack:
        for i, layer in enumerate(model.supermask_layers):

            def weight(i=i, layer=layer):
                return layer.weight * sum(a * m[i] for a, m in zip(alpha, masks, strict=True))

            stack.enter_context(_override(layer, "masked_weight", weight))
        z = model.net(x)
        (grad,) = torch.autograd.grad(-(z.softmax(1) * z.log_softmax(1)).sum(1).mean(), alpha)
    result = infer(model, x)
    torch.testing.assert_close(result.scores, -grad, rtol=1e-4, atol=1e-6)
    assert result.task == int((-grad).argmax())
    per_sample = infer(model, x, per_sample=True)
    torch.testing.assert_close(per_sample.scores.mean(0), -grad, rtol=1e-4, atol=1e-6)
    assert infer(model, x, method="binary").task in (0, 1, 2)


def test_no_task_learned_yet_is_a_clear_error():
    model = convert_to_supermask(MLP(hidden=16))
    with pytest.raises(ValueError, match="learned no task yet.*strategy.train"):
        infer_task(model, torch.zeros(2, 64))


def test_bad_arguments_are_clear_errors(models):
    model = models["supsup"]
    x = torch.zeros(4, 64)
    with pytest.raises(ValueError, match="empty batch"):
        infer(model, torch.zeros(0, 64))
    with pytest.raises(ValueError, match="unknown method"):
        infer(model, x, method="exhaustive")
    with pytest.raises(ValueError, match="unknown head_rule"):
        infer(model, x, head_rule="max")
    with pytest.raises(ValueError, match="per_sample=True is only offered"):
        infer(model, x, method="binary", per_sample=True)
    with pytest.raises(ValueError, match=r"tasks \[7\] were never trained"):
        infer(model, x, tasks=[0, 7])
    with pytest.raises(TypeError, match="needs a SupermaskNet"):
        infer(nn.Linear(64, 2), x)
