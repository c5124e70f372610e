"""ExSSNeT over 100 tasks of ``permuted_fmnist`` on the CPU (issue 13).

Trains ExSSNeT task after task and records, per task:

* the wall time of ``strategy.train(experience)`` (KKT, both phases, packing the
  mask; everything a task costs to learn);
* the bytes the strategy stores (``avalanche_ctr.experiments.measure.stored_bytes``,
  the figure ``compare`` reports), and their growth against the expected
  ``ceil(maskable weights / 8)`` (one bit per maskable weight) plus the tensors a
  new task adds outside the masks (a head, with ``--output-layer heads``);
* the task's test accuracy right after it was trained, on a fixed seeded subsample
  of its test set.

After the last task every task is evaluated again on the same subsample: the
difference is its forgetting, which ExSSNeT keeps at exactly 0.

Usage::

    python benchmarks/exssnet_100_tasks.py --tasks 100 --n-train 6000 --out /tmp/x100

Prints a summary and writes ``<out>/exssnet_100_tasks.json`` (every per-task
figure) and ``<out>/exssnet_100_tasks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import PermutedFashionMNIST
from avalanche_ctr.experiments.backbones import MaskedOutputMLP, MultiHeadMLP
from avalanche_ctr.experiments.measure import stored_bytes
from avalanche_ctr.exssnet.supermask import SupermaskLayer
from avalanche_ctr.training import ExSSNeT


def maskable_weights(model: torch.nn.Module) -> int:
    """Weights the supermask layers mask (one mask bit each per task)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, SupermaskLayer))


def subsample(dataset, n: int, seed: int):
    """The same seeded ``n`` test examples of every task (the tasks share images)."""
    if n >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    return dataset.subset(torch.randperm(len(dataset), generator=generator)[:n].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=6000, help="training images per task")
    parser.add_argument("--n-test", type=int, default=2000, help="test images per task")
    parser.add_argument("--mask-epochs", type=int, default=1)
    parser.add_argument("--weight-epochs", type=int, default=1)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--output-layer", choices=("masked", "heads"), default="masked")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    benchmark = PermutedFashionMNIST(args.tasks, seed=args.seed, n_train=args.n_train)
    build_s = time.perf_counter() - start
    tests = [subsample(e.dataset, args.n_test, args.seed) for e in benchmark.test_stream]

    RNGManager.set_random_seeds(args.seed)
    if args.output_layer == "masked":
        model = MaskedOutputMLP(784, (256, 256), outputs=10)
    else:
        model = MultiHeadMLP(784, (256, 256))
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=args.lr),
        density=args.density,
        mask_epochs=args.mask_epochs,
        weight_epochs=args.weight_epochs,
        train_mb_size=128,
        eval_mb_size=1000,
        evaluator=evaluator,
    )
    bits = maskable_weights(strategy.model)

    def evaluate(task: int) -> float:
        experience = benchmark.test_stream[task]
        experience.dataset = tests[task]
        results = strategy.eval([experience])
        return results[f"Top1_Acc_Exp/eval_phase/test_stream/Task{task:03d}/Exp{task:03d}"]

    stored = [stored_bytes(strategy)]
    rows = []
    for task, experience in enumerate(benchmark.train_stream):
        began = time.perf_counter()
        strategy.train(experience)
        train_s = time.perf_counter() - began
        stored.append(stored_bytes(strategy))
        rows.append(
            {
                "task": task + 1,
                "train_s": train_s,
                "stored_bytes": stored[-1],
                "added_bytes": stored[-1] - stored[-2],
                "accuracy": evaluate(task),
            }
        )
        row = rows[-1]
        print(
            f"task {task + 1:3d}: train {train_s:6.2f} s, acc {100 * row['accuracy']:.2f} %, "
            f"stored {row['stored_bytes']:,} B (+{row['added_bytes']:,})",
            flush=True,
        )
    for row in rows:
        row["final_accuracy"] = evaluate(row["task"] - 1)
        row["forgetting"] = row["accuracy"] - row["final_accuracy"]

    mask_bytes = math.ceil(bits / 8)
    later = [row["added_bytes"] for row in rows[1:]]
    extra = sorted({added - mask_bytes for added in later})
    n = len(rows)
    window = min(10, n)
    early = rows[9 : 9 + window] if n >= 10 + window else rows[:window]
    summary = {
        "command": "python benchmarks/exssnet_100_tasks.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "build_s": build_s,
        "maskable_weights": bits,
        "mask_bytes_per_task": mask_bytes,
        "added_bytes_beyond_mask": extra,
        "final_accuracy": statistics.fmean(r["final_accuracy"] for r in rows),
        "max_forgetting": max(r["forgetting"] for r in rows),
        "train_s_task10": rows[min(9, n - 1)]["train_s"],
        "train_s_last": rows[-1]["train_s"],
        "train_s_ratio_last_to_10": rows[-1]["train_s"] / rows[min(9, n - 1)]["train_s"],
        "median_train_s_early": statistics.median(r["train_s"] for r in early),
        "median_train_s_last_10": statistics.median(r["train_s"] for r in rows[-window:]),
        "total_s": time.perf_counter() - start,
    }
    summary["median_ratio"] = summary["median_train_s_last_10"] / summary["median_train_s_early"]
    (args.out / "exssnet_100_tasks.json").write_text(
        json.dumps({"summary": summary, "tasks": rows}, indent=1)
    )
    lines = [
        f"`{summary['command']}`",
        "",
        f"- maskable weights: {bits:,} (a mask: {mask_bytes:,} bytes); bytes added per task "
        f"beyond the mask (tasks 2+): {extra}",
        f"- final accuracy over {n} tasks: {100 * summary['final_accuracy']:.2f} %; largest "
        f"forgetting: {100 * summary['max_forgetting']:.2f} pts",
        f"- training time: task 10 {summary['train_s_task10']:.2f} s, task {n} "
        f"{summary['train_s_last']:.2f} s (x{summary['train_s_ratio_last_to_10']:.2f}); "
        f"median of tasks {early[0]['task']}-{early[-1]['task']} "
        f"{summary['median_train_s_early']:.2f} s, of the last "
        f"{window} {summary['median_train_s_last_10']:.2f} s (x{summary['median_ratio']:.2f})",
        "",
        "| task | train (s) | acc. after training (%) | final acc. (%) | stored bytes |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['train_s']:.2f} | {100 * row['accuracy']:.2f} | "
            f"{100 * row['final_accuracy']:.2f} | {row['stored_bytes']:,} |"
        )
    (args.out / "exssnet_100_tasks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:5]))


if __name__ == "__main__":
    main()
