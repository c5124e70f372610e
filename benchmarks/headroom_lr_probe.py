"""The learning rate of issue 25's headroom baselines: ONE and MTL against (c) on the first
DSC tasks, in ``compare``'s loop (every task evaluated before training and after each
experience), with the training loss per epoch.

The recipe's rate (Adam at 0.01) is CTR's and (c)'s. ``mtl`` trains one shared set of
adapters, without masks, on all tasks at once; at 0.01 it can settle on one class per
task (its training loss stays at ln 2 = 0.693, and every task then scores its test set's
class balance, the same figure for every seed). This script shows it and gives the
figures a rate is chosen by. Usage::

    python benchmarks/headroom_lr_probe.py --data-root ../shared/data \\
        --runs mtl:0.01,mtl:0.001,one:0.01,one:0.001,adapter_hat:0.01 --seed 1
"""

from __future__ import annotations

import argparse
import statistics

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.experiments.runner import Settings, build_strategy
from avalanche_ctr.experiments.strategies import get_strategy


class EpochLoss(SupervisedPlugin):
    """The mean training loss of every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[float] = []
        self._losses: list[float] = []

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self._losses.append(strategy.loss.item())

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self.epochs.append(statistics.fmean(self._losses))
        self._losses = []


def probe(name: str, lr: float, args) -> tuple[list[float], list[float]]:
    """Final test accuracy per task and training loss per epoch of ``name`` at ``lr``."""
    options = {"warmup": 0.1}
    if name in ("adapter_hat", "ctr"):
        options["hat_lr"] = 0.05
    settings = Settings(
        benchmark="dsc",
        data_root=args.data_root,
        n_experiences=args.tasks,
        epochs=args.epochs,
        lr=lr,
        n_train=args.n_train,
        n_test=args.n_train,
        max_length=args.max_length,
        options=options,
    )
    torch.manual_seed(args.seed)
    benchmark = settings.spec.build(args.seed, settings)
    losses = EpochLoss()
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    torch.manual_seed(args.seed)
    strategy = build_strategy(settings, get_strategy(name), plugins=[losses], evaluator=evaluator)
    strategy.eval(benchmark.test_stream)
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream)
    accuracies = [
        results[f"Top1_Acc_Exp/eval_phase/test_stream/Task{t:03d}/Exp{t:03d}"]
        for t in range(args.tasks)
    ]
    return accuracies, losses.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--runs", default="mtl:0.01,mtl:0.001,one:0.01,one:0.001")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=200, help="also the test samples")
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"DSC, first {args.tasks} tasks, seed {args.seed}, {args.epochs} epochs")
    print("| strategy | lr | accuracy per task (%) | mean (%) | training loss per epoch |")
    print("|---|---:|---|---:|---|")
    for run in args.runs.split(","):
        name, lr = run.split(":")
        accuracies, losses = probe(name, float(lr), args)
        per_task = ", ".join(f"{100 * a:.1f}" for a in accuracies)
        trace = ", ".join(f"{loss:.3f}" for loss in losses)
        mean = 100 * statistics.fmean(accuracies)
        print(f"| {name} | {lr} | {per_task} | {mean:.2f} | {trace} |", flush=True)


if __name__ == "__main__":
    main()
