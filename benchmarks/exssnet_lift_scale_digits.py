"""ExSSNeT on 5 split_digits tasks for KKT's lift x the signed constant's scale (issue 27).

Per-task heads (``MultiHeadMLP(64, (32, 32))``) or a masked output layer
(``MaskedOutputMLP(64, (32, 32), outputs=10)``), density 0.3, Adam 0.01, batch 32, one
mask epoch and one weight epoch, KKT on; seeds 0 and 1. For every run it prints the
training accuracy of each task's two epochs (mask, weight) and each task's final test
accuracy. Example (``benchmarks/RESULTS.md``)::

    python benchmarks/exssnet_lift_scale_digits.py
    python benchmarks/exssnet_lift_scale_digits.py --lifts default 3 --scales none

``--lifts default`` leaves ``kkt_lift`` unset (the strategy's default).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.backbones import MaskedOutputMLP, MultiHeadMLP
from avalanche_ctr.training import ExSSNeT

TASKS = 5


def run(lift: float | None, scale: str, *, masked: bool, seed: int) -> None:
    torch.manual_seed(seed)
    model = MaskedOutputMLP(64, (32, 32), outputs=10) if masked else MultiHeadMLP(64, (32, 32))
    evaluator = EvaluationPlugin(accuracy_metrics(epoch=True, experience=True), loggers=[])
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.3,
        mask_epochs=1,
        weight_epochs=1,
        train_mb_size=32,
        evaluator=evaluator,
        kkt=True,
        kkt_lift=lift,
        weight_scale=scale,
    )
    benchmark = SplitDigits(TASKS, seed=seed)
    for experience in benchmark.train_stream:
        strategy.train(experience)
    results = strategy.eval(benchmark.test_stream)
    metrics = evaluator.get_all_metrics()
    epochs = [
        [round(a, 2) for a in metrics[f"Top1_Acc_Epoch/train_phase/train_stream/Task{t:03d}"][1]]
        for t in range(TASKS)
    ]
    final = [
        round(results[f"Top1_Acc_Exp/eval_phase/test_stream/Task{t:03d}/Exp{t:03d}"], 3)
        for t in range(TASKS)
    ]
    print(
        f"{'masked' if masked else 'heads'} lift={lift} scale={scale} seed={seed} "
        f"epochs={epochs} final={final} mean={statistics.fmean(final):.3f}",
        flush=True,
    )


def _lift(text: str) -> float | None:
    return None if text == "default" else float(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lifts", nargs="+", type=_lift, default=[1.0, 10.0], help="numbers or 'default'"
    )
    parser.add_argument("--scales", nargs="+", default=["none", "density"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--models", nargs="+", default=["heads", "masked"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for model in args.models:
        for scale in args.scales:
            for lift in args.lifts:
                for seed in args.seeds:
                    run(lift, scale, masked=model == "masked", seed=seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
