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
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from avalanche.training.plugins import EvaluationPlugin
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import TensorDataset

from avalanche_ctr.exssnet import ExSSNeTPlugin, convert_to_supermask, task_inference_metrics
from avalanche_ctr.exssnet.task_inference import (
    _override,
    class_statistics,
    default_head_rule,
    hull_distance,
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

    def __init__(
        self,
        hidden: int = 128,
        batchnorm: bool = False,
        initial_classes: int = 10,
        masking: bool = True,
    ):
        super().__init__()
        norm = [nn.BatchNorm1d(hidden)] if batchnorm else []
        self.features = nn.Sequential(
            nn.Linear(64, hidden), *norm, nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.classifier = MultiHeadClassifier(
            hidden, initial_out_features=initial_classes, masking=masking
        )

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
        "supsup": train(SupSup, benchmark, train_epochs=3, input_statistics=True),
        "exssnet": train(ExSSNeT, benchmark, mask_epochs=2, weight_epochs=1, input_statistics=True),
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


@pytest.mark.parametrize("method", ["one_shot", "binary", "statistics"])
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
    for method in ("one_shot", "binary", "statistics"):
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
    with pytest.raises(ValueError, match="per_sample=True is not offered with method='binary'"):
        infer(model, x, method="binary", per_sample=True)
    with pytest.raises(ValueError, match=r"tasks \[7\] were never trained"):
        infer(model, x, tasks=[0, 7])
    with pytest.raises(TypeError, match="needs a SupermaskNet"):
        infer(nn.Linear(64, 2), x)
    with pytest.raises(ValueError, match="head_rule='superfluous' needs per-task heads"):
        infer(model, x, head_rule="superfluous")  # masked heads as wide as their classes
    with pytest.raises(ValueError, match="32 input features per sample but task 0 stored .* 64"):
        infer(model, torch.zeros(4, 32), method="statistics")


# ------------------------------------------------------- input statistics
@pytest.mark.parametrize("name", ["supsup", "exssnet"])
def test_statistics_infer_every_batch(stream, models, name):
    model = models[name]
    outcomes = [infer_task(model, x, method="statistics") == t for t, x in batches(stream)]
    assert all(outcomes), (name, sum(outcomes), len(outcomes))
    x = next(batches(stream))[1]
    result = infer(model, x, method="statistics", per_sample=True)
    assert result.scores.shape == (BATCH, N_TASKS)
    assert result.sample_tasks.shape == (BATCH,)


def test_statistics_are_the_class_means_and_within_class_variance(stream, models):
    benchmark, _ = stream
    x, y = experience_tensors(benchmark.train_stream[2])
    means, within, n = class_statistics(models["supsup"].input_sums(2))
    x, y = x.double(), y
    assert n == len(x)
    torch.testing.assert_close(means, torch.stack([x[y == c].mean(0) for c in range(10)]))
    residual = x - means[y]
    torch.testing.assert_close(within, residual.pow(2).mean(0), atol=1e-9, rtol=1e-6)


def test_hull_distance_is_the_distance_to_the_convex_hull():
    generator = torch.Generator().manual_seed(0)
    vertices = torch.randn(2, 5, generator=generator, dtype=torch.float64)
    t = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.7], dtype=torch.float64)
    along = vertices[0] + t[:, None] * (vertices[1] - vertices[0])
    normal = torch.randn(5, generator=generator, dtype=torch.float64)
    direction = vertices[1] - vertices[0]
    normal -= (normal @ direction) / (direction @ direction) * direction  # orthogonal
    points = along + normal
    nearest = vertices[0] + t.clamp(0, 1)[:, None] * direction  # closest point of the segment
    expected = (points - nearest).pow(2).mean(1)
    torch.testing.assert_close(hull_distance(points, vertices), expected)
    # a point inside a triangle is at distance 0
    triangle = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    inside = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64) @ triangle
    assert hull_distance(inside, triangle).item() == pytest.approx(0.0, abs=1e-12)
    # several hulls at once, the segment padded by repeating a vertex: the same distances
    padded = torch.cat([vertices, vertices[:1]])
    both = hull_distance(points, torch.stack([padded, triangle]))
    torch.testing.assert_close(both[:, 0], expected)
    torch.testing.assert_close(both[:, 1], hull_distance(points, triangle))


def test_statistics_not_recorded_are_a_clear_error(stream):
    benchmark, _ = stream
    model = train(SupSup, benchmark, train_epochs=1)
    assert model.input_sums(0) is None
    with pytest.raises(ValueError, match="no stored input statistics.*input_statistics=True"):
        infer(model, torch.zeros(4, 64), method="statistics")


# ------------------------------------------------------- superfluous units
def superposed_g_gradient(model, x, tasks):
    """Reference: -dG/dα by autograd, G = logsumexp of the α-superposed heads' logits
    with the real classes' logits held constant (SupSup's G objective)."""
    alpha = torch.full((len(tasks),), 1.0 / len(tasks), requires_grad=True)
    masks = [model.task_masks(t) for t in tasks]
    head = model.net.classifier
    with ExitStack() as stack:
        for i, layer in enumerate(model.supermask_layers):

            def weight(i=i, layer=layer):
                return layer.weight * sum(a * m[i] for a, m in zip(alpha, masks, strict=True))

            stack.enter_context(_override(layer, "masked_weight", weight))
        model.eval()
        features = model.net.features(x)
        z = 0
        for a, t in zip(alpha, tasks, strict=True):
            real = torch.zeros(head.classifiers[str(t)].classifier.out_features)
            real[model.task_classes(t)] = 1
            term = a * head.classifiers[str(t)](features)
            z = z + term * (1 - real) + (term * real).detach()
        (grad,) = torch.autograd.grad(z.logsumexp(1).mean(), alpha)
    return -grad


def test_superfluous_units_give_supsups_g_objective(stream):
    benchmark, _ = stream
    model = train(SupSup, benchmark, train_epochs=3, model=MLP(initial_classes=16, masking=False))
    assert model.task_classes(1) == list(range(10))
    assert default_head_rule(model) == "superfluous"
    x = next(batches(stream))[1]
    result = infer(model, x)
    torch.testing.assert_close(
        result.scores, superposed_g_gradient(model, x, model.trained_tasks), rtol=1e-4, atol=1e-5
    )
    outcomes = [infer_task(model, x) == task for task, x in batches(stream)]
    assert sum(outcomes) / len(outcomes) >= 0.9


# ------------------------------------------------------- in Avalanche's loop
def exp_metrics(metrics, name):
    return [v for k, v in sorted(metrics.items()) if k.startswith(f"{name}/eval_phase/")]


def test_evaluation_without_task_labels_in_avalanches_loop(stream):
    benchmark, _ = stream
    torch.manual_seed(0)
    model = MLP(hidden=64)
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True),
        task_inference_metrics(experience=True, stream=True),
        loggers=[],
    )
    strategy = SupSup(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_epochs=2,
        density=0.1,
        train_mb_size=64,
        eval_mb_size=BATCH,
        task_inference="statistics",
        evaluator=evaluator,
    )
    # nothing learned yet: the given labels are used and no inference is reported
    assert not exp_metrics(strategy.eval(benchmark.test_stream), "TaskInference_Acc_Exp")
    for experience in benchmark.train_stream[:2]:
        strategy.train(experience)
    halfway = strategy.eval(benchmark.test_stream)
    # tasks 0 and 1 are recognised; tasks 2 and 3 cannot be, as they were never learned
    assert exp_metrics(halfway, "TaskInference_Acc_Exp") == [1.0, 1.0, 0.0, 0.0]
    for experience in benchmark.train_stream[2:]:
        strategy.train(experience)
    before = state(strategy.model)
    inferred = strategy.eval(benchmark.test_stream)
    assert exp_metrics(inferred, "TaskInference_Acc_Exp") == [1.0] * N_TASKS
    assert exp_metrics(inferred, "TaskInference_Acc_Stream") == [1.0]
    strategy.exssnet_plugin.task_inference = None
    labelled = strategy.eval(benchmark.test_stream)
    # every batch inferred right: the same predictions as with the given labels
    assert exp_metrics(inferred, "Top1_Acc_Exp") == exp_metrics(labelled, "Top1_Acc_Exp")
    assert min(exp_metrics(labelled, "Top1_Acc_Exp")) > 0.6  # learned (chance: 0.1)
    after = strategy.model.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())


def test_wrong_inference_uses_the_inferred_tasks_network(stream):
    """A batch inferred as the wrong task is classified by that task's network, so the
    accuracy with inferred tasks can fall below the labelled one."""
    benchmark, _ = stream
    torch.manual_seed(0)
    model = MLP(hidden=32)
    strategy = SupSup(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_epochs=1,
        density=0.1,
        train_mb_size=64,
        eval_mb_size=BATCH,
        task_inference="one_shot",
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    )
    strategy.train(benchmark.train_stream[0])
    metrics = strategy.eval(benchmark.test_stream[1:2])
    # the only learned task is task 0: task 1's batches all go to task 0's network
    x, y = experience_tensors(benchmark.test_stream[1])
    expected = (task_logits(strategy.model, x, 0).argmax(1) == y).float().mean().item()
    assert exp_metrics(metrics, "Top1_Acc_Exp") == [pytest.approx(expected)]


def test_bad_task_inference_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown task_inference 'exhaustive'"):
        ExSSNeTPlugin(task_inference="exhaustive")
    with pytest.raises(ValueError, match="unknown head_rule 'max'"):
        ExSSNeTPlugin(head_rule="max")
