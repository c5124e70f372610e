"""Metrics of a run, their mean and spread over seeds, and the files of a report.

From the accuracy matrix ``R`` (``R[i][j]``: accuracy on test experience ``j``
after training experience ``i``; every ``j``, tasks not trained yet included) of
``n`` experiences and the accuracies ``b_j`` before any training:

* final average accuracy ``(1/n) Σ_j R[n-1][j]`` (and the same for macro-F1);
* average forgetting ``(1/(n-1)) Σ_{j<n-1} (max_{j<=i<n-1} R[i][j] - R[n-1][j])``
  (Chaudhry et al., ECCV 2018);
* backward transfer ``(1/(n-1)) Σ_{j<n-1} (R[n-1][j] - R[j][j])`` (Lopez-Paz &
  Ranzato, NeurIPS 2017), negative when tasks are forgotten;
* forward transfer ``(1/(n-1)) Σ_{j>0} (R[j-1][j] - b_j)`` (Lopez-Paz & Ranzato,
  NeurIPS 2017; Avalanche's ``forward_transfer_metrics``): how much training the
  earlier tasks changed a task's accuracy before it was trained. With per-task heads
  an untrained task is predicted by its untrained head, so methods whose untrained
  prediction does not depend on the shared parts (our strategies) score 0.

With task inference (``compare --task-inference``), the supermask strategies'
final test stream is evaluated once more per inference method, without task
labels: the final average accuracy with inferred tasks, the task-inference accuracy
(fraction of test samples whose mini-batch was assigned its true task) and the
time of that evaluation relative to the labelled one (:data:`INFERENCE_METRICS`).

The report of a comparison (:func:`write_report`) is ``results.csv`` and
``results.md`` (per strategy, mean and sample standard deviation over seeds),
``accuracy_matrices.png`` (each strategy's mean accuracy matrix) and
``final_accuracy_forgetting.png`` (final accuracy, forgetting and forward transfer),
each written atomically (:func:`~avalanche_ctr.files.atomic_write_bytes`).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from avalanche_ctr.files import atomic_write_bytes

__all__ = [
    "METRICS",
    "REPORT_FILES",
    "INFERENCE_METRICS",
    "DIAGNOSTICS",
    "CTR_DIAGNOSTICS",
    "summarize",
    "final_average",
    "average_forgetting",
    "backward_transfer",
    "forward_transfer",
    "aggregate",
    "markdown_table",
    "write_report",
    "paired_table",
]

REPORT_FILES = (
    "results.csv",
    "results.md",
    "runs.json",
    "accuracy_matrices.png",
    "final_accuracy_forgetting.png",
)
"""The files of a comparison's report (``runs.json`` is written by the runner)."""

METRICS: dict[str, tuple[str, float, str]] = {
    "final_accuracy": ("final acc. (%)", 100.0, ".2f"),
    "final_macro_f1": ("final macro-F1 (%)", 100.0, ".2f"),
    "forgetting": ("forgetting (pts)", 100.0, ".2f"),
    "bwt": ("BWT (pts)", 100.0, ".2f"),
    "fwt": ("FWT (pts)", 100.0, ".2f"),
    "train_time_s": ("train time (s)", 1.0, ".1f"),
    "peak_memory_mib": ("peak memory (MiB)", 1.0, ".1f"),
    "bytes_per_task": ("bytes added / task", 1.0, ",.0f"),
}
"""Reported metrics: column title, display scale and format."""

DIAGNOSTICS: dict[str, tuple[str, float, str]] = {
    "exclusive_fraction": ("exclusive fraction of a new mask (%)", 100.0, ".1f"),
    "kkt_source_rate": ("tasks KKT initialised (%)", 100.0, ".0f"),
    "kkt_margin": ("KKT margin (pts)", 100.0, ".1f"),
    "first_epoch_acc": ("training acc. in the first mask epoch (%)", 100.0, ".1f"),
}
"""ExSSNeT diagnostics of the supermask strategies
(:mod:`avalanche_ctr.exssnet.diagnostics`), averaged over the tasks after the first."""

CTR_DIAGNOSTICS: dict[str, tuple[str, float, str]] = {
    "ctr_free_fraction": ("TSM units free at the end (%)", 100.0, ".1f"),
    "ctr_ksm_free_fraction": ("KSM units free at the end (%)", 100.0, ".1f"),
    "ctr_task_use": ("TSM units a task uses (%)", 100.0, ".1f"),
    "ctr_mask_movement": ("mask embedding movement (RMS)", 1.0, ".3f"),
    "ctr_ksm_ratio": ("‖KSM(h)‖ / ‖h‖", 1.0, ".3f"),
    "ctr_gate_on_rate": ("earlier tasks' gates on (%)", 100.0, ".1f"),
    "ctr_self_gate_on_rate": ("own gate on (%)", 100.0, ".1f"),
}
"""CTR diagnostics of the strategies with a ``CTRModel``
(:mod:`avalanche_ctr.ctr.diagnostics`), each the mean over its CL-plugins and masks or
sources: the fraction of TSM (and KSM) units no task uses after the last task, and over
the tasks (after the first for the earlier tasks' gates) the fraction of TSM units a
task uses, the movement of the task's mask embeddings, the size of the KSM output
relative to its input and the gate on-rates."""

INFERENCE_METRICS: dict[str, tuple[str, float, str]] = {
    "inferred_accuracy": ("final acc., inferred tasks (%)", 100.0, ".2f"),
    "task_inference": ("task inference (%)", 100.0, ".2f"),
    "inference_time_ratio": ("eval time vs labelled", 1.0, ".2f"),
}
"""Per task-inference method ``m``, summary keys ``<metric>_<m>``."""


def final_average(matrix: list[list[float]]) -> float:
    """Mean of the last row."""
    return statistics.fmean(matrix[-1])


def average_forgetting(matrix: list[list[float]]) -> float:
    """Mean drop from each earlier task's best accuracy before the last task to its
    final accuracy (0 for a single task)."""
    n = len(matrix)
    if n < 2:
        return 0.0
    return statistics.fmean(
        max(matrix[i][j] for i in range(j, n - 1)) - matrix[-1][j] for j in range(n - 1)
    )


def backward_transfer(matrix: list[list[float]]) -> float:
    """Mean change of each earlier task's accuracy from right after it was learned to
    the end (0 for a single task)."""
    n = len(matrix)
    if n < 2:
        return 0.0
    return statistics.fmean(matrix[-1][j] - matrix[j][j] for j in range(n - 1))


def forward_transfer(matrix: list[list[float]], initial: list[float]) -> float:
    """Mean change of each later task's accuracy, from before any training to right
    before it was trained (0 for a single task)."""
    n = len(matrix)
    if n < 2:
        return 0.0
    return statistics.fmean(matrix[j - 1][j] - initial[j] for j in range(1, n))


def summarize(record: dict[str, Any]) -> dict[str, float | None]:
    """The reported metrics of one run's record (see the module docstring)."""
    acc = record["acc_matrix"]
    stored = record["stored_bytes"]
    peak = record.get("peak_memory_bytes")
    iterations = sum(record["iterations"])
    return {
        "final_accuracy": final_average(acc),
        "final_macro_f1": final_average(record["f1_matrix"]),
        "forgetting": average_forgetting(acc),
        "bwt": backward_transfer(acc),
        "fwt": forward_transfer(acc, record["initial_acc"]),
        "train_time_s": sum(record["train_s"]),
        "peak_memory_mib": None if peak is None else peak / 2**20,
        "bytes_per_task": (stored[-1] - stored[0]) / (len(stored) - 1) if len(stored) > 1 else 0,
        "iteration_s": sum(
            t * k for t, k in zip(record["iteration_s"], record["iterations"], strict=True)
        )
        / iterations
        if iterations
        else None,
        **_inference_summary(record),
        **_diagnostics_summary(record),
        **_ctr_diagnostics_summary(record),
    }


def _diagnostics_summary(record: dict[str, Any]) -> dict[str, float]:
    later = record.get("diagnostics", [])[1:]
    if not later:
        return {}
    summary = {"exclusive_fraction": statistics.fmean(d["ExclusiveFraction"] for d in later)}
    if all("FirstEpochAccuracy" in d for d in later):
        summary["first_epoch_acc"] = statistics.fmean(d["FirstEpochAccuracy"] for d in later)
    kkt = [d for d in later if "KKTSource" in d]
    if kkt:
        summary["kkt_source_rate"] = statistics.fmean(d["KKTSource"] >= 0 for d in kkt)
        summary["kkt_margin"] = statistics.fmean(d["KKTMargin"] for d in kkt)
    return summary


def _ctr_diagnostics_summary(record: dict[str, Any]) -> dict[str, float]:
    per_task = record.get("ctr_diagnostics", [])
    if not per_task:
        return {}

    def mean(dicts: list[dict[str, float]], name: str, ksm: bool | None = None) -> float | None:
        values = [
            v
            for d in dicts
            for k, v in d.items()
            if k.partition("/")[0] == name and (ksm is None or ("/KSM." in k) == ksm)
        ]
        return statistics.fmean(values) if values else None

    summary = {
        "ctr_free_fraction": mean(per_task[-1:], "FreeFraction", ksm=False),
        "ctr_ksm_free_fraction": mean(per_task[-1:], "FreeFraction", ksm=True),
        "ctr_task_use": mean(per_task, "TaskUse", ksm=False),
        "ctr_mask_movement": mean(per_task, "MaskMovement"),
        "ctr_ksm_ratio": mean(per_task, "KSMRatio"),
        "ctr_gate_on_rate": mean(per_task[1:], "GateOnRate"),
        "ctr_self_gate_on_rate": mean(per_task, "SelfGateOnRate"),
    }
    return {key: value for key, value in summary.items() if value is not None}


def _inference_summary(record: dict[str, Any]) -> dict[str, float]:
    summary = {}
    for method, result in record.get("inferred", {}).items():
        summary[f"inferred_accuracy_{method}"] = statistics.fmean(result["acc"])
        summary[f"task_inference_{method}"] = statistics.fmean(result["task_acc"])
        summary[f"inference_time_ratio_{method}"] = result["eval_s"] / record["eval_s"][-1]
    return summary


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per strategy (in order of appearance): the number of seeds and the mean and
    sample standard deviation (0 for one seed) of every metric."""
    order: list[str] = []
    for record in records:
        if record["strategy"] not in order:
            order.append(record["strategy"])
    rows = []
    for name in order:
        runs = [r["summary"] for r in records if r["strategy"] == name]
        row: dict[str, Any] = {"strategy": name, "seeds": len(runs)}
        inference = [key for key in dict.fromkeys(k for run in runs for k in run) if _method(key)]
        for metric in [*METRICS, "iteration_s", *DIAGNOSTICS, *CTR_DIAGNOSTICS, *inference]:
            values = [run[metric] for run in runs if run.get(metric) is not None]
            row[f"{metric}_mean"] = statistics.fmean(values) if values else None
            row[f"{metric}_std"] = (
                statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
            )
        rows.append(row)
    return rows


def _cell(row: dict[str, Any], metric: str, display: tuple[str, float, str] | None = None) -> str:
    _, scale, spec = METRICS[metric] if display is None else display
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = format(mean * scale, spec)
    return f"{text} ± {format(std * scale, spec)}" if row["seeds"] > 1 else text


def _method(key: str) -> tuple[str, str] | None:
    """``(metric, method)`` of a task-inference summary key, else ``None``."""
    for metric in INFERENCE_METRICS:
        if key.startswith(f"{metric}_"):
            return metric, key[len(metric) + 1 :]
    return None


def inference_table(rows: list[dict[str, Any]]) -> str:
    """Accuracy with given labels next to accuracy with inferred tasks, per strategy
    and inference method (empty when no run inferred tasks)."""
    header = ["strategy", "method", METRICS["final_accuracy"][0]]
    header += [title for title, _, _ in INFERENCE_METRICS.values()]
    lines = []
    for row in rows:
        methods = dict.fromkeys(
            found[1] for key in row if key.endswith("_mean") and (found := _method(key[:-5]))
        )
        for method in methods:
            cells = [row["strategy"], method, _cell(row, "final_accuracy")]
            for metric, spec in INFERENCE_METRICS.items():
                cells.append(_cell(row, f"{metric}_{method}", spec))
            lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return ""
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2), *lines]
    )


def diagnostics_table(rows: list[dict[str, Any]]) -> str:
    """The ExSSNeT diagnostics of the strategies that have them (empty if none)."""
    return _strategy_table(rows, DIAGNOSTICS, "exclusive_fraction")


def ctr_diagnostics_table(rows: list[dict[str, Any]]) -> str:
    """The CTR diagnostics of the strategies that have them (empty if none; ``n/a`` for
    the KSM columns of a CTR without KSM)."""
    return _strategy_table(rows, CTR_DIAGNOSTICS, "ctr_free_fraction")


def _strategy_table(
    rows: list[dict[str, Any]], metrics: dict[str, tuple[str, float, str]], present: str
) -> str:
    """A markdown table of ``metrics`` for the strategies whose row has ``present``."""
    lines = [
        "| " + " | ".join([row["strategy"], *(_cell(row, m, metrics[m]) for m in metrics)]) + " |"
        for row in rows
        if row.get(f"{present}_mean") is not None
    ]
    if not lines:
        return ""
    header = "| " + " | ".join(["strategy", *(title for title, _, _ in metrics.values())]) + " |"
    return "\n".join([header, "|---|" + "---:|" * len(metrics), *lines])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The aggregated rows as a markdown table (mean ± std over seeds)."""
    header = ["strategy", "seeds", *(METRICS[m][0] for m in METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = [row["strategy"], str(row["seeds"]), *(_cell(row, m) for m in METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAIRED = {
    "final_accuracy": "final acc.",
    "final_macro_f1": "final macro-F1",
    "fwt": "FWT",
    "forgetting": "forgetting",
}
"""Metrics of the paired table (differences in points)."""


def paired_table(records: list[dict[str, Any]], pairs: dict[str, str]) -> str:
    """Seed-by-seed differences ``strategy − ablation`` for each pair of ``pairs``
    (strategy name → its ablation's name) whose both members ran with a common seed:
    one row per seed, then the mean and the number of seeds the strategy is ahead on
    (final accuracy). Empty when no pair ran."""
    by_key = {(r["strategy"], r["seed"]): r["summary"] for r in records}
    lines = []
    for name, ablation in pairs.items():
        seeds = sorted(s for n, s in by_key if n == name and (ablation, s) in by_key)
        if not seeds:
            continue
        deltas = [
            {m: 100 * (by_key[(name, s)][m] - by_key[(ablation, s)][m]) for m in PAIRED}
            for s in seeds
        ]
        for seed, delta in zip(seeds, deltas, strict=True):
            cells = " | ".join(f"{delta[m]:+.2f}" for m in PAIRED)
            lines.append(f"| {name} − {ablation} | {seed} | {cells} |")
        means = " | ".join(f"**{statistics.fmean(d[m] for d in deltas):+.2f}**" for m in PAIRED)
        ahead = sum(d["final_accuracy"] > 0 for d in deltas)
        lines.append(f"| {name} − {ablation} | mean ({ahead}/{len(seeds)} ahead) | {means} |")
    if not lines:
        return ""
    header = " | ".join(f"Δ {title} (pts)" for title in PAIRED.values())
    return "\n".join([f"| pair | seed | {header} |", "|---|---|" + "---:|" * len(PAIRED), *lines])


def write_report(
    records: list[dict[str, Any]],
    settings,
    out: Path,
    pairs: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Write ``results.csv``, ``results.md`` and the plots of ``records`` into ``out``;
    return the aggregated rows. ``pairs`` (strategy → its ablation) adds a table of
    seed-by-seed differences (:func:`paired_table`)."""
    rows = aggregate(records)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "results.csv", table.getvalue().encode())
    seeds = sorted({r["seed"] for r in records})
    names = list(dict.fromkeys(record["strategy"] for record in records))
    config = ", ".join(f"{k}={v}" for k, v in settings.config(names).items() if v is not None)
    inferred = inference_table(rows)
    diagnosed = diagnostics_table(rows)
    ctr_diagnosed = ctr_diagnostics_table(rows)
    paired = paired_table(records, pairs or {})
    text = (
        f"# {settings.benchmark}: {len(rows)} strategies, seeds {seeds}\n\n"
        f"{markdown_table(rows)}\n\n"
        "Mean ± sample standard deviation over seeds. Forgetting: mean drop from each "
        "earlier task's best accuracy to its final accuracy; BWT: mean change from right "
        "after learning a task to the end; FWT: mean change of a task's accuracy from "
        "before any training to right before it is trained; peak memory: during "
        "training; bytes added / "
        "task: growth of what the strategy stores (model state and plugin buffers) per "
        "task.\n\n"
        f"Settings: {config}.\n"
        + (f"\n## Paired by seed\n\n{paired}\n" if paired else "")
        + (f"\n## Without task labels\n\n{inferred}\n" if inferred else "")
        + (f"\n## ExSSNeT diagnostics\n\n{diagnosed}\n" if diagnosed else "")
        + (f"\n## CTR diagnostics\n\n{ctr_diagnosed}\n" if ctr_diagnosed else "")
    )
    atomic_write_bytes(out / "results.md", text.encode())
    _plot_matrices(records, rows, settings, out / "accuracy_matrices.png")
    _plot_bars(rows, settings, seeds, out / "final_accuracy_forgetting.png")
    return rows


def _mean_matrix(records: list[dict[str, Any]], name: str):
    import numpy as np

    runs = [
        np.array([row + [np.nan] * (len(r["acc_matrix"]) - len(row)) for row in r["acc_matrix"]])
        for r in records
        if r["strategy"] == name
    ]
    return 100 * np.mean(runs, axis=0)


def _plot_matrices(records, rows, settings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(rows)
    cols = min(4, k)
    lines = math.ceil(k / cols)
    n = records[0]["n_experiences"]
    size = 0.55 * n + 1.6
    fig, axes = plt.subplots(
        lines,
        cols,
        figsize=(cols * size + 1.2, lines * size + 0.8),
        squeeze=False,
        constrained_layout=True,
    )
    image = None
    for ax, row in zip(axes.flat, rows, strict=False):
        matrix = _mean_matrix(records, row["strategy"])
        image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
        if n <= 10:
            for (i, j), value in np.ndenumerate(matrix):
                if not np.isnan(value):
                    ax.text(
                        j,
                        i,
                        f"{value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value < 60 else "black",
                    )
        ax.set_title(f"{row['strategy']} ({100 * row['final_accuracy_mean']:.1f}%)", fontsize=10)
        ax.set_xlabel("evaluated task j")
        ax.set_ylabel("after training task i")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.suptitle(
        f"Accuracy (%) on task j after training task i (j > i: not trained yet): "
        f"{settings.benchmark}, mean over {rows[0]['seeds']} seed(s)"
    )
    fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy (%)")
    _save_figure(fig, path)


def _plot_bars(rows, settings, seeds, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from avalanche_ctr.experiments.strategies import STRATEGIES

    names = [row["strategy"] for row in rows]
    ours = [name in STRATEGIES and STRATEGIES[name].ours for name in names]
    fig, (left, middle, right) = plt.subplots(
        1, 3, figsize=(max(12.0, 1.35 * len(names) + 6), 4.8), layout="constrained"
    )
    for ax, metric, colors in (
        (left, "final_accuracy", ("tab:blue", "lightsteelblue")),
        (middle, "forgetting", ("tab:red", "lightsalmon")),
        (right, "fwt", ("tab:green", "palegreen")),
    ):
        means = [100 * row[f"{metric}_mean"] for row in rows]
        stds = [100 * row[f"{metric}_std"] for row in rows]
        bars = ax.bar(
            names,
            means,
            yerr=stds,
            capsize=3,
            color=[colors[0] if o else colors[1] for o in ours],
            edgecolor="black",
            linewidth=0.5,
        )
        ax.bar_label(bars, labels=[f"{m:.1f}" for m in means], fontsize=7, padding=2)
        ax.set_title(METRICS[metric][0])
        ax.set_ylabel("%" if metric == "final_accuracy" else "percentage points")
        ax.tick_params(axis="x", rotation=45)
        ax.grid(axis="y", alpha=0.3)
        top = max(m + d for m, d in zip(means, stds, strict=True))
        bottom = min(m - d for m, d in zip(means, stds, strict=True))
        ax.set_ylim(min(0.0, bottom * 1.15), max(1.0, top) * 1.15)
    left.set_ylim(0, 105)
    fig.legend(
        handles=[
            Patch(facecolor="dimgray", edgecolor="black", label="avalanche-ctr (dark)"),
            Patch(facecolor="lightgray", edgecolor="black", label="Avalanche baseline (light)"),
        ],
        loc="outside lower center",
        ncols=2,
        fontsize=8,
    )
    fig.suptitle(
        f"{settings.benchmark}: mean ± std over seeds {seeds} "
        "(higher accuracy and transfer, lower forgetting is better)"
    )
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG to ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, image.getbuffer())
