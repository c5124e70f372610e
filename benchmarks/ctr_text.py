"""CTR against adapter and frozen-encoder baselines on the CTR paper's DSC and ASC streams.

Every system runs through ``avalanche-ctr compare`` (:func:`avalanche_ctr.experiments.compare`)
with the same encoder (default: the packaged all-MiniLM-L6-v2), epochs, batch size,
``max_length``, Adam learning rate and training subsample:

* ``ctr``: :class:`~avalanche_ctr.models.CTRModel` + :class:`~avalanche_ctr.training.CTR`;
* ``frozen``: (a) the frozen encoder with per-task heads, Avalanche's ``Naive``;
* ``naive``: (b) ``AdapterBERT`` (one adapter shared by all tasks in each of the two
  places per layer where CTR puts its CL-plugins), Avalanche's ``Naive``;
* ``adapter_hat``: (c) ``CTRModel(knowledge_sharing=False)`` + ``CTR``: adapters with HAT
  masks, the paper's "CTR without KSM";
* ``ewc``: (d) ``AdapterBERT`` with Avalanche's ``EWC`` (the penalty acts on the adapters).

It writes ``<out>/<benchmark>/`` (the comparison's results, plots, TensorBoard logs
and checkpoints: a stopped run resumes when the command is repeated) and
``<out>/ctr_text.md``: per benchmark, final accuracy, final macro-F1, forgetting,
wall time per task, training-iteration time and CTR's iteration time relative to
(c), beside the paper's BERT-base numbers.

Example::

    python benchmarks/ctr_text.py --benchmarks asc --systems ctr adapter_hat \\
        --epochs 1 --n-train 100 --out /tmp/ctr_text
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import avalanche
import torch

from avalanche_ctr.experiments import Settings, compare

SYSTEMS = ("ctr", "adapter_hat", "frozen", "naive", "ewc")
DESCRIPTION = {
    "ctr": "CTR (`CTRModel` + `CTR`)",
    "adapter_hat": "(c) adapters + HAT (`CTRModel(knowledge_sharing=False)` + `CTR`)",
    "frozen": "(a) frozen encoder + per-task heads (`Naive`)",
    "naive": "(b) adapters, naive (`AdapterBERT` + `Naive`)",
    "ewc": "(d) adapters + EWC (`AdapterBERT` + `EWC`)",
}
# The paper's final accuracy / macro-F1 with BERT-base (../shared/data/README.md).
PAPER = {
    "ctr": ("CTR", {"asc": (89.47, 83.62), "dsc": (89.31, 88.75)}),
    "adapter_hat": ("Adapter-BERT + HAT", {"asc": (86.14, 78.52), "dsc": (88.00, 87.26)}),
    "frozen": ("Frozen BERT, NCL", {"asc": (85.51, 76.64), "dsc": (61.88, 45.79)}),
    "naive": ("Adapter-BERT, NCL", {"asc": (54.03, 44.81), "dsc": (64.94, 63.40)}),
    "ewc": ("not in the paper's table", {}),
}
PAPER_ONLY = (
    ("Frozen BERT + HAT", {"asc": (86.74, 78.16), "dsc": (87.29, 86.14)}),
    ("Adapter-BERT, one model per task (ONE)", {"asc": (85.96, 78.07), "dsc": (88.30, 87.31)}),
    ("BERT multi-task upper bound (MTL)", {"asc": (91.91, 88.11), "dsc": (89.77, 89.28)}),
)


def table(benchmark: str, records: list[dict]) -> str:
    by_system = {r["strategy"]: r for r in records}
    hat = by_system.get("adapter_hat")
    lines = [
        f"**{benchmark.upper()}**",
        "",
        "| system | final acc. (%) | final macro-F1 (%) | forgetting (acc. pts) "
        "| wall s / task (train + eval) | train s / iteration | vs (c) | paper, BERT-base: "
        "acc. / MF1 |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for system in SYSTEMS:
        if system not in by_system:
            continue
        record = by_system[system]
        s = record["summary"]
        train, evaluate = statistics.fmean(record["train_s"]), statistics.fmean(record["eval_s"])
        ratio = ""
        if system == "ctr" and hat is not None:
            ratio = f"{s['iteration_s'] / hat['summary']['iteration_s']:.2f}×"
        name, paper = PAPER[system]
        reference = (
            f"{paper[benchmark][0]:.2f} / {paper[benchmark][1]:.2f} ({name})"
            if (benchmark in paper)
            else name
        )
        lines.append(
            f"| {DESCRIPTION[system]} | {100 * s['final_accuracy']:.2f} "
            f"| {100 * s['final_macro_f1']:.2f} | {100 * s['forgetting']:.2f} "
            f"| {train + evaluate:.1f} ({train:.1f} + {evaluate:.1f}) "
            f"| {s['iteration_s']:.3f} | {ratio} | {reference} |"
        )
    for name, paper in PAPER_ONLY:
        acc, f1 = paper[benchmark]
        lines.append(f"| *(paper only)* {name} | | | | | | | {acc:.2f} / {f1:.2f} |")
    return "\n".join(lines)


def main() -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--benchmarks", nargs="+", choices=("dsc", "asc"), default=["dsc", "asc"])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--data-root", type=Path, default=repo.parent / "shared" / "data")
    parser.add_argument("--encoder", default=None, help="default: packaged all-MiniLM-L6-v2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="training examples kept per task (default: per benchmark)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/ctr_text"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, avalanche {avalanche.__version__}, python "
        f"{platform.python_version()}, threads {torch.get_num_threads()}",
        flush=True,
    )
    sections = []
    for benchmark in args.benchmarks:
        settings = Settings(
            benchmark=benchmark,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            data_root=str(args.data_root),
            encoder=args.encoder,
            max_length=args.max_length,
            n_train=args.n_train,
        )
        started = time.perf_counter()
        records = compare(
            settings, list(args.systems), [args.seed], out=args.out / benchmark, progress=False
        )
        print(f"{benchmark}: {time.perf_counter() - started:.0f} s", flush=True)
        sections.append(table(benchmark, records))
        sections.append(f"Settings: `{json.dumps(settings.config())}`")
    report = "\n\n".join(sections) + "\n"
    (args.out / "ctr_text.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
