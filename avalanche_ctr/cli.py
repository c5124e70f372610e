"""Command line of avalanche-ctr.

``avalanche-ctr`` with no arguments runs the main job: ExSSNeT on the embedded
SplitDigits stream, printing the accuracy matrix and the final metrics.
``avalanche-ctr run --strategy NAME --benchmark NAME ...`` runs one strategy.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import MTSimpleMLP
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import SplitDigits, SplitFashionMNIST
from avalanche_ctr.training import ExSSNeT, SupSup

__all__ = ["main", "run", "STRATEGIES", "BENCHMARKS"]

BENCHMARKS: dict[str, tuple[Callable[..., object], int]] = {
    "split_digits": (lambda seed, root: SplitDigits(5, seed=seed), 64),
    "split_fmnist": (
        lambda seed, root: SplitFashionMNIST(5, seed=seed, dataset_root=root),
        784,
    ),
}
STRATEGIES = ("exssnet", "ssnet", "supsup")


def _make_strategy(name: str, model, args: argparse.Namespace):
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    common = dict(
        model=model,
        optimizer=optimizer,
        density=args.density,
        train_mb_size=args.batch_size,
        eval_mb_size=512,
        device=args.device,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    )
    if name == "supsup":
        return SupSup(train_epochs=2 * args.epochs, **common)
    return ExSSNeT(
        mask_epochs=args.epochs, weight_epochs=args.epochs, exclusive=name == "exssnet", **common
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    """Train one strategy on one benchmark; print and return its final metrics."""
    if args.strategy not in STRATEGIES:
        raise SystemExit(f"unknown strategy {args.strategy!r}; choose one of {STRATEGIES}")
    if args.benchmark not in BENCHMARKS:
        raise SystemExit(f"unknown benchmark {args.benchmark!r}; choose one of {list(BENCHMARKS)}")
    torch.manual_seed(args.seed)
    build, input_size = BENCHMARKS[args.benchmark]
    benchmark = build(args.seed, args.data_root)
    model = MTSimpleMLP(input_size=input_size, hidden_size=args.hidden_size)
    strategy = _make_strategy(args.strategy, model, args)
    n = len(benchmark.train_stream)
    matrix = [[float("nan")] * n for _ in range(n)]
    start = time.perf_counter()
    print(f"{args.strategy} on {args.benchmark} ({n} experiences), seed {args.seed}")
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream[: i + 1])
        for j in range(i + 1):
            key = f"Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"
            matrix[i][j] = results[key]
        row = " ".join(f"{a:.3f}" for a in matrix[i][: i + 1])
        print(f"  after experience {i}: {row}")
    final = matrix[-1]
    forgetting = [max(matrix[i][j] for i in range(j, n)) - final[j] for j in range(n - 1)]
    metrics = {
        "final_average_accuracy": sum(final) / n,
        "average_forgetting": sum(forgetting) / max(1, len(forgetting)),
        "train_eval_seconds": time.perf_counter() - start,
    }
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}")
    return metrics


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avalanche-ctr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    run_parser = sub.add_parser("run", help="train one strategy on one benchmark")
    run_parser.add_argument("--strategy", default="exssnet", help=f"one of {STRATEGIES}")
    run_parser.add_argument(
        "--benchmark", default="split_digits", help=f"one of {list(BENCHMARKS)}"
    )
    run_parser.add_argument("--epochs", type=int, default=3, help="epochs per training phase")
    run_parser.add_argument("--density", type=float, default=0.1)
    run_parser.add_argument("--hidden-size", type=int, default=256)
    run_parser.add_argument("--batch-size", type=int, default=32)
    run_parser.add_argument("--lr", type=float, default=0.01)
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument("--data-root", default=None, help="dataset root (split_fmnist)")
    run_parser.add_argument("--device", default="cpu", help="cpu or cuda")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv or ["run"])
    if args.command != "run":
        parser.print_help()
        return 2
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
