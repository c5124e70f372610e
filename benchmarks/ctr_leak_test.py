"""The leak test of issue 25: does the official code's sample mixing hand a test sample
features of its batch neighbours' labels?

Loads a ``compare`` checkpoint of ``ctr_official`` trained with
``--official-batch-mixing on`` (or any other run, as a control) and scores every task's
test set with the same trained model in three orders, batch 128: sorted by label (as the
DSC test files are, and as the official code's sequential sampler reads them), the
dataset's own order (what ``compare`` scored), and shuffled (a seeded permutation). With
mixing, a sample's transfer output is computed from other samples of its batch
(``avalanche_ctr.ctr.routing.official_sample_view``), so a model that learned to read
them scores higher when its neighbours share its label. Without mixing the three orders
give the same predictions. With mixing the gates are Gumbel samples at evaluation too
(as in the official code), so each order is scored ``--repeats`` times (new permutations
for the shuffled order, new gate noise for every order, seeded) and the spread over the
repeats is the noise the sorted − shuffled difference is read against. Prints the mean
accuracy and macro-F1 over the tasks, per order and repeat, and per task. Usage::

    python benchmarks/ctr_leak_test.py /work/runs25/dsc_mix/checkpoints/ctr_official-seed0.pt \\
        --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rescore_checkpoint import rebuild

from avalanche_ctr.metrics import MacroF1


@torch.no_grad()
def score(model, x: torch.Tensor, y: torch.Tensor, task: int, order: torch.Tensor, batch: int):
    """Accuracy and macro-F1 of ``model`` on ``(x, y)`` read in ``order``, ``batch`` at a
    time."""
    model.eval()
    f1 = MacroF1()
    correct = 0
    for start in range(0, len(order), batch):
        index = order[start : start + batch]
        logits = model(x[index], task)
        correct += int((logits.argmax(dim=1) == y[index]).sum())
        f1.update(logits, y[index], task)
    return correct / len(order), f1.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint compare wrote (out/checkpoints/*.pt)")
    parser.add_argument("--data-root", default=None, help="instead of the run's own")
    parser.add_argument("--batch-size", type=int, default=128, help="the official eval batch")
    parser.add_argument("--shuffle-seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="scorings per order")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    identity, benchmark, strategy = rebuild(args.checkpoint, args.data_root)
    model = strategy.model
    generator = torch.Generator().manual_seed(args.shuffle_seed)
    names = [
        f"{order} {r}" for order in ("sorted", "dataset", "shuffled") for r in range(args.repeats)
    ]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    print(f"{identity['strategy']} seed {identity['seed']}, batch {args.batch_size}")
    print("task | " + " | ".join(f"{name} acc / MF1" for name in names))
    for experience in benchmark.test_stream:
        dataset = experience.dataset.eval()
        items = [dataset[i] for i in range(len(dataset))]
        x = torch.stack([item[0] for item in items])
        y = torch.tensor([int(item[1]) for item in items])
        task = experience.task_label
        row = []
        for name in names:
            order, repeat = name.split()
            torch.manual_seed(args.shuffle_seed + int(repeat))  # the gates' noise, if any
            if order == "sorted":
                index = torch.sort(y, stable=True).indices
            elif order == "dataset":
                index = torch.arange(len(y))
            else:
                index = torch.randperm(len(y), generator=generator)
            acc, f1 = score(model, x, y, task, index, args.batch_size)
            results[name].append((acc, f1))
            row.append(f"{100 * acc:.2f} / {100 * f1:.2f}")
        print(f"{task} | " + " | ".join(row))
    means = {}
    for name, values in results.items():
        acc = 100 * statistics.fmean(a for a, _ in values)
        f1 = 100 * statistics.fmean(f for _, f in values)
        means[name] = acc
        print(f"mean over {len(values)} tasks, {name}: accuracy {acc:.2f} %, macro-F1 {f1:.2f} %")
    for order in ("sorted", "dataset", "shuffled"):
        accs = [means[f"{order} {r}"] for r in range(args.repeats)]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{order}: accuracy {statistics.fmean(accs):.2f} ± {spread:.2f} over repeats")
    difference = statistics.fmean(
        means[f"sorted {r}"] - means[f"shuffled {r}"] for r in range(args.repeats)
    )
    print(f"sorted - shuffled: {difference:+.2f} accuracy points (mean over repeats)")


if __name__ == "__main__":
    main()
