"""Ways of computing the KSM's similarity max-pooling that the code does not take, timed
beside the way it does (issue 29).

``benchmarks/ctr_ksm_cost.py`` times the KSM's parts as implemented. This script times
the alternatives that issue 29's measurements pointed to, at MiniLM's sizes with task
``--tasks`` in training (the package's default sizes: 3 kernel sizes x 32 channels over
capsules of dimension 3, so a source's windows are 15 wide and its product 96 wide), each
against the implementation, median of ``--repeats`` calls after 3 warm-ups, one thread:

* the similarity **maxima and first maximising tokens** over the tokens, for every source
  and output (what the max-pooling's backward pass needs), on the capsules and kernels
  that ``KnowledgeSharingModule.similarity_inputs`` gives: the implementation
  (``_MaxOverTokens.maxima``, with and without the tokens), against the same window
  products one source at a time with other ways of finding the first maximising tokens
  (``max`` with indices; ``eq`` or ``>=``, or ``where``, with a descending ramp), and
  against one grouped ``conv1d`` (a group per source) with ``max_pool1d`` with indices
  (PyTorch's own kernels);
* with ``--compile``, **torch.compile** of the whole KSM forward (``KnowledgeSharingModule
  .forward``, inductor, static shapes), forward and backward, with its compile time.

Usage::

    python benchmarks/ctr_ksm_alternatives.py --tasks 19 --compile
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from ctr_ksm_cost import ksm_in_training, median_ms
from torch import Tensor

from avalanche_ctr.ctr.routing import KnowledgeSharingModule, _MaxOverTokens


def maxima_variants(x: Tensor, kernels: Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds of the similarity maxima over the tokens and their first maximising
    tokens, for the padded capsules ``x`` (n, B, L + K - 1, c) under ``kernels``
    (n, c · K, O) (:meth:`KnowledgeSharingModule.similarity_inputs`): the implementation
    (``_MaxOverTokens.maxima``, with and without the tokens), the same window products
    one source at a time with other ways of finding the first maximising tokens, and one
    grouped ``conv1d`` with ``max_pool1d``; checks that the grouped convolution gives the
    implementation's maxima and tokens."""
    n, batch, padded, channels = x.shape
    outputs = kernels.shape[-1]
    windows = _MaxOverTokens.windows(x, kernels)
    length = windows.shape[2]
    ramp = torch.arange(length, 0, -1, dtype=x.dtype)[:, None]
    wide_ramp = ramp.expand(length, outputs).contiguous()

    def per_source(first_tokens: Callable[[Tensor], object]) -> Callable[[], None]:
        def run() -> None:
            for i in range(n):
                y = torch.bmm(windows[i : i + 1].flatten(1, 2), kernels[i : i + 1])
                first_tokens(y.view(1, batch, length, outputs))

        return run

    def grouped() -> tuple[Tensor, Tensor]:
        inputs = x.permute(1, 0, 3, 2).reshape(batch, n * channels, padded)
        weight = kernels.reshape(n, channels, -1, outputs).permute(0, 3, 1, 2)
        y = F.conv1d(inputs, weight.reshape(n * outputs, channels, -1), groups=n)
        values, index = F.max_pool1d(y, length, return_indices=True)
        return tuple(t.view(batch, n, outputs).transpose(0, 1) for t in (values, index))

    mine, my_index = _MaxOverTokens.maxima(windows, kernels, None, first=True)
    theirs, their_index = grouped()
    if not torch.allclose(mine, theirs, atol=1e-4) or not torch.equal(my_index, their_index):
        raise RuntimeError("the grouped convolution does not give the implementation's maxima")

    def top(y: Tensor) -> Tensor:
        return y.amax(dim=2, keepdim=True)

    variants = {
        "implemented: window products, maxima and first tokens": lambda: _MaxOverTokens.maxima(
            windows, kernels, None, first=True
        ),
        "implemented, maxima alone (no first tokens)": lambda: _MaxOverTokens.maxima(
            windows, kernels, None, first=False
        ),
        "window products, max with indices": per_source(lambda y: y.max(dim=2)),
        "window products, amax, eq x ramp, amax": per_source(
            lambda y: torch.amax(torch.eq(y, top(y)) * ramp, dim=2)
        ),
        "window products, amax, >= x ramp, amax": per_source(
            lambda y: torch.amax((y >= top(y)) * wide_ramp, dim=2)
        ),
        "window products, amax, where(eq, ramp, 0), amax": per_source(
            lambda y: torch.amax(torch.where(y == top(y), ramp, 0.0), dim=2)
        ),
        "grouped conv1d (a group per source), max_pool1d with indices": grouped,
    }
    return {name: median_ms(run, repeats) for name, run in variants.items()}


def compiled_ksm(
    ksm: KnowledgeSharingModule, h: Tensor, task: int, repeats: int
) -> dict[str, float]:
    """Milliseconds of the KSM's forward and backward, eager and under torch.compile, and
    the compile's seconds (its first call)."""
    generator = torch.Generator().manual_seed(0)
    compiled = torch.compile(ksm.forward, dynamic=False)

    def step(forward) -> None:
        transfer, _ = forward(h, None, task, 50.0, generator)
        transfer.sum().backward()

    start = time.perf_counter()
    step(compiled)
    compile_s = time.perf_counter() - start
    return {
        "eager KSM forward + backward": median_ms(lambda: step(ksm.forward), repeats),
        "compiled KSM forward + backward": median_ms(lambda: step(compiled), repeats),
        "compile time, first call (s, not ms)": compile_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=19, help="the task in training (1-based)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=384, help="MiniLM's width")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ksm, h = ksm_in_training(args.tasks, args.hidden, args)
    with torch.no_grad():
        capsules = ksm.task_capsules(h, args.tasks)
        routes = torch.stack(list(ksm.route_weights))
        x, kernels, _ = ksm.similarity_inputs(ksm.convs_source, capsules, routes, None)
    results = maxima_variants(x, kernels, args.repeats)
    if args.compile:
        results.update(compiled_ksm(ksm, h, args.tasks - 1, args.repeats))
    shape = f"batch {args.batch} x {args.length} tokens, width {args.hidden}"
    print(f"task {args.tasks}, {shape}, 1 thread")
    print("| way | ms |")
    print("|---|---:|")
    for name, value in results.items():
        print(f"| {name} | {value:.2f} |")


if __name__ == "__main__":
    main()
