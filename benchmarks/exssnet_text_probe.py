"""How far the supermask strategies' text model gets on the first DSC domains.

A diagnostic for issue 13: trains each configuration on the first ``--domains`` DSC
domains (Kim-CNN over the frozen all-MiniLM-L6-v2, masked output layer with 2
units) and prints each domain's test accuracy right after it was trained. The
frozen encoder's token states are computed once and shared by every
configuration (a copy of one warmed model each), so a configuration costs only its
training. ``naive`` fine-tunes the dense Kim-CNN (its convolutions and output
layer) domain after domain: on the first domain, the ceiling of what this text
model learns from that domain alone.

Usage::

    python benchmarks/exssnet_text_probe.py --data-root ../shared/data --domains 2
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import DSC
from avalanche_ctr.benchmarks.text import DSC_DOMAINS
from avalanche_ctr.experiments.benchmarks import text_root
from avalanche_ctr.models import KimCNN
from avalanche_ctr.text_encoder import load_tokenizer
from avalanche_ctr.training import ExSSNeT, SupSup

_PHASES = {"mask_epochs": 2, "weight_epochs": 2}


def _configs() -> dict[str, tuple[type, dict, float]]:
    """Name -> (strategy class, keyword arguments, learning rate), in the order printed."""
    configs = {"naive, dense Kim-CNN, 4 epochs, lr 1e-3": (Naive, {"train_epochs": 4}, 1e-3)}
    for lr, rate in ((1e-3, "1e-3"), (1e-2, "1e-2")):
        configs[f"supsup, 4 epochs, lr {rate}"] = (SupSup, {"train_epochs": 4}, lr)
        configs[f"exssnet, 2 + 2 epochs, lr {rate}"] = (ExSSNeT, _PHASES, lr)
        configs[f"exssnet, 2 + 2 epochs, lr {rate}, no KKT"] = (
            ExSSNeT,
            {**_PHASES, "kkt": False},
            lr,
        )
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--domains", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    benchmark = DSC(
        text_root(args.data_root, "dsc"),
        domains=DSC_DOMAINS[: args.domains],
        n_train=args.n_train,
        n_test=args.n_test,
        tokenizer=load_tokenizer(None),
        max_length=args.max_length,
        seed=args.seed,
    )
    torch.manual_seed(args.seed)
    warmed = KimCNN(None, outputs=2)
    start = time.perf_counter()
    with torch.no_grad():
        for stream in (benchmark.train_stream, benchmark.test_stream):
            for experience in stream:
                dataset = experience.dataset
                inputs = torch.stack([dataset[i][0] for i in range(len(dataset))])
                for i in range(0, len(inputs), 64):
                    warmed.token_states(inputs[i : i + 64])
    print(f"token states of every text computed in {time.perf_counter() - start:.0f} s")
    print(f"domains: {', '.join(DSC_DOMAINS[: args.domains])}; density {args.density}")
    for name, (cls, kwargs, lr) in _configs().items():
        torch.manual_seed(args.seed)
        model = copy.deepcopy(warmed)
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
        common = {"train_mb_size": 32, "eval_mb_size": 128, "evaluator": evaluator, **kwargs}
        if cls is Naive:
            trainable = [p for p in model.parameters() if p.requires_grad]
            strategy = Naive(model=model, optimizer=torch.optim.Adam(trainable, lr=lr), **common)
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            strategy = cls(model=model, optimizer=optimizer, density=args.density, **common)
        accuracies = []
        for task, experience in enumerate(benchmark.train_stream):
            strategy.train(experience)
            result = strategy.eval([benchmark.test_stream[task]])
            key = f"Top1_Acc_Exp/eval_phase/test_stream/Task{task:03d}/Exp{task:03d}"
            accuracies.append(f"{100 * result[key]:.1f}")
        print(f"{name}: {' / '.join(accuracies)} %", flush=True)


if __name__ == "__main__":
    main()
