"""CTR's training step against its ablation without KSM (c), as tasks accumulate (issue 12).

CTR's routing reads every learned task's capsule, so its step grows with the number of
tasks; (c)'s does not. This script times one training iteration (forward, backward,
optimizer step, HAT's gradient compensation and protection: everything the ``CTR``
strategy does per mini-batch) of both systems while they learn task 1, 5, 10, ... (the
tasks of ``--timed``), on the packaged all-MiniLM-L6-v2 with mini-batches of random
tokens of DSC's shape (``--batch`` texts of ``--length`` tokens, no padding): the step's
cost does not depend on what the tokens say, and real mini-batches, cut to their longest
text, cost at most this. Each task trains ``--steps`` iterations; a timed task's
iterations after its first are timed and their median printed. Both systems run in this
one process, task by task in turn (CTR's task k, then (c)'s task k), with ``--threads``
threads, so run it on an otherwise idle machine.

Usage::

    python benchmarks/ctr_step_time.py --tasks 19 --timed 1,5,10,19
"""

from __future__ import annotations

import argparse
import statistics

import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.experiments.measure import IterationTimer
from avalanche_ctr.models import CTRModel
from avalanche_ctr.text_encoder import load_encoder
from avalanche_ctr.training import CTR


def random_stream(n_tasks: int, n_samples: int, length: int, vocab: int, seed: int):
    """``n_tasks`` binary tasks of random token ids in the ``(n, 3, length)`` text layout."""
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(n_tasks):
        ids = torch.randint(1000, vocab, (n_samples, length), generator=generator)
        x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)
        tasks.append((x, torch.randint(0, 2, (n_samples,), generator=generator)))
    return tensors_benchmark(
        train_tensors=tasks, test_tensors=tasks[:1], task_labels=list(range(n_tasks))
    )


def timed_strategy(sharing: bool, args, *, device="cpu", plugins=()) -> tuple[CTR, IterationTimer]:
    """CTR (``sharing``) or (c), initialised from ``args.seed``, with an iteration timer."""
    torch.manual_seed(args.seed)
    model = CTRModel(knowledge_sharing=sharing)
    timer = IterationTimer()
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=args.batch,
        train_epochs=1,
        device=device,
        plugins=[*plugins, timer],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    return strategy, timer


def step_times(
    sharing: bool, stream, timed: set[int], args, *, device="cpu", plugins=()
) -> dict[int, float]:
    """Median training-iteration time (s) of ``timed`` tasks (1-based) for CTR or (c),
    on ``device``, with further ``plugins`` (e.g. mixed precision)."""
    strategy, timer = timed_strategy(sharing, args, device=device, plugins=plugins)
    medians = {}
    for task, experience in enumerate(stream.train_stream, start=1):
        strategy.train(experience)
        if task in timed:
            medians[task] = statistics.median(timer.times[-1][1:])
    return medians


def paired_step_times(stream, timed: set[int], args) -> tuple[dict[int, float], dict[int, float]]:
    """Median training-iteration times (s) of CTR and (c) at the ``timed`` tasks, the two
    trained task by task in turn (CTR's task ``k``, then (c)'s), so that both see the same
    machine load at each task."""
    systems = [timed_strategy(sharing, args) for sharing in (True, False)]
    medians: tuple[dict[int, float], dict[int, float]] = ({}, {})
    for task, experience in enumerate(stream.train_stream, start=1):
        for (strategy, timer), found in zip(systems, medians, strict=True):
            strategy.train(experience)
            if task in timed:
                found[task] = statistics.median(timer.times[-1][1:])
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=19)
    parser.add_argument("--timed", default="1,5,10,19", help="tasks (1-based) to time")
    parser.add_argument("--steps", type=int, default=6, help="training iterations per task")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    timed = {int(t) for t in args.timed.split(",")}
    if not timed <= set(range(1, args.tasks + 1)):
        parser.error(f"--timed tasks must lie in 1..{args.tasks}, got {sorted(timed)}")
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first iteration of a task is not timed)")
    torch.set_num_threads(args.threads)
    vocab = load_encoder(None).config.vocab_size
    stream = random_stream(args.tasks, args.steps * args.batch, args.length, vocab, args.seed)
    ctr, ablation = paired_step_times(stream, timed, args)
    print(f"batch {args.batch} x {args.length} tokens, {args.threads} thread(s), MiniLM")
    print("| task | CTR step (s) | (c) step (s) | CTR / (c) |")
    print("|---:|---:|---:|---:|")
    for task in sorted(timed):
        ratio = ctr[task] / ablation[task]
        print(f"| {task} | {ctr[task]:.3f} | {ablation[task]:.3f} | {ratio:.2f} |")
    first, last = min(timed), max(timed)
    print(
        f"CTR task {last} / task {first}: {ctr[last] / ctr[first]:.2f}; (c): "
        f"{ablation[last] / ablation[first]:.2f}"
    )


if __name__ == "__main__":
    main()
