"""Which rule identifies a Split-FashionMNIST test batch's task?

Two measurements behind the notes of ``avalanche_ctr/exssnet/task_inference.py``:

* ``--oracle``: trains SupSup (MLP 784-256-256, density 0.05, 4 epochs, heads of 10
  units for 2 classes) on Split-FashionMNIST and, for every test batch of 128, runs
  every task's network separately and picks the task of lowest mean entropy over its
  real classes (``H``) or of lowest ``G`` (SupSup's superfluous-unit objective): the
  exhaustive oracles that SupSup's one-shot gradient approximates; and, on the same
  model, SupSup's one-shot and binary inference with the ``superfluous`` head rule.
* the input-statistics rules, on the data alone (no network): per task, the class
  means and the within-class variance of the flattened training inputs; a test
  batch goes to the task whose class means' convex hull is nearest to its mean input
  (``hull``, what ``method="statistics"`` does), whose nearest class mean is nearest
  (``nearest_mean``), or under whose per-class diagonal Gaussians the batch is
  likeliest (``gaussian``). Batches in dataset order (Avalanche's evaluation order,
  often one class per batch) and shuffled.

* ``--convergence``: how far :func:`hull_distance` with ``HULL_ITERATIONS`` steps is from
  its value after 3,000, on the class means of scikit-learn's digits split into two
  hulls of five classes, for batch means of 64 images of one class or of two.

Usage: ``python benchmarks/task_inference_rules.py [--seeds 0,1,2,3] [--oracle]
[--convergence]``
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from avalanche_ctr.benchmarks import SplitFashionMNIST
from avalanche_ctr.exssnet.supermask_net import input_sums
from avalanche_ctr.exssnet.task_inference import (
    VARIANCE_FLOOR,
    class_statistics,
    hull_distance,
    infer_task,
)

BATCH = 128


def stacked(dataset) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for x, y, *_ in DataLoader(dataset, batch_size=2000):
        xs.append(x.flatten(1))
        ys.append(y)
    return torch.cat(xs).double(), torch.cat(ys)


def batches(test: list[tuple[Tensor, Tensor]], shuffled: bool):
    generator = torch.Generator().manual_seed(0)
    for task, (x, _) in enumerate(test):
        order = torch.randperm(len(x), generator=generator) if shuffled else torch.arange(len(x))
        for start in range(0, len(x), BATCH):
            yield task, x[order[start : start + BATCH]]


def statistics_rules(seed: int) -> dict[str, float]:
    benchmark = SplitFashionMNIST(5, seed=seed)
    train = [stacked(e.dataset.eval()) for e in benchmark.train_stream]
    test = [stacked(e.dataset.eval()) for e in benchmark.test_stream]
    stats = [class_statistics(input_sums(x, y)) for x, y in train]
    pooled = sum(w * n for _, w, n in stats) / sum(n for _, _, n in stats)
    pooled = pooled + VARIANCE_FLOOR * pooled.mean()
    scale = pooled.rsqrt()
    # per-class diagonal Gaussians, each with its own variance
    components = []
    for task, (x, y) in enumerate(train):
        for c in y.unique():
            var = x[y == c].var(0, unbiased=False)
            components.append((task, x[y == c].mean(0), var + VARIANCE_FLOOR * var.mean()))
    owner = torch.tensor([c[0] for c in components])
    means = torch.stack([c[1] for c in components])
    variances = torch.stack([c[2] for c in components])
    results = {}
    for shuffled in (False, True):
        right = {"hull": 0, "nearest_mean": 0, "gaussian": 0}
        n = 0
        for task, x in batches(test, shuffled):
            mean = x.mean(0, keepdim=True) * scale
            hull = torch.stack([hull_distance(mean, m * scale)[0] for m, _, _ in stats])
            right["hull"] += int(hull.argmin()) == task
            nearest = ((x.mean(0) - means) ** 2 / pooled).sum(1)
            right["nearest_mean"] += int(owner[nearest.argmin()]) == task
            log_density = -0.5 * ((x[:, None] - means) ** 2 / variances + variances.log()).sum(2)
            per_task = torch.stack(
                [log_density[:, owner == t].logsumexp(1) for t in range(len(train))], 1
            )
            right["gaussian"] += int(per_task.mean(0).argmax()) == task
            n += 1
        order = "shuffled" if shuffled else "dataset order"
        for rule, count in right.items():
            results[f"{rule}, {order}"] = count / n
    return results


def oracle(seed: int) -> dict[str, float]:
    from avalanche_ctr.experiments.backbones import MultiHeadMLP
    from avalanche_ctr.training import SupSup

    torch.manual_seed(seed)
    benchmark = SplitFashionMNIST(5, seed=seed)
    model = MultiHeadMLP(784, (256, 256), head_units=10)
    strategy = SupSup(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_epochs=4,
        density=0.05,
        train_mb_size=128,
    )
    for experience in benchmark.train_stream:
        strategy.train(experience, eval_streams=[])
    net = strategy.model.eval()
    right = {"H": 0, "G": 0, "one_shot": 0, "binary": 0}
    n = 0
    with torch.no_grad():
        for experience in benchmark.test_stream:
            for x, _, _ in DataLoader(experience.dataset.eval(), batch_size=BATCH):
                for method in ("one_shot", "binary"):
                    found = infer_task(net, x, method=method, head_rule="superfluous")
                    right[method] += found == experience.task_label
                entropy, g = [], []
                for task in net.trained_tasks:
                    z = net(x, task)
                    real = net.task_classes(task)
                    extra = [u for u in range(z.shape[1]) if u not in real]
                    p = z[:, real].softmax(1)
                    entropy.append(-(p * p.log()).sum(1).mean())
                    g.append(z[:, extra].logsumexp(1).mean())
                right["H"] += int(torch.stack(entropy).argmin()) == experience.task_label
                right["G"] += int(torch.stack(g).argmin()) == experience.task_label
                n += 1
    return {
        (f"oracle {k}" if k in ("H", "G") else f"{k}, superfluous"): v / n for k, v in right.items()
    }


def convergence() -> None:
    from sklearn.datasets import load_digits

    from avalanche_ctr.exssnet import task_inference

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float64)
    y = torch.tensor(digits.target)
    stats = class_statistics(input_sums(x, y))
    means, within = stats[0], stats[1]
    scale = (within + VARIANCE_FLOOR * within.mean()).rsqrt()
    hulls = torch.stack([means[:5], means[5:]]) * scale
    points = []
    for c in range(10):
        own = (y == c).nonzero().flatten()[:64]
        other = (y == (c + 1) % 10).nonzero().flatten()[:32]
        points += [x[own].mean(0), torch.cat([x[own[:32]], x[other]]).mean(0)]
    points = torch.stack(points) * scale
    steps = task_inference.HULL_ITERATIONS
    task_inference.HULL_ITERATIONS = 3000
    reference = hull_distance(points, hulls)
    for n in (25, 50, 100, 200):
        task_inference.HULL_ITERATIONS = n
        found = hull_distance(points, hulls)
        error = ((found - reference) / reference.clamp_min(1e-12)).abs().max().item()
        same = bool((found.argmin(1) == reference.argmin(1)).all())
        print(f"{n} steps: max relative error {error:.1e}, same nearest hull: {same}")
    task_inference.HULL_ITERATIONS = steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--oracle", action="store_true", help="also train and run the oracles")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--convergence", action="store_true", help="only the convergence check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.convergence:
        convergence()
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        results = statistics_rules(seed)
        if args.oracle:
            results.update(oracle(seed))
        cells = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in results.items())
        print(f"seed {seed}: {cells}", flush=True)


if __name__ == "__main__":
    main()
