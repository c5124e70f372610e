"""Score the model of a ``compare`` checkpoint on its test stream with the current code.

Reads the run's settings from the checkpoint (its ``meta`` identity), rebuilds the
benchmark and the strategy exactly as ``compare`` did, loads the trained model and
evaluates every task with Avalanche's ``strategy.eval``, then prints the mean accuracy
and macro-F1 over the tasks (the runner's final accuracy and macro-F1). It re-scores runs
made before a fix to evaluation without training them again (``benchmarks/RESULTS.md``,
"Padded logits"). Usage::

    python benchmarks/rescore_checkpoint.py runs/asc/checkpoints/ctr-seed0.pt \\
        --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import statistics

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.checkpoint import load_model, read_checkpoint
from avalanche_ctr.experiments.runner import Settings, build_strategy, experience_metric
from avalanche_ctr.experiments.strategies import all_options, get_strategy
from avalanche_ctr.metrics import macro_f1_metrics


def rebuild(checkpoint: str, data_root: str | None = None):
    """The run of ``checkpoint`` rebuilt as ``compare`` built it, with its trained model
    loaded: ``(identity, benchmark, strategy)``; ``data_root`` replaces the run's own."""
    identity = read_checkpoint(checkpoint)["meta"]["identity"]
    flat = dict(identity["settings"])
    if data_root is not None:
        flat["data_root"] = data_root
    flat.pop("pad_logit", None)  # recorded by runs made after the padding fix, not a setting
    options = {name: flat.pop(name) for name in list(flat) if name in all_options()}
    settings = Settings(**flat, options=options)
    record = get_strategy(identity["strategy"])
    benchmark = settings.spec.build(identity["seed"], settings)
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True), *macro_f1_metrics(experience=True), loggers=[]
    )
    strategy = build_strategy(settings, record, plugins=[], evaluator=evaluator)
    load_model(checkpoint, strategy.model)
    return identity, benchmark, strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint compare wrote (out/checkpoints/*.pt)")
    parser.add_argument("--data-root", default=None, help="instead of the run's own")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    identity, benchmark, strategy = rebuild(args.checkpoint, args.data_root)
    metrics = strategy.eval(benchmark.test_stream)
    n = len(benchmark.test_stream)
    accuracy = [experience_metric(metrics, "Top1_Acc_Exp", j) for j in range(n)]
    f1 = [experience_metric(metrics, "MacroF1_Exp", j) for j in range(n)]
    print(
        f"{identity['strategy']} seed {identity['seed']}, {n} tasks: accuracy "
        f"{100 * statistics.fmean(accuracy):.2f} %, macro-F1 {100 * statistics.fmean(f1):.2f} %"
    )


if __name__ == "__main__":
    main()
