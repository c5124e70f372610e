"""CTR's training step against its ablation without KSM (c), as tasks accumulate (issue 12).

CTR's routing reads every learned task's capsule, so its step grows with the number of
tasks; (c)'s does not. This script times one training iteration (forward, backward,
optimizer step, HAT's gradient compensation and protection: everything the ``CTR``
strategy does per mini-batch) of both systems while they learn task 1, 5, 10, ... (the
tasks of ``--timed``), on the packaged all-MiniLM-L6-v2 with mini-batches of random
tokens of DSC's shape (``--batch`` texts of ``--length`` tokens, no padding): the step's
cost does not depend on what the tokens say, and real mini-batches, cut to their longest
text, cost at most this. Both systems run in this one process, task by task in turn,
with ``--threads`` threads. A timed task is trained ``--rounds`` times, each round CTR's
``--steps`` iterations and then (c)'s, and the median of a round's iterations after
the first is its figure; the other tasks train one iteration. The machine's speed drifts
by 10-30 % from one minute to the next (a shared VM), so the ratio is taken within each
round and its median over the rounds printed. A second table splits each system's
iteration into its phases (:class:`PhaseTimer`: forward, backward, update, the rest),
median per round, then median over the rounds, and the difference CTR - (c). Run it on
an otherwise idle machine.

Usage::

    python benchmarks/ctr_step_time.py --tasks 19 --timed 1,19
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.experiments.measure import IterationTimer
from avalanche_ctr.models import CTRModel
from avalanche_ctr.text_encoder import load_encoder
from avalanche_ctr.training import CTR


def random_stream(n_tasks: int, n_samples: int | list[int], length: int, vocab: int, seed: int):
    """``n_tasks`` binary tasks of random token ids in the ``(n, 3, length)`` text layout,
    of ``n_samples`` each (or ``n_samples[i]`` for task ``i``)."""
    sizes = [n_samples] * n_tasks if isinstance(n_samples, int) else n_samples
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for size in sizes:
        ids = torch.randint(1000, vocab, (size, length), generator=generator)
        x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)
        tasks.append((x, torch.randint(0, 2, (size,), generator=generator)))
    return tensors_benchmark(
        train_tensors=tasks, test_tensors=tasks[:1], task_labels=list(range(n_tasks))
    )


PHASES = ("forward", "backward", "update", "rest")
"""The parts of a training iteration that :class:`PhaseTimer` times."""


class PhaseTimer(SupervisedPlugin):
    """Wall time (s) of each training iteration's phases, per experience (``times[-1]``
    holds one ``{phase: seconds}`` per iteration): ``forward`` (the model's forward pass),
    ``backward`` (the loss's backward pass with the plugins' ``before_backward`` /
    ``after_backward`` work that comes after this plugin's: CTR's mask regulariser,
    finiteness check, gradient masking and compensation), ``update`` (the optimizer step
    with the plugins' ``after_update`` work: CTR's restores and clamps) and ``rest`` (the
    iteration's remainder: zeroing the gradients, the loss, the other callbacks)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[list[dict[str, float]]] = []
        self._marks: dict[str, float] = {}

    def _mark(self, name: str) -> None:
        self._marks[name] = time.perf_counter()

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.times.append([])

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._mark("start")

    def before_forward(self, strategy, **kwargs) -> None:
        self._mark("before_forward")

    def after_forward(self, strategy, **kwargs) -> None:
        self._mark("after_forward")

    def before_backward(self, strategy, **kwargs) -> None:
        self._mark("before_backward")

    def before_update(self, strategy, **kwargs) -> None:
        self._mark("before_update")

    def after_training_iteration(self, strategy, **kwargs) -> None:
        marks = {**self._marks, "end": time.perf_counter()}
        phases = {
            "forward": marks["after_forward"] - marks["before_forward"],
            "backward": marks["before_update"] - marks["before_backward"],
            "update": marks["end"] - marks["before_update"],
        }
        phases["rest"] = marks["end"] - marks["start"] - sum(phases.values())
        self.times[-1].append(phases)


def timed_strategy(sharing: bool, args, *, device="cpu", plugins=()) -> tuple[CTR, IterationTimer]:
    """CTR (``sharing``) or (c), initialised from ``args.seed``, with an iteration timer
    and, first among the plugins, a :class:`PhaseTimer` (``strategy.plugins[0]``)."""
    torch.manual_seed(args.seed)
    model = CTRModel(knowledge_sharing=sharing)
    timer = IterationTimer()
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=args.batch,
        train_epochs=1,
        device=device,
        plugins=[PhaseTimer(), *plugins, timer],
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


def phase_medians(phase_timer: PhaseTimer) -> dict[str, float]:
    """Each phase's median (s) over the last experience's iterations after the first."""
    iterations = phase_timer.times[-1][1:]
    return {phase: statistics.median(i[phase] for i in iterations) for phase in PHASES}


def paired_step_times(
    stream, timed: set[int], args
) -> tuple[dict[int, list[tuple[float, float]]], dict[int, list[tuple[dict, dict]]]]:
    """CTR's and (c)'s median training-iteration times (s) at the ``timed`` tasks, in
    ``args.rounds`` rounds per timed task, and their phases' medians (:func:`phase_medians`)
    per round: the two systems learn the stream task by task in turn, and at a timed task
    each round trains CTR on it, then (c) (a task trained again costs what it cost the
    first time: the same sources, the same trainable parts), so that the two figures of a
    round see the same machine load."""
    systems = [timed_strategy(sharing, args) for sharing in (True, False)]
    rounds: dict[int, list[tuple[float, float]]] = {}
    phases: dict[int, list[tuple[dict, dict]]] = {}
    for task, experience in enumerate(stream.train_stream, start=1):
        if task not in timed:
            for strategy, _ in systems:
                strategy.train(experience)
            continue
        for _ in range(args.rounds):
            for strategy, _ in systems:
                strategy.train(experience)
            ctr, ablation = (statistics.median(timer.times[-1][1:]) for _, timer in systems)
            rounds.setdefault(task, []).append((ctr, ablation))
            split = tuple(phase_medians(strategy.plugins[0]) for strategy, _ in systems)
            phases.setdefault(task, []).append(split)
    return rounds, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=19)
    parser.add_argument("--timed", default="1,19", help="tasks (1-based) to time")
    parser.add_argument(
        "--steps", type=int, default=6, help="training iterations of a timed task per round"
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds per timed task")
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
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(args.threads)
    vocab = load_encoder(None).config.vocab_size
    # untimed tasks train one mini-batch: what a later task costs depends on how many
    # tasks were learned, not on how long
    sizes = [args.batch * (args.steps if t in timed else 1) for t in range(1, args.tasks + 1)]
    stream = random_stream(args.tasks, sizes, args.length, vocab, args.seed)
    rounds, phases = paired_step_times(stream, timed, args)
    print(f"batch {args.batch} x {args.length} tokens, {args.threads} thread(s), MiniLM")
    print("| task | CTR step (s) | (c) step (s) | CTR / (c) per round | CTR / (c), median |")
    print("|---:|---:|---:|---|---:|")
    for task in sorted(timed):
        ctr = statistics.median(c for c, _ in rounds[task])
        ablation = statistics.median(a for _, a in rounds[task])
        ratios = [c / a for c, a in rounds[task]]
        listed = ", ".join(f"{r:.3f}" for r in ratios)
        median = statistics.median(ratios)
        print(f"| {task} | {ctr:.3f} | {ablation:.3f} | {listed} | {median:.3f} |")
    print()
    print("| task | phase | CTR (ms) | (c) (ms) | CTR - (c) (ms) |")
    print("|---:|---|---:|---:|---:|")
    for task in sorted(timed):
        for phase in PHASES:
            ctr = 1000 * statistics.median(c[phase] for c, _ in phases[task])
            ablation = 1000 * statistics.median(a[phase] for _, a in phases[task])
            print(f"| {task} | {phase} | {ctr:.1f} | {ablation:.1f} | {ctr - ablation:+.1f} |")


if __name__ == "__main__":
    main()
