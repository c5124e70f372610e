"""ExSSNeT vs SSNeT vs SupSup on task-incremental Split Fashion-MNIST, on the ``compare`` runner.

For each density, :func:`avalanche_ctr.experiments.compare` trains ``exssnet``, ``ssnet``
and ``supsup`` with every seed on ``split_fmnist`` with the benchmark's defaults (MLP
784-256-256 with per-task heads, Adam 0.01, batch 128, 4 epochs per experience: 2 mask +
2 weight epochs for ExSSNeT / SSNeT, 4 mask epochs for SupSup) and writes its report to
``<out>/density-<d>/``; repeating the command resumes. This script adds what ``compare``
does not measure:

* the bit-packed mask a finished task stores, ``ceil(n_maskable / 8)`` bytes;
* the evaluation throughput on task 0 of each trained supermask net (loaded from the run's
  checkpoint) relative to the dense backbone of the same shape, timed with
  ``eval_throughput.fastest_pass`` on random inputs (fastest of alternating passes).

It prints and writes ``<out>/exssnet_vs_supsup.md`` (per method × density, mean ± std over
seeds, and the per-seed differences ExSSNeT − SupSup and ExSSNeT − SSNeT) and
``<out>/exssnet_vs_supsup.json`` (those figures, per-run measurements and machine facts).

Example::

    python benchmarks/exssnet_vs_supsup.py --threads 1 --out /tmp/exssnet_vs_supsup
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import avalanche
import torch
from eval_throughput import fastest_pass

from avalanche_ctr.checkpoint import load_model
from avalanche_ctr.experiments import Settings, compare
from avalanche_ctr.experiments.report import METRICS
from avalanche_ctr.experiments.runner import run_paths
from avalanche_ctr.exssnet import convert_to_supermask

METHODS = ("exssnet", "ssnet", "supsup")
NAMES = {"exssnet": "ExSSNeT", "ssnet": "SSNeT", "supsup": "SupSup"}
COLUMNS = ("final_accuracy", "forgetting", "bwt", "fwt", "bytes_per_task")


def measure(
    settings: Settings, checkpoint: Path, *, samples: int, batch: int, repeats: int
) -> dict[str, Any]:
    """Packed-mask bytes per task, and eval throughput on task 0 of the run's trained net
    relative to the dense backbone, of the run whose checkpoint is ``checkpoint``."""
    backbone = settings.spec.backbone
    density = settings.options["density"]
    net = load_model(checkpoint, convert_to_supermask(backbone(settings), density=density))
    dense = backbone(settings).eval()
    images = torch.rand(samples, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    batches = list(images.split(batch))
    # the first pair warms up; each model keeps its fastest pass of the alternating rest
    passes = [
        (fastest_pass(net, batches), fastest_pass(dense, batches)) for _ in range(repeats + 1)
    ]
    t_net, t_dense = (min(column) for column in zip(*passes[1:], strict=True))
    return {
        "mask_bytes_per_task": math.ceil(net.n_maskable / 8),
        "samples_per_s": len(images) / t_net,
        "dense_samples_per_s": len(images) / t_dense,
        "throughput_ratio": t_dense / t_net,
        "loadavg_1m": os.getloadavg()[0],
    }


def mean_std(values: list[float], scale: float = 1.0, spec: str = ".2f") -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format(scale * statistics.fmean(values), spec)} ± {format(scale * std, spec)}"


def report(runs: list[dict], diffs: dict[str, dict[float, list[float]]], seeds: list[int]) -> str:
    """The per method × density table and the table of per-seed differences."""
    titles = [METRICS[m][0] for m in COLUMNS]
    lines = [
        f"| method | density | {' | '.join(titles)} | packed mask bytes / task "
        "| eval throughput vs dense |",
        "|---|" + "---:|" * (len(titles) + 3),
    ]
    for density in dict.fromkeys(r["density"] for r in runs):
        for name in METHODS:
            group = [r for r in runs if r["density"] == density and r["strategy"] == name]
            cells = [mean_std([r[m] for r in group], *METRICS[m][1:]) for m in COLUMNS]
            lines.append(
                f"| {NAMES[name]} | {density:.2f} | {' | '.join(cells)} "
                f"| {group[0]['mask_bytes_per_task']:,} "
                f"| {mean_std([r['throughput_ratio'] for r in group])} |"
            )
    lines += ["", f"Final accuracy differences (pts), seed {' / '.join(map(str, seeds))}:", ""]
    lines += [f"| density | {' | '.join(diffs)} |", "|---:|" + "---|" * len(diffs)]
    for density in next(iter(diffs.values())):
        cells = [
            " / ".join(f"{d:+.2f}" for d in pair[density])
            + f" (mean {statistics.fmean(pair[density]):+.2f})"
            for pair in diffs.values()
        ]
        lines.append(f"| {density:.2f} | {' | '.join(cells)} |")
    overall = [
        f"{label} {statistics.fmean(d for ds in pair.values() for d in ds):+.2f} pts"
        for label, pair in diffs.items()
    ]
    lines += ["", f"Mean over every density × seed pair: {'; '.join(overall)}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--densities", nargs="+", type=float, default=[0.02, 0.05, 0.10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-root", default=None, help="default: the package's cache")
    parser.add_argument("--throughput-samples", type=int, default=10_000)
    parser.add_argument("--throughput-batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per model")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=Path("runs/exssnet_vs_supsup"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    facts = {
        "torch": torch.__version__,
        "avalanche": avalanche.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    print(json.dumps(facts), flush=True)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for density in args.densities:
        settings = Settings(
            benchmark="split_fmnist", data_root=args.data_root, options={"density": density}
        )
        run_dir = args.out / f"density-{density:g}"
        records = compare(settings, list(METHODS), args.seeds, out=run_dir, progress=False)
        for record in records:
            extra = measure(
                settings,
                run_paths(run_dir, record["strategy"], record["seed"])[0],
                samples=args.throughput_samples,
                batch=args.throughput_batch,
                repeats=args.repeats,
            )
            runs.append(
                {
                    "strategy": record["strategy"],
                    "density": density,
                    "seed": record["seed"],
                    **record["summary"],
                    **extra,
                }
            )
    acc = {(r["strategy"], r["density"], r["seed"]): 100 * r["final_accuracy"] for r in runs}
    diffs = {
        f"ExSSNeT − {NAMES[other]}": {
            d: [acc["exssnet", d, s] - acc[other, d, s] for s in args.seeds] for d in args.densities
        }
        for other in ("supsup", "ssnet")
    }
    wall = time.perf_counter() - started
    facts.update(loadavg_end=os.getloadavg(), wall_s=wall)
    text = (
        f"{report(runs, diffs, args.seeds)}\n\nSettings: "
        f"{json.dumps(settings.config())}\n\nMachine: {json.dumps(facts)}"
    )
    print(f"\n{text}", flush=True)
    (args.out / "exssnet_vs_supsup.md").write_text(text + "\n")
    payload = {
        "facts": facts,
        "args": {k: str(v) for k, v in vars(args).items()},
        "settings": settings.config(),
        "differences": diffs,
        "runs": runs,
    }
    (args.out / "exssnet_vs_supsup.json").write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
