"""Where the time of CTR's Knowledge Sharing Module goes as tasks accumulate (issue 12).

``benchmarks/ctr_step_time.py`` shows CTR's training step growing with the number of tasks
learned while its ablation without KSM (c) stays flat. This script splits one CL-plugin's
KSM (at all-MiniLM-L6-v2's width, the package's default sizes) into its parts and times
each part's forward and backward pass, with the last of ``--tasks`` tasks in training and
the hidden states requiring a gradient (in the model, every CL-plugin's input but the
first one's depends on trainable CL-plugins below it):

* ``ksm``: the whole module (``KnowledgeSharingModule.forward``, then backward);
* ``capsules``: the task capsule layer alone (Sec. 3.2.1);
* ``similarity``: the similarity features over every source alone (Sec. 3.2.2),
  given the capsules;
* ``frozen first layers``: the bare matrix products that the earlier tasks' capsules
  need whatever the implementation, their first layers' forward pass and the gradient
  to their input (one product each way);
* ``similarity forward``: the similarity features' forward pass alone (no autograd):
  every source's convolution at every token and the max over the tokens, which no
  implementation of the max-pooling can skip.

The last two are work the paper's formulation needs on every training step; the script
prints each part per CL-plugin and multiplied by the 12 CL-plugins of MiniLM (two per
layer), i.e. per training step. Run it on an otherwise idle machine::

    python benchmarks/ctr_ksm_cost.py --tasks 1,5,10,19
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from avalanche_ctr.ctr.cl_plugin import CLPluginConfig
from avalanche_ctr.ctr.routing import KnowledgeSharingModule
from avalanche_ctr.text_encoder import load_encoder


def median_ms(run: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``run`` in milliseconds over ``repeats`` calls after 3 warm-ups."""
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def ksm_in_training(
    n_tasks: int, hidden: int, args: argparse.Namespace
) -> tuple[KnowledgeSharingModule, torch.Tensor]:
    """A KSM of width ``hidden`` with :class:`CLPluginConfig`'s default sizes, task
    ``n_tasks`` (1-based) in training and the earlier ones frozen, and hidden states
    ``(args.batch, args.length, hidden)`` that require a gradient, drawn from
    ``args.seed``."""
    torch.manual_seed(args.seed)
    config = CLPluginConfig()
    ksm = KnowledgeSharingModule(
        hidden, config.capsule_hidden, config.capsule_dim, config.n_transfer, config.channels
    )
    for _ in range(n_tasks):
        ksm.add_task()
    ksm.requires_grad_(False)
    ksm.set_trainable(n_tasks - 1, owns_sources=True)
    ksm.train()
    return ksm, torch.randn(args.batch, args.length, hidden, requires_grad=True)


def part_times(n_tasks: int, hidden: int, args: argparse.Namespace) -> dict[str, float]:
    """Per-call milliseconds of each part with task ``n_tasks`` (1-based) in training, for
    a CL-plugin of width ``hidden`` with :class:`CLPluginConfig`'s default sizes."""
    ksm, h = ksm_in_training(n_tasks, hidden, args)
    generator = torch.Generator().manual_seed(args.seed)
    routes = torch.stack(list(ksm.route_weights))
    capsules = ksm.task_capsules(h, n_tasks).detach().requires_grad_(True)
    frozen = [c.fc1 for c in ksm.task_capsules.capsules[: n_tasks - 1]]

    def whole() -> None:
        transfer, _ = ksm(h, None, n_tasks - 1, 50.0, generator)
        transfer.sum().backward()

    def capsule_layer() -> None:
        ksm.task_capsules(h, n_tasks).sum().backward()

    def similarity() -> None:
        ksm.similarity_features(ksm.convs_source, capsules, routes, None).sum().backward()

    def frozen_first_layers() -> None:
        if not frozen:
            return
        weight = torch.cat([fc.weight for fc in frozen])
        out = F.linear(h, weight, torch.cat([fc.bias for fc in frozen]))
        torch.autograd.grad(out, h, torch.ones_like(out))

    def similarity_forward() -> None:
        with torch.no_grad():
            ksm.similarity_features(ksm.convs_source, capsules, routes, None)

    parts = {
        "ksm": whole,
        "capsules": capsule_layer,
        "similarity": similarity,
        "frozen first layers": frozen_first_layers,
        "similarity forward": similarity_forward,
    }
    return {name: median_ms(run, args.repeats) for name, run in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="1,5,10,19", help="tasks (1-based) to time")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tasks = [int(t) for t in args.tasks.split(",")]
    if min(tasks) < 1:
        parser.error(f"--tasks must be 1-based task numbers, got {tasks}")
    torch.set_num_threads(args.threads)
    encoder = load_encoder(None).config
    plugins = 2 * encoder.num_hidden_layers  # after attention and feed-forward
    times = {task: part_times(task, encoder.hidden_size, args) for task in tasks}
    names = list(next(iter(times.values())))
    print(
        f"one CL-plugin at width {encoder.hidden_size}, batch {args.batch} x {args.length} "
        f"tokens, {args.threads} thread(s); ms per plugin (s per step = x {plugins})"
    )
    print("| task | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for task in tasks:
        cells = [f"{times[task][n]:.1f} ({plugins * times[task][n] / 1000:.2f} s)" for n in names]
        print(f"| {task} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
