"""What the check for a non-finite loss or gradient costs per training step (issue 31).

ExSSNeT's, SSNeT's, SupSup's and CTR's plugins call
:func:`avalanche_ctr.finite.check_finite_step` after every backward pass: one fused
∞-norm over the gradients the optimizer updates and one host synchronisation. This
script trains two systems with the strategies as they are and times, in the same
iterations, the whole training iteration (``IterationTimer``) and the check alone (the
plugins' reference to ``check_finite_step`` is wrapped by a timer that calls it):

* ``exssnet-mlp``: ExSSNeT with Avalanche's ``MTSimpleMLP`` (256 hidden units) on
  Split-Digits, mini-batches of 32, one mask and one weight epoch per task; a tiny step,
  so the check's share is as large as it gets;
* ``ctr-minilm``: CTR on the packaged all-MiniLM-L6-v2, mini-batches of ``--batch``
  random token ids of ``--length`` tokens (the step does not depend on what they say,
  see ``benchmarks/ctr_step_time.py``), ``--steps`` iterations per task.

Each system learns two tasks; the medians over the second task's iterations after its
first are printed (the second task trains with the protection of the first). Usage::

    python benchmarks/finite_check_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.models import MTSimpleMLP
from avalanche.training.plugins import EvaluationPlugin

import avalanche_ctr.ctr.lifecycle
import avalanche_ctr.exssnet.lifecycle
from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.measure import IterationTimer
from avalanche_ctr.finite import check_finite_step
from avalanche_ctr.models import CTRModel
from avalanche_ctr.training import CTR, ExSSNeT


class TimedCheck:
    """``check_finite_step`` with the wall time of each call kept in ``times`` and the
    number of gradients it read in ``n_grads``."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.n_grads = 0

    def __call__(self, strategy) -> None:
        start = time.perf_counter()
        check_finite_step(strategy)
        self.times.append(time.perf_counter() - start)
        groups = strategy.optimizer.param_groups
        self.n_grads = sum(p.grad is not None for g in groups for p in g["params"])


def exssnet_mlp(args):
    torch.manual_seed(args.seed)
    model = MTSimpleMLP(input_size=64, hidden_size=256)
    timer = IterationTimer()
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        density=0.1,
        mask_epochs=1,
        weight_epochs=1,
        train_mb_size=32,
        plugins=[timer],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    return strategy, timer, SplitDigits(5, seed=args.seed).train_stream[:2]


def ctr_minilm(args):
    generator = torch.Generator().manual_seed(args.seed)
    tasks = []
    for _ in range(2):
        shape = (args.batch * args.steps, args.length)
        ids = torch.randint(1000, 30000, shape, generator=generator)
        x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)
        tasks.append((x, torch.randint(0, 2, (len(ids),), generator=generator)))
    stream = tensors_benchmark(train_tensors=tasks, test_tensors=tasks[:1], task_labels=[0, 1])
    torch.manual_seed(args.seed)
    model = CTRModel()
    timer = IterationTimer()
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        train_mb_size=args.batch,
        train_epochs=1,
        plugins=[timer],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    return strategy, timer, stream.train_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="CTR iterations per task")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| system | gradients checked | step (ms) | check (ms) | check / step |")
    print("|---|---:|---:|---:|---:|")
    for name, build in (("exssnet-mlp", exssnet_mlp), ("ctr-minilm", ctr_minilm)):
        strategy, timer, experiences = build(args)
        check = TimedCheck()
        for module in (avalanche_ctr.exssnet.lifecycle, avalanche_ctr.ctr.lifecycle):
            module.check_finite_step = check
        for experience in experiences:
            check.times.clear()
            strategy.train(experience)
        step = statistics.median(timer.times[-1][1:])
        spent = statistics.median(check.times[1:])
        print(
            f"| {name} | {check.n_grads} | {1000 * step:.2f} | {1000 * spent:.3f} "
            f"| {100 * spent / step:.2f} % |"
        )


if __name__ == "__main__":
    main()
