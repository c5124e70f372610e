"""What the SHA-256 digests of a checkpoint cost (issue 31), on a CTR checkpoint of ASC's size.

The strategy is built as ``avalanche-ctr run --strategy ctr --benchmark asc`` builds it
(the packaged all-MiniLM-L6-v2, the run's evaluator metrics), and its model is grown
to ASC's 19 tasks without training: every task's capsules, routing parts and mask
embeddings installed and folded in, a head per task (2 classes for the first 4 tasks,
3 for the other 15, as ASC's Bing and SemEval tasks), and Adam state for the last
task's trainable parameters (one step on random gradients). The checkpoint then has
the tensors, shapes and plain values of one written after ASC's last experience;
the values do not matter to the timings.

Timed (median of ``--repeats``, wall clock):

* ``digest``: computing the digests of the whole content (:func:`checkpoint._digests`),
  what :func:`~avalanche_ctr.checkpoint.save_checkpoint` adds and what every read
  checks;
* ``write``: ``atomic_save`` of the content without the digests (``torch.save``, fsync,
  rename), and ``save_checkpoint`` with them;
* ``read``: ``torch.load(weights_only=True)`` alone, ``read_checkpoint`` (the load and
  the digest check), and ``verify_checkpoint`` (what ``avalanche-ctr verify`` runs per
  checkpoint);
* ``resume``: ``load_checkpoint`` into a freshly built strategy (once per repeat).

Run it with ``HF_HUB_OFFLINE=1`` on an otherwise idle machine::

    python benchmarks/checkpoint_digest_cost.py --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.models.dynamic_modules import IncrementalClassifier
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr import checkpoint
from avalanche_ctr.compat import reset_optimizer_to_trainable
from avalanche_ctr.experiments.measure import IterationTimer
from avalanche_ctr.experiments.runner import Settings, build_strategy
from avalanche_ctr.experiments.strategies import get_strategy

N_TASKS = 19
BING_TASKS = 4  # ASC's first four tasks (Bing) have 2 classes, the others 3


def asc_ctr_strategy(grown: bool):
    """The CTR strategy of an ASC run, its model grown to 19 tasks if ``grown``."""
    settings = Settings(benchmark="asc")
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(epoch=True, experience=True),
        loggers=[],
    )
    strategy = build_strategy(
        settings, get_strategy("ctr"), plugins=[IterationTimer()], evaluator=evaluator
    )
    if not grown:
        return strategy
    model = strategy.model
    hidden = model.classifier.in_features
    for task in range(N_TASKS):
        model.start_task(task)
        classes = 2 if task < BING_TASKS else 3
        model.classifier.classifiers[str(task)] = IncrementalClassifier(
            hidden, classes, masking=False, auto_adapt=False
        )
        model.known_train_tasks_labels.add(task)
        model.classifier.known_train_tasks_labels.add(task)
        model.classifier.max_class_label = max(model.classifier.max_class_label, classes)
        model.set_trainable()
        if task == N_TASKS - 1:
            reset_optimizer_to_trainable(strategy.optimizer, model)
            for param in model.parameters():
                param.grad = torch.randn_like(param) if param.requires_grad else None
            strategy.optimizer.step()
            strategy.optimizer.zero_grad(set_to_none=True)
        model.finish_task()
    return strategy


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor of a checkpoint's content (what the digests hash)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in tensors_in(v)]
    return []


def median_s(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    strategy = asc_ctr_strategy(grown=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ctr-seed0.pt"
        plain = Path(folder) / "plain.pt"
        checkpoint.save_checkpoint(strategy, path, meta={"note": "19 ASC tasks"})
        payload = torch.load(path, weights_only=True)
        content = {k: v for k, v in payload.items() if k != "digest"}
        n_tensors = len(payload["digest"]["tensors"])
        tensor_bytes = sum(t.numel() * t.element_size() for t in tensors_in(content))
        rows = {
            "digest (sha256 of the content)": median_s(
                lambda: checkpoint._digests(content), args.repeats
            ),
            "write without digest (atomic_save)": median_s(
                lambda: checkpoint.atomic_save(content, plain), args.repeats
            ),
            "write with digest (save_checkpoint)": median_s(
                lambda: checkpoint.save_checkpoint(strategy, path, meta={"note": "19 ASC tasks"}),
                args.repeats,
            ),
            "read without digest (torch.load)": median_s(
                lambda: torch.load(path, weights_only=True), args.repeats
            ),
            "read with digest (read_checkpoint)": median_s(
                lambda: checkpoint.read_checkpoint(path), args.repeats
            ),
            "verify_checkpoint": median_s(lambda: checkpoint.verify_checkpoint(path), args.repeats),
        }
        fresh = [asc_ctr_strategy(grown=False) for _ in range(args.repeats)]
        rows["resume (load_checkpoint, fresh strategy)"] = median_s(
            lambda: checkpoint.load_checkpoint(fresh.pop(), path), args.repeats
        )
        size = path.stat().st_size
    print(
        f"CTR on ASC, {N_TASKS} tasks: file {size / 2**20:.1f} MiB, {n_tensors} tensors "
        f"({tensor_bytes / 2**20:.1f} MiB hashed), {args.threads} thread(s), "
        f"median of {args.repeats}"
    )
    for name, seconds in rows.items():
        print(f"  {name:<42} {1000 * seconds:8.1f} ms")
    digest = rows["digest (sha256 of the content)"]
    write, read = (
        rows["write without digest (atomic_save)"],
        rows["read without digest (torch.load)"],
    )
    print(
        f"  digest / write without digest: {100 * digest / write:.0f}%; digest / read without "
        f"digest: {100 * digest / read:.0f}%; {tensor_bytes / 2**20 / digest:.0f} MiB/s hashed"
    )


if __name__ == "__main__":
    main()
