"""What evaluating without task labels costs: samples per second of labelled evaluation
against evaluation that first infers each batch's task.

SupSup is trained briefly (1 epoch, 2,000 training images per task, density 0.05, MLP
784-256-256, input statistics recorded) on ``PermutedFashionMNIST`` with 5 and with 10
tasks. Then the test images of every task are run in batches of 128, timing the model
alone (the data are tensors in memory, so no data loading is timed):

* labelled: ``model(x, task)``;
* one_shot / binary / statistics: ``predict_without_task(model, x, method=...)``
  (inference, then the inferred task's forward pass).

Each variant's fastest of ``--repeats`` passes over the same batches is kept.

Usage: ``python benchmarks/task_inference_cost.py [--repeats 3] [--threads 1]``
"""

from __future__ import annotations

import argparse
import time

import torch
from avalanche.training.plugins import EvaluationPlugin
from torch import Tensor
from torch.utils.data import DataLoader

from avalanche_ctr.benchmarks import PermutedFashionMNIST
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.exssnet import predict_without_task
from avalanche_ctr.training import SupSup

METHODS = ("one_shot", "binary", "statistics")


def trained_model(n_tasks: int):
    torch.manual_seed(0)
    benchmark = PermutedFashionMNIST(n_tasks, seed=0, n_train=2000)
    model = MultiHeadMLP(784, (256, 256))
    strategy = SupSup(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_epochs=1,
        density=0.05,
        train_mb_size=128,
        input_statistics=True,
        evaluator=EvaluationPlugin(loggers=[]),
    )
    for experience in benchmark.train_stream:
        strategy.train(experience)
    batches = []
    for experience in benchmark.test_stream:
        for x, _, _ in DataLoader(experience.dataset.eval(), batch_size=128):
            batches.append((experience.task_label, x))
    return strategy.model.eval(), batches


def one_pass(model, batches: list[tuple[int, Tensor]], method: str | None) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for task, x in batches:
            if method is None:
                model(x, task)
            else:
                predict_without_task(model, x, method=method)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", default="5,10")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| tasks | evaluation | samples/s | relative to labelled |")
    print("|---:|---|---:|---:|")
    for n_tasks in (int(t) for t in args.tasks.split(",")):
        model, batches = trained_model(n_tasks)
        n = sum(len(x) for _, x in batches)
        variants = (None, *METHODS)
        fastest = dict.fromkeys(variants, float("inf"))
        for _ in range(args.repeats):
            for method in variants:  # alternate, so that a busy moment hits every variant
                fastest[method] = min(fastest[method], one_pass(model, batches, method))
        for method in variants:
            name = method or "labelled"
            ratio = fastest[None] / fastest[method]
            print(f"| {n_tasks} | {name} | {n / fastest[method]:,.0f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
