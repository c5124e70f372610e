"""Ways of computing the KSM's similarity max-pooling that the code does not take, timed
beside the way it does (issue 29).

``benchmarks/ctr_ksm_cost.py`` times the KSM's parts as implemented. This script times
the alternatives that issue 29's measurements pointed to, at MiniLM's sizes with task
``--tasks`` in training (the package's default sizes: 3 kernel sizes x 32 channels over
capsules of dimension 3, so a source's windows are 15 wide and its product 96 wide), each
against the implementation, median of ``--repeats`` calls after 3 warm-ups, one thread:

* **first maximising token** over the tokens, for every source and output, given the
  windows' products (what the backward pass needs): the implementation's float steps
  (``sub``, ``sign``, ``add``, times a descending ramp, ``amax``), against ``max`` with
  indices, ``argmax``-free comparisons (``eq`` or ``>=`` times the ramp, ``where``);
* **grouped convolution**: every source's similarity convolution as one ``conv1d`` with
  a group per source, then ``max_pool1d`` with indices (PyTorch's own kernels), against
  the implementation's per-source window product and float steps
  (``_MaxOverTokens.maxima``);
* with ``--compile``, **torch.compile** of the whole KSM forward (``KnowledgeSharingModule
  .forward``, inductor, static shapes), forward and backward, with its compile time.

Usage::

    python benchmarks/ctr_ksm_alternatives.py --tasks 19 --compile
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from ctr_ksm_cost import median_ms
from torch import Tensor

from avalanche_ctr.ctr.cl_plugin import CLPluginConfig
from avalanche_ctr.ctr.routing import KnowledgeSharingModule, _MaxOverTokens


def first_maximum_variants(products: Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds of each way of finding every source's first maximising token over the
    token axis (2) of ``products`` (n, B, L, O), one source at a time, maxima included."""
    length = products.shape[2]
    ramp = torch.arange(length, 0, -1, dtype=products.dtype)[:, None]
    wide_ramp = ramp.expand(length, products.shape[-1]).contiguous()

    def implemented() -> None:
        for y in products.split(1):
            y = y.clone()  # the implementation works in place on its own product
            top = y.amax(dim=2, keepdim=True)
            torch.amax(y.sub_(top).sign_().add_(1) * ramp, dim=2)

    def copy_and_maxima() -> None:
        for y in products.split(1):
            y.clone().amax(dim=2, keepdim=True)

    def max_with_indices() -> None:
        for y in products.split(1):
            y.max(dim=2)

    def equal_times_ramp() -> None:
        for y in products.split(1):
            torch.amax(torch.eq(y, y.amax(dim=2, keepdim=True)) * ramp, dim=2)

    def at_least_times_ramp() -> None:
        for y in products.split(1):
            torch.amax((y >= y.amax(dim=2, keepdim=True)) * wide_ramp, dim=2)

    def where_ramp() -> None:
        for y in products.split(1):
            torch.amax(torch.where(y == y.amax(dim=2, keepdim=True), ramp, 0.0), dim=2)

    variants = {
        "implemented: copy, amax, sub, sign, add, x ramp, amax": implemented,
        "(copy and amax alone: the maxima without the tokens)": copy_and_maxima,
        "max with indices": max_with_indices,
        "eq x ramp, amax": equal_times_ramp,
        ">= x ramp, amax": at_least_times_ramp,
        "where(eq, ramp, 0), amax": where_ramp,
    }
    return {name: median_ms(run, repeats) for name, run in variants.items()}


def grouped_convolution(x: Tensor, kernels: Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds of the similarity maxima and first maximising tokens of the padded
    capsules ``x`` (n, B, L + K - 1, c) under ``kernels`` (n, c · K, O): the
    implementation's, and one grouped ``conv1d`` with ``max_pool1d``; checks that both
    give the same maxima and tokens."""
    n, batch, padded, channels = x.shape
    size, outputs = kernels.shape[1:]
    length = padded - size // channels + 1
    weight = (
        kernels.view(n, channels, -1, outputs)
        .permute(0, 3, 1, 2)
        .reshape(n * outputs, channels, -1)
    )

    def implemented():
        windows = _MaxOverTokens.windows(x, kernels)
        return _MaxOverTokens.maxima(windows, kernels, None, first=True)

    def grouped():
        inputs = x.permute(1, 0, 3, 2).reshape(batch, n * channels, padded)
        y = F.conv1d(inputs, weight, groups=n)
        values, index = F.max_pool1d(y, length, return_indices=True)
        return values.view(batch, n, outputs).transpose(0, 1), index.view(
            batch, n, outputs
        ).transpose(0, 1)

    (mine, my_index), (theirs, their_index) = implemented(), grouped()
    if not torch.allclose(mine, theirs, atol=1e-4) or not torch.equal(my_index, their_index):
        raise RuntimeError("the grouped convolution does not give the implementation's maxima")
    return {
        "implemented: window products, amax, first token": median_ms(implemented, repeats),
        "grouped conv1d, max_pool1d with indices": median_ms(grouped, repeats),
    }


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
    torch.manual_seed(args.seed)
    config = CLPluginConfig()
    ksm = KnowledgeSharingModule(
        args.hidden, config.capsule_hidden, config.capsule_dim, config.n_transfer, config.channels
    )
    for _ in range(args.tasks):
        ksm.add_task()
    ksm.requires_grad_(False)
    ksm.set_trainable(args.tasks - 1, owns_sources=True)
    ksm.train()
    h = torch.randn(args.batch, args.length, args.hidden, requires_grad=True)
    with torch.no_grad():
        capsules = ksm.task_capsules(h, args.tasks)
        routes = torch.stack(list(ksm.route_weights))
        weight, _ = ksm._merged_kernel(ksm.convs_source)
        weight = weight.unflatten(1, (ksm.n_transfer, ksm.capsule_dim))
        kernels = torch.einsum("ojdk,ijdc->icko", weight, routes).flatten(1, 2).contiguous()
        size = weight.shape[-1]
        x = F.pad(capsules.permute(2, 0, 1, 3), (0, 0, size // 2, size - 1 - size // 2))
        x = x.contiguous()
        windows = _MaxOverTokens.windows(x, kernels)
        products = torch.bmm(windows.flatten(1, 2), kernels).view(*windows.shape[:3], -1)
    results = {
        **first_maximum_variants(products, args.repeats),
        **grouped_convolution(x, kernels, args.repeats),
    }
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
