"""CTR against adapter and frozen-encoder baselines on the CTR paper's DSC and ASC streams.

Every system uses the same encoder (default: the packaged all-MiniLM-L6-v2 and its
tokenizer), epochs, batch size, ``max_length``, learning rate (Adam) and
training subsample:

* ``ctr``: :class:`~avalanche_ctr.models.CTRModel` + :class:`~avalanche_ctr.training.CTR`;
* ``frozen``: ``AdapterBERT(adapters=False)`` (frozen encoder + per-task heads) +
  Avalanche's ``Naive``;
* ``adapter_naive``: ``AdapterBERT`` (one adapter shared by all tasks in each of the
  two places per layer where CTR puts its CL-plugins) + ``Naive``;
* ``adapter_hat``: ``CTRModel(knowledge_sharing=False)`` (adapters with HAT masks,
  the paper's "CTR without KSM") + ``CTR``;
* ``adapter_ewc``: ``AdapterBERT`` + Avalanche's ``EWC`` (the encoder is frozen, so
  the penalty acts on the adapters; heads are per task).

After training task ``i`` the test experiences ``0..i`` are evaluated (CTR cannot
evaluate a task it has not trained). From the accuracy matrix the script reports the
final average accuracy, the final average macro-F1 (macro-F1 of each task's classes,
averaged over tasks), the average forgetting, the wall time per task, the mean time of
one training iteration (forward, backward, plugin hooks and optimizer step; data
loading excluded) and CTR's iteration time relative to ``adapter_hat``, beside the
paper's BERT-base numbers.

Results are written to ``--out`` (markdown) and ``--out`` with suffix ``.json``
after every task, so a run that is stopped keeps what it finished; ``--combine``
builds the table from such JSON files of separate runs.

Example::

    HF_HUB_OFFLINE=1 python benchmarks/ctr_text.py --benchmarks asc --systems ctr \\
        --max-length 64 --batch-size 32 --epochs 1 --n-train 300 --n-test 200 \\
        --out /tmp/ctr_asc.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import avalanche
import numpy as np
import torch
from avalanche.benchmarks import dataset_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import EWC, Naive
from avalanche.training.plugins import EvaluationPlugin
from sklearn.model_selection import train_test_split

from avalanche_ctr.benchmarks import ASC, DSC
from avalanche_ctr.ctr import default_encoder_path
from avalanche_ctr.metrics import macro_f1_metrics
from avalanche_ctr.models import AdapterBERT, CTRModel
from avalanche_ctr.training import CTR

SYSTEMS = ("ctr", "adapter_hat", "frozen", "adapter_naive", "adapter_ewc")
BENCHMARKS = ("asc", "dsc")
DESCRIPTION = {
    "ctr": "CTR (CTRModel + CTR)",
    "adapter_hat": "Adapter + HAT (CTRModel(knowledge_sharing=False) + CTR)",
    "frozen": "Frozen encoder + heads, Naive",
    "adapter_naive": "AdapterBERT, Naive",
    "adapter_ewc": "AdapterBERT, EWC",
}
# The paper's final accuracy / macro-F1 with BERT-base (../shared/data/README.md).
PAPER = {
    "ctr": ("CTR", {"asc": (89.47, 83.62), "dsc": (89.31, 88.75)}),
    "adapter_hat": ("Adapter-BERT + HAT", {"asc": (86.14, 78.52), "dsc": (88.00, 87.26)}),
    "frozen": ("Frozen BERT, NCL", {"asc": (85.51, 76.64), "dsc": (61.88, 45.79)}),
    "adapter_naive": ("Adapter-BERT, NCL", {"asc": (54.03, 44.81), "dsc": (64.94, 63.40)}),
    "adapter_ewc": ("not in the paper's table", {}),
}
PAPER_EXTRA = (
    ("Frozen BERT + HAT", {"asc": (86.74, 78.16), "dsc": (87.29, 86.14)}),
    ("Adapter-BERT, one model per task (ONE)", {"asc": (85.96, 78.07), "dsc": (88.30, 87.31)}),
    ("BERT multi-task upper bound (MTL)", {"asc": (91.91, 88.11), "dsc": (89.77, 89.28)}),
)


# ------------------------------------------------------------------- helpers
class IterationTimer(SupervisedPlugin):
    """Wall time of each training iteration (``before_training_iteration`` to
    ``after_training_iteration``: forward, backward, every plugin's hooks and the
    optimizer step; the data loader's time is not counted), per experience."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[list[float]] = []
        self._start = 0.0

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.times.append([])

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.times[-1].append(time.perf_counter() - self._start)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cap_test_stream(scenario, n_test: int | None, seed: int):
    """The scenario with at most ``n_test`` test examples per experience (a seeded
    subsample, stratified by label); the training stream and task labels unchanged."""
    if n_test is None:
        return scenario
    tests = []
    for experience in scenario.test_stream:
        dataset = experience.dataset
        targets = [int(y) for y in dataset.targets]
        if len(targets) <= n_test:
            tests.append(dataset)
            continue
        keep, _ = train_test_split(
            np.arange(len(targets)), train_size=n_test, stratify=targets, random_state=seed
        )
        tests.append(dataset.subset(sorted(int(i) for i in keep)))
    capped = dataset_benchmark(
        train_datasets=[e.dataset for e in scenario.train_stream], test_datasets=tests
    )
    capped.task_names = scenario.task_names
    return capped


def make_scenario(name: str, args: argparse.Namespace, tokenizer):
    builder = ASC if name == "asc" else DSC
    n_train = args.n_train if name == "asc" else args.dsc_n_train
    scenario = builder(
        args.data_root / name,
        n_train=n_train,
        tokenizer=tokenizer,
        max_length=args.max_length,
        seed=args.seed,
    )
    if args.n_tasks is not None:
        scenario = _first_tasks(scenario, args.n_tasks)
    return cap_test_stream(scenario, args.n_test, args.seed)


def _first_tasks(scenario, n: int):
    first = dataset_benchmark(
        train_datasets=[e.dataset for e in scenario.train_stream][:n],
        test_datasets=[e.dataset for e in scenario.test_stream][:n],
    )
    first.task_names = scenario.task_names[:n]
    return first


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def make_strategy(system: str, args: argparse.Namespace, timer: IterationTimer):
    common = {
        "criterion": torch.nn.CrossEntropyLoss(),
        "train_mb_size": args.batch_size,
        "train_epochs": args.epochs,
        "eval_mb_size": args.eval_batch_size,
        "device": "cpu",
        "plugins": [timer],
        "evaluator": EvaluationPlugin(
            accuracy_metrics(experience=True), *macro_f1_metrics(experience=True), loggers=[]
        ),
    }
    encoder = args.encoder
    if system in ("ctr", "adapter_hat"):
        model = CTRModel(encoder, bottleneck=args.bottleneck, knowledge_sharing=(system == "ctr"))
        # the CTR plugin points the optimizer at each task's trainable parameters
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        return CTR(model=model, optimizer=optimizer, s_max=args.s_max, **common)
    model = AdapterBERT(encoder, bottleneck=args.bottleneck, adapters=(system != "frozen"))
    # one parameter group over the trainable parameters: Avalanche adds each new head
    optimizer = torch.optim.Adam(trainable(model), lr=args.lr)
    if system == "adapter_ewc":
        return EWC(model=model, optimizer=optimizer, ewc_lambda=args.ewc_lambda, **common)
    return Naive(model=model, optimizer=optimizer, **common)


def experience_metric(metrics: dict, prefix: str, exp_id: int) -> float:
    suffix = f"/Exp{exp_id:03d}"
    keys = [k for k in metrics if k.startswith(f"{prefix}/eval_phase/") and k.endswith(suffix)]
    if len(keys) != 1:
        raise RuntimeError(f"expected one {prefix} for experience {exp_id}, got {keys}")
    return float(metrics[keys[0]])


def average_forgetting(matrix: list[list[float]]) -> float:
    """Mean over tasks ``0..n-2`` of (best accuracy before the last task) - (final accuracy)."""
    n = len(matrix)
    if n < 2:
        return float("nan")
    drops = []
    for task in range(n - 1):
        best = max(matrix[row][task] for row in range(task, n - 1))
        drops.append(best - matrix[-1][task])
    return statistics.fmean(drops)


def summary(run: dict) -> dict:
    acc, f1 = run["acc_matrix"], run["f1_matrix"]
    steps = [t for task in run["iteration_s"] for t in task]
    return {
        "final_acc": 100 * statistics.fmean(acc[-1]),
        "final_macro_f1": 100 * statistics.fmean(f1[-1]),
        "forgetting": 100 * average_forgetting(acc),
        "tasks_done": len(acc),
        "n_tasks": run["n_tasks"],
        "task_s_mean": statistics.fmean(run["task_s"]),
        "train_s_mean": statistics.fmean(run["train_s"]),
        "eval_s_mean": statistics.fmean(run["eval_s"]),
        "total_s": sum(run["task_s"]),
        "iteration_s_mean": statistics.fmean(steps) if steps else float("nan"),
        "iteration_s_median": statistics.median(steps) if steps else float("nan"),
        "iterations": len(steps),
        "load_mean": statistics.fmean(run["loadavg_1m"]),
    }


def run_system(
    system: str, benchmark: str, scenario, args: argparse.Namespace, run: dict, save
) -> None:
    """Train ``system`` task by task, filling ``run`` in place and calling ``save`` after
    every task."""
    seed_everything(args.seed)
    timer = IterationTimer()
    strategy = make_strategy(system, args, timer)
    run.update(
        {
            "system": system,
            "benchmark": benchmark,
            "task_names": list(scenario.task_names),
            "n_tasks": len(scenario.train_stream),
            "n_train": [len(e.dataset) for e in scenario.train_stream],
            "n_test": [len(e.dataset) for e in scenario.test_stream],
            "acc_matrix": [],
            "f1_matrix": [],
            "task_s": [],
            "train_s": [],
            "eval_s": [],
            "iteration_s": timer.times,
            "loadavg_1m": [],
        }
    )
    test_stream = scenario.test_stream
    for i, experience in enumerate(scenario.train_stream):
        start = time.perf_counter()
        strategy.train(experience)
        trained = time.perf_counter()
        strategy.eval(test_stream[: i + 1])
        done = time.perf_counter()
        metrics = strategy.evaluator.get_last_metrics()
        run["acc_matrix"].append(
            [experience_metric(metrics, "Top1_Acc_Exp", j) for j in range(i + 1)]
        )
        run["f1_matrix"].append(
            [experience_metric(metrics, "MacroF1_Exp", j) for j in range(i + 1)]
        )
        run["train_s"].append(trained - start)
        run["eval_s"].append(done - trained)
        run["task_s"].append(done - start)
        run["loadavg_1m"].append(os.getloadavg()[0])
        steps = timer.times[-1]
        print(
            f"[{benchmark} {system}] task {i + 1}/{run['n_tasks']} {scenario.task_names[i]}: "
            f"acc {100 * run['acc_matrix'][-1][-1]:.2f} "
            f"avg acc {100 * statistics.fmean(run['acc_matrix'][-1]):.2f} "
            f"avg F1 {100 * statistics.fmean(run['f1_matrix'][-1]):.2f} | "
            f"train {trained - start:.1f}s ({len(steps)} it, "
            f"{statistics.fmean(steps) if steps else float('nan'):.3f}s/it) "
            f"eval {done - trained:.1f}s | load {run['loadavg_1m'][-1]:.2f}",
            flush=True,
        )
        run["summary"] = summary(run)
        save()


# -------------------------------------------------------------------- report
def _fmt(value: float, spec: str = ".2f") -> str:
    return "n/a" if value is None or value != value else format(value, spec)


def markdown_table(runs: list[dict]) -> str:
    lines = []
    order = {s: i for i, s in enumerate(SYSTEMS)}
    for benchmark in BENCHMARKS:
        group = sorted(
            (r for r in runs if r.get("benchmark") == benchmark and r.get("acc_matrix")),
            key=lambda r: order[r["system"]],
        )
        if not group:
            continue
        hat = next((r for r in group if r["system"] == "adapter_hat"), None)
        lines += [
            f"**{benchmark.upper()}**",
            "",
            "| system | tasks | final acc. (%) | final macro-F1 (%) | forgetting (acc. pts) "
            "| total s | s / task (train + eval) | s / train iteration, mean (median) "
            "| vs adapter_hat, mean (median) | mean load (1 min) "
            "| paper, BERT-base: acc. / MF1 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for run in group:
            s = summary(run)
            ratio = ""
            if run["system"] == "ctr" and hat is not None:
                h = summary(hat)
                ratio = (
                    f"{_fmt(s['iteration_s_mean'] / h['iteration_s_mean'])}× "
                    f"({_fmt(s['iteration_s_median'] / h['iteration_s_median'])}×)"
                )
            paper_name, paper = PAPER[run["system"]]
            reference = (
                f"{paper[benchmark][0]:.2f} / {paper[benchmark][1]:.2f} ({paper_name})"
                if benchmark in paper
                else paper_name
            )
            tasks = f"{s['tasks_done']}/{s['n_tasks']}"
            lines.append(
                f"| {DESCRIPTION[run['system']]} | {tasks} | {_fmt(s['final_acc'])} "
                f"| {_fmt(s['final_macro_f1'])} | {_fmt(s['forgetting'])} "
                f"| {_fmt(s['total_s'], '.0f')} "
                f"| {_fmt(s['task_s_mean'], '.1f')} ({_fmt(s['train_s_mean'], '.1f')} + "
                f"{_fmt(s['eval_s_mean'], '.1f')}) | {_fmt(s['iteration_s_mean'], '.3f')} "
                f"({_fmt(s['iteration_s_median'], '.3f')}) "
                f"| {ratio} | {_fmt(s['load_mean'])} | {reference} |"
            )
        for name, paper in PAPER_EXTRA:
            acc, f1 = paper[benchmark]
            lines.append(f"| *(paper only)* {name} | | | | | | | | | | {acc:.2f} / {f1:.2f} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        description=(
            "CTR against frozen-encoder heads, naive adapters, adapters + HAT and adapters + "
            "EWC on the CTR paper's DSC (10 domains) and ASC (19 tasks) streams, all with "
            "the same encoder, epochs, batch size, max_length, learning rate and n_train."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--benchmarks", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument(
        "--data-root",
        type=Path,
        default=repo.parent / "shared" / "data",
        help="folder holding dsc/ and asc/ (default: ../shared/data beside the checkout)",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="encoder name or folder, loaded with its own tokenizer (default: the packaged "
        "all-MiniLM-L6-v2)",
    )
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per task")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--bottleneck", type=int, default=128, help="adapter / TSM units")
    parser.add_argument("--s-max", type=float, default=400.0, help="HAT s_max (ctr, adapter_hat)")
    parser.add_argument("--ewc-lambda", type=float, default=5000.0, help="adapter_ewc penalty")
    parser.add_argument(
        "--n-train", type=int, default=None, help="ASC: training examples kept per task (all)"
    )
    parser.add_argument(
        "--dsc-n-train", type=int, default=500, help="DSC: training examples kept per domain"
    )
    parser.add_argument(
        "--n-test",
        type=int,
        default=None,
        help="test examples kept per task, a seeded stratified subsample (default: all)",
    )
    parser.add_argument(
        "--n-tasks", type=int, default=None, help="only the first N tasks (for a quick look)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the markdown table to FILE and the config and per-task results to FILE "
        "with suffix .json, after every task",
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        default=None,
        help="only print (and --out) the table of the runs in these JSON files",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.combine:
        runs = [r for path in args.combine for r in json.loads(path.read_text())["runs"]]
        table = markdown_table(runs)
        print(table)
        if args.out is not None:
            args.out.write_text(table + "\n")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    args.encoder = args.encoder or default_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(args.encoder)
    print(
        f"torch {torch.__version__}, avalanche {avalanche.__version__}, "
        f"python {platform.python_version()}, threads {torch.get_num_threads()}, "
        f"load {os.getloadavg()}",
        flush=True,
    )
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(f"config: {json.dumps(config)}", flush=True)
    runs: list[dict] = []
    started = time.time()

    def save() -> None:
        if args.out is None:
            return
        payload = {
            "config": config,
            "command": " ".join(sys.argv),
            "torch": torch.__version__,
            "avalanche": avalanche.__version__,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "wall_s": time.time() - started,
            "runs": runs,
        }
        args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
        if args.out.suffix != ".json":
            args.out.write_text(markdown_table(runs) + "\n")

    for benchmark in args.benchmarks:
        scenario = make_scenario(benchmark, args, tokenizer)
        for system in args.systems:
            run: dict = {}
            runs.append(run)
            run_system(system, benchmark, scenario, args, run, save)
    print()
    print(markdown_table(runs))
    print(f"wall time: {time.time() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
