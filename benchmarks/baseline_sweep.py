"""How the hyper-parameters of Avalanche's regularisation baselines were chosen.

Runs each value of a small grid for EWC (``--ewc-lambda``), SI (``--si-lambda``), MAS
(``--mas-lambda-reg``) and LwF (``--lwf-alpha``) with the command line's runner and
default settings, and prints the final average accuracy (mean over seeds) per value.
The defaults of these options in :mod:`avalanche_ctr.experiments.strategies` were
picked from its output (see ``benchmarks/RESULTS.md``).

Example::

    python benchmarks/baseline_sweep.py --benchmark split_digits --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from avalanche_ctr.experiments.runner import Settings, run_one

GRID = {
    "ewc": ("ewc_lambda", (1e2, 1e3, 1e4, 1e5)),
    "si": ("si_lambda", (1.0, 10.0, 100.0, 1000.0)),
    "mas": ("mas_lambda_reg", (1.0, 10.0, 100.0)),
    "lwf": ("lwf_alpha", (1.0, 10.0)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="split_digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", choices=list(GRID), default=list(GRID))
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = Settings(benchmark=args.benchmark, data_root=args.data_root)
    print(f"{args.benchmark}, seeds {args.seeds}, settings {base.config()}", flush=True)
    print("| strategy | hyper-parameter | value | final acc. (%) mean | per seed |")
    print("|---|---|---:|---:|---|")
    for name in args.strategies:
        key, values = GRID[name]
        for value in values:
            settings = Settings(
                benchmark=args.benchmark, data_root=args.data_root, options={key: value}
            )
            accuracies = []
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as out:
                    record = run_one(
                        settings, name, seed, out=Path(out), progress=False, log=lambda _: None
                    )
                accuracies.append(100 * record["summary"]["final_accuracy"])
            per_seed = " / ".join(f"{a:.2f}" for a in accuracies)
            print(
                f"| {name} | {key} | {value:g} | {statistics.fmean(accuracies):.2f} | {per_seed} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
