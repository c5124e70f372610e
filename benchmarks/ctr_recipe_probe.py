"""One DSC domain, one training recipe: how well CTR or its ablation (c) learns a task on
its own, to choose the recipe's learning rate, epochs and schedule before the
continual-learning runs (issue 12).

Prints the recipe, the test accuracy on the domain's whole test file and the training
seconds. Example::

    python benchmarks/ctr_recipe_probe.py --lr 0.01 --epochs 5 --warmup 0.1 --hat-lr 0.05 \\
        --system adapter_hat --domain Pet_Supplies --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import DSC
from avalanche_ctr.models import CTRModel
from avalanche_ctr.text_encoder import default_encoder_path
from avalanche_ctr.training import CTR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--domain", default="Pet_Supplies")
    parser.add_argument("--system", choices=("ctr", "adapter_hat"), default="adapter_hat")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--hat-lr", type=float, default=None)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    benchmark = DSC(
        os.path.join(args.data_root, "dsc"),
        domains=[args.domain],
        n_train=args.n_train,
        tokenizer=default_encoder_path(),
        max_length=args.max_length,
        seed=args.seed,
    )
    torch.manual_seed(args.seed)
    model = CTRModel(knowledge_sharing=args.system == "ctr")
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=args.lr),
        train_mb_size=32,
        train_epochs=args.epochs,
        hat_lr=args.hat_lr,
        warmup=args.warmup,
        eval_mb_size=128,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    )
    start = time.perf_counter()
    strategy.train(benchmark.train_stream[0])
    seconds = time.perf_counter() - start
    results = strategy.eval(benchmark.test_stream)
    (accuracy,) = [v for k, v in results.items() if k.startswith("Top1_Acc_Exp/eval_phase")]
    recipe = f"lr {args.lr}, {args.epochs} epochs, warmup {args.warmup}, hat_lr {args.hat_lr}"
    print(
        f"{args.system} on {args.domain} ({args.n_train} training reviews, seed {args.seed}; "
        f"{recipe}): test accuracy {100 * accuracy:.1f} %, training {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
