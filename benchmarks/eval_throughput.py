"""Evaluation throughput of a trained supermask model against the dense model of the
same shape.

A finished task's masked weights are cached, so evaluating it should cost a dense
forward pass. This script converts two models (the multi-head MLP of
``exssnet_vs_supsup.py`` and a small multi-head CNN with BatchNorm), stores random
masks for 5 tasks, and times evaluation of the last task against the unconverted
model, alternating the two and keeping each one's fastest pass.

Usage: ``python benchmarks/eval_throughput.py [--repeats 30] [--threads 2]``
"""

from __future__ import annotations

import argparse
import time

import torch
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import Tensor, nn

from avalanche_ctr.exssnet import convert_to_supermask


class MLP(MultiTaskModule):
    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.classifier = MultiHeadClassifier(hidden)

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        return self.classifier(self.features(x), task_label)


class CNN(MultiTaskModule):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = MultiHeadClassifier(64)

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        return self.classifier(self.features(x), task_label)


@torch.no_grad()
def fastest_pass(model: nn.Module, batches: list[Tensor], autocast=None) -> float:
    device = batches[0].device
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        for x in batches:
            model(x, 0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(
    make, batch: int, repeats: int, n: int = 4096, *, device="cpu", autocast=None
) -> tuple[float, float]:
    """Samples/s of the supermask model and of the dense one, on ``device``, under
    ``autocast`` (a dtype, or ``None`` for float32)."""
    torch.manual_seed(0)
    dense = make().to(device).eval()
    net = convert_to_supermask(make(), density=0.05).to(device)
    for task in (4, 3, 2, 1, 0):  # task 0 is the last one stored
        net.start_task(task)
        net.finish_task()
    net.eval()
    batches = list(torch.rand(n, 1, 28, 28, device=device).split(batch))
    fastest_pass(dense, batches, autocast)
    fastest_pass(net, batches, autocast)
    t_dense = t_net = float("inf")
    for _ in range(repeats):
        t_dense = min(t_dense, fastest_pass(dense, batches, autocast))
        t_net = min(t_net, fastest_pass(net, batches, autocast))
    return n / t_net, n / t_dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | batch | supermask samples/s | dense samples/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, make in (("MLP 784-256-256", MLP), ("CNN 2 conv + BN", CNN)):
        for batch in (64, 1024):
            net, dense = measure(make, batch, args.repeats)
            print(f"| {name} | {batch} | {net:,.0f} | {dense:,.0f} | {net / dense:.2f} |")


if __name__ == "__main__":
    main()
