"""ExSSNeT vs SSNeT vs SupSup on task-incremental Split Fashion-MNIST.

Every method trains the same multi-head MLP (converted in place into a
supermask network by the strategy) with the same optimizer, learning rate,
batch size and total epochs per experience:

* ExSSNeT: ``mask_epochs`` epochs learn the task's supermask, then
  ``weight_epochs`` epochs train the weights of that mask no earlier task uses;
* SSNeT (``ExSSNeT(..., exclusive=False)``): the same, but every weight of the
  mask is trained, so earlier tasks may be forgotten;
* SupSup: ``mask_epochs + weight_epochs`` epochs learn the supermask only.

After training experience ``i`` the tasks ``0..i`` are evaluated (a task not
yet trained cannot be evaluated). From the accuracy matrix the script reports
the final average accuracy, the average forgetting, the bytes the model grows
by per finished task, and the evaluation throughput of the trained supermask
network relative to a dense model of the same shape.

Example::

    python benchmarks/exssnet_vs_supsup.py --out /tmp/exssnet_vs_supsup.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import avalanche
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from avalanche.training.plugins import EvaluationPlugin
from torch import Tensor, nn

from avalanche_ctr.benchmarks import SplitFashionMNIST
from avalanche_ctr.exssnet import ExSSNeT, SupermaskNet, SupSup

METHODS = ("ExSSNeT", "SSNeT", "SupSup")


class MultiHeadMLP(MultiTaskModule):
    """Two hidden ReLU layers and one linear head per task (MTSimpleMLP style)."""

    def __init__(self, hidden: int = 256, input_size: int = 28 * 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(input_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.classifier = MultiHeadClassifier(hidden)

    def forward(self, x: Tensor, task_labels: Tensor | int) -> Tensor:
        return self.classifier(self.features(x), task_labels)


# ------------------------------------------------------------------- helpers
def state_bytes(model: nn.Module) -> int:
    """Sum of the bytes of every tensor in ``model.state_dict()``."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def make_optimizer(params, args: argparse.Namespace) -> torch.optim.Optimizer:
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum)


def make_strategy(method: str, model: nn.Module, density: float, args: argparse.Namespace):
    common = {
        "model": model,
        "optimizer": make_optimizer(model.parameters(), args),
        "density": density,
        "train_mb_size": args.batch_size,
        "eval_mb_size": args.eval_batch_size,
        "device": "cpu",
        "evaluator": EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    }
    if method == "SupSup":
        return SupSup(train_epochs=args.mask_epochs + args.weight_epochs, **common)
    return ExSSNeT(
        mask_epochs=args.mask_epochs,
        weight_epochs=args.weight_epochs,
        exclusive=(method == "ExSSNeT"),
        **common,
    )


def experience_accuracies(metrics: dict, n_seen: int) -> list[float]:
    """Accuracy of experiences ``0..n_seen-1`` from the evaluator's last metrics."""
    accs = []
    for exp_id in range(n_seen):
        suffix = f"/Exp{exp_id:03d}"
        keys = [
            k for k in metrics if k.startswith("Top1_Acc_Exp/eval_phase/") and k.endswith(suffix)
        ]
        if len(keys) != 1:
            raise RuntimeError(f"expected one accuracy for experience {exp_id}, got {keys}")
        accs.append(float(metrics[keys[0]]))
    return accs


def final_accuracy(matrix: list[list[float]]) -> float:
    return statistics.fmean(matrix[-1])


def average_forgetting(matrix: list[list[float]]) -> float:
    """Mean over tasks ``0..n-2`` of (best accuracy before the last task) - (final accuracy)."""
    n = len(matrix)
    drops = []
    for task in range(n - 1):
        best = max(matrix[row][task] for row in range(task, n - 1))
        drops.append(best - matrix[-1][task])
    return statistics.fmean(drops)


def test_images(scenario, n: int) -> Tensor:
    """The first ``n`` test images of the stream (all experiences, eval transforms)."""
    chunks, total = [], 0
    for exp in scenario.test_stream:
        loader = torch.utils.data.DataLoader(exp.dataset.eval(), batch_size=1000, shuffle=False)
        for batch in loader:
            chunks.append(batch[0])
            total += batch[0].shape[0]
            if total >= n:
                return torch.cat(chunks)[:n]
    return torch.cat(chunks)


@torch.no_grad()
def _timed_pass(model: nn.Module, batches: list[Tensor], task: int) -> float:
    start = time.perf_counter()
    for x in batches:
        model(x, task)
    return time.perf_counter() - start


@torch.no_grad()
def throughput(
    sparse: nn.Module, dense: nn.Module, images: Tensor, *, batch: int, repeats: int, task: int = 0
) -> tuple[float, float]:
    """Evaluation samples/s of ``sparse`` and ``dense`` on task ``task``.

    One warm-up pass each, then ``repeats`` timed passes over ``images``
    alternating between the two models; samples/s of each model's fastest pass
    (the least disturbed by other work on the machine).
    """
    batches = list(images.split(batch))
    sparse.eval()
    dense.eval()
    _timed_pass(sparse, batches, task)
    _timed_pass(dense, batches, task)
    t_sparse = t_dense = float("inf")
    for _ in range(repeats):
        t_sparse = min(t_sparse, _timed_pass(sparse, batches, task))
        t_dense = min(t_dense, _timed_pass(dense, batches, task))
    n = images.shape[0]
    return n / t_sparse, n / t_dense


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


# --------------------------------------------------------------------- runs
def run_one(
    method: str, density: float, seed: int, scenario, images: Tensor, args: argparse.Namespace
) -> dict:
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = MultiHeadMLP(args.hidden)
    strategy = make_strategy(method, model, density, args)
    net = strategy.model
    assert isinstance(net, SupermaskNet)
    bytes_after = []
    matrix = []
    kkt_sources = []
    plugin = strategy.exssnet_plugin
    train_stream, test_stream = scenario.train_stream, scenario.test_stream
    for i, experience in enumerate(train_stream):
        strategy.train(experience)
        kkt_sources.append(None if plugin.last_kkt is None else plugin.last_kkt.source)
        bytes_after.append(state_bytes(net))
        strategy.eval(test_stream[: i + 1])
        matrix.append(experience_accuracies(strategy.evaluator.get_last_metrics(), i + 1))
    train_eval_s = time.perf_counter() - start

    torch.manual_seed(seed)
    dense = MultiHeadMLP(args.hidden)
    sparse_sps, dense_sps = throughput(
        net, dense, images, batch=args.throughput_batch, repeats=args.throughput_repeats
    )
    load_1m = os.getloadavg()[0]
    n = len(matrix)
    return {
        "method": method,
        "density": density,
        "seed": seed,
        "acc_matrix": matrix,
        "final_acc": final_accuracy(matrix),
        "forgetting": average_forgetting(matrix),
        "state_bytes_after_task": bytes_after,
        "bytes_per_task": (bytes_after[-1] - bytes_after[0]) / (n - 1) if n > 1 else float("nan"),
        "mask_bytes_per_task": math.ceil(net.n_maskable / 8),
        "n_maskable": net.n_maskable,
        "dense_state_bytes": state_bytes(dense),
        "kkt_sources": kkt_sources,
        "sparse_samples_per_s": sparse_sps,
        "dense_samples_per_s": dense_sps,
        "throughput_ratio": sparse_sps / dense_sps,
        "loadavg_1m_after_throughput": load_1m,
        "train_eval_s": train_eval_s,
        "total_s": time.perf_counter() - start,
    }


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    keys = sorted({(r["method"], r["density"]) for r in runs}, key=lambda k: (k[1], k[0]))
    order = {m: i for i, m in enumerate(METHODS)}
    keys.sort(key=lambda k: (k[1], order[k[0]]))
    for method, density in keys:
        group = [r for r in runs if r["method"] == method and r["density"] == density]
        acc = mean_std([100 * r["final_acc"] for r in group])
        fgt = mean_std([100 * r["forgetting"] for r in group])
        ratio = mean_std([r["throughput_ratio"] for r in group])
        rows.append(
            {
                "method": method,
                "density": density,
                "seeds": [r["seed"] for r in group],
                "final_acc_mean": acc[0],
                "final_acc_std": acc[1],
                "forgetting_mean": fgt[0],
                "forgetting_std": fgt[1],
                "bytes_per_task": statistics.fmean(r["bytes_per_task"] for r in group),
                "mask_bytes_per_task": group[0]["mask_bytes_per_task"],
                "dense_state_bytes": group[0]["dense_state_bytes"],
                "throughput_ratio_mean": ratio[0],
                "throughput_ratio_std": ratio[1],
                "sparse_samples_per_s_mean": statistics.fmean(
                    r["sparse_samples_per_s"] for r in group
                ),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| Method | Density | Final acc. (%) | Forgetting (pts) | State bytes / task "
        "| Packed-mask bytes / task | Eval throughput vs dense |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['density']:.2f} "
            f"| {row['final_acc_mean']:.2f} ± {row['final_acc_std']:.2f} "
            f"| {row['forgetting_mean']:.2f} ± {row['forgetting_std']:.2f} "
            f"| {row['bytes_per_task']:,.0f} | {row['mask_bytes_per_task']:,} "
            f"| {row['throughput_ratio_mean']:.2f} ± {row['throughput_ratio_std']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Compare ExSSNeT, SSNeT and SupSup on task-incremental Split Fashion-MNIST "
            "with the same multi-head MLP, optimizer and epochs per experience."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--densities", nargs="+", type=float, default=[0.02, 0.05, 0.10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-experiences", type=int, default=5, help="must divide 10")
    parser.add_argument("--hidden", type=int, default=256, help="MLP hidden width H")
    parser.add_argument(
        "--mask-epochs", type=int, default=2, help="ExSSNeT/SSNeT mask epochs per experience"
    )
    parser.add_argument(
        "--weight-epochs",
        type=int,
        default=2,
        help="ExSSNeT/SSNeT weight epochs per experience; SupSup trains its mask for "
        "mask-epochs + weight-epochs epochs",
    )
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD only")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument(
        "--throughput-samples", type=int, default=10_000, help="test images timed per pass"
    )
    parser.add_argument("--throughput-batch", type=int, default=1000)
    parser.add_argument("--throughput-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--data-root", default=None, help="dataset root (default: the package's cache)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the markdown table to FILE and the config, per-run results and "
        "summary to FILE with suffix .json (only the JSON if FILE ends in .json)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, avalanche {avalanche.__version__}, "
        f"python {platform.python_version()}, threads {torch.get_num_threads()}",
        flush=True,
    )
    print(f"config: {json.dumps(vars(args), default=str)}", flush=True)
    start = time.perf_counter()
    runs = []
    for seed in args.seeds:
        scenario = SplitFashionMNIST(args.n_experiences, seed=seed, dataset_root=args.data_root)
        images = test_images(scenario, args.throughput_samples)
        for density in args.densities:
            for method in args.methods:
                run = run_one(method, density, seed, scenario, images, args)
                runs.append(run)
                print(
                    f"[{method:7s} d={density:.2f} seed={seed}] "
                    f"final acc {100 * run['final_acc']:.2f}% "
                    f"forgetting {100 * run['forgetting']:.2f} pts "
                    f"bytes/task {run['bytes_per_task']:,.0f} "
                    f"(mask {run['mask_bytes_per_task']:,}) "
                    f"throughput {run['sparse_samples_per_s']:,.0f}/s vs dense "
                    f"{run['dense_samples_per_s']:,.0f}/s (x{run['throughput_ratio']:.2f}) "
                    f"kkt {run['kkt_sources']} "
                    f"final row {[round(100 * a, 2) for a in run['acc_matrix'][-1]]} "
                    f"[{run['total_s']:.1f}s, load {run['loadavg_1m_after_throughput']:.2f}]",
                    flush=True,
                )
    wall = time.perf_counter() - start
    rows = summarise(runs)
    table = markdown_table(rows)
    print()
    print(table)
    print(f"\nwall time: {wall:.1f}s for {len(runs)} runs", flush=True)
    if args.out is not None:
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__,
            "avalanche": avalanche.__version__,
            "wall_s": wall,
            "summary": rows,
            "runs": runs,
        }
        json_path = args.out if args.out.suffix == ".json" else args.out.with_suffix(".json")
        if args.out.suffix != ".json":
            args.out.write_text(table + "\n")
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out}" + ("" if json_path == args.out else f" and {json_path}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
