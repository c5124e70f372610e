"""Command line of avalanche-ctr.

``avalanche-ctr compare --benchmark NAME --strategies a,b,c`` trains every strategy
with every seed on one benchmark and writes ``results.csv``, ``results.md``, PNG
plots and TensorBoard logs to ``--out``. ``avalanche-ctr run --strategy NAME`` runs
a single strategy. ``avalanche-ctr verify OUT_DIR`` checks a run folder (every record,
checkpoint and ``runs.json``). ``avalanche-ctr`` alone runs the main job
(:data:`MAIN_JOB`): the supermask strategies against Avalanche's baselines on
MNIST-1D, every layer masked at 3 % density, where ExSSNeT's weight training shows.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from avalanche_ctr.checkpoint import CheckpointError
from avalanche_ctr.distributed import DistributedError
from avalanche_ctr.experiments.benchmarks import BENCHMARKS, get_benchmark
from avalanche_ctr.experiments.config import read_config, resolved_config
from avalanche_ctr.experiments.errors import BenchmarkDataError, UsageError
from avalanche_ctr.experiments.loggers import WANDB_PROJECT, RunLoggers
from avalanche_ctr.experiments.parallel import WorkerError
from avalanche_ctr.experiments.strategies import STRATEGIES, all_options, default_strategies
from avalanche_ctr.experiments.validation import check_seeds, check_threads
from avalanche_ctr.finite import NonFiniteError
from avalanche_ctr.precision import PRECISIONS
from avalanche_ctr.run_folder import RunFolderError, verify_folder

__all__ = ["MAIN_JOB", "main"]

MAIN_JOB = (
    "compare",
    "--benchmark",
    "split_mnist1d",
    "--output-layer",
    "masked",
    "--density",
    "0.03",
    "--strategies",
    "exssnet,ssnet,supsup,naive,ewc,si,lwf,mas,replay,agem,cumulative",
    "--jobs",
    "2",
)
"""What ``avalanche-ctr`` alone runs: every image strategy that takes the masked output
layer (PackNet keeps per-task heads), seeds 0, 1, 2, two runs at a time. MNIST-1D is
generated offline, and at 3 % density with one output layer shared by every task (the
official models) SupSup's fixed weights leave room that ExSSNeT's weight training fills
(benchmarks/RESULTS.md); ``split_digits``, where every strategy scores 90-99 %, stays
the default ``--benchmark`` of ``run`` and ``compare``."""


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--benchmark",
        default="split_digits",
        help=f"one of: {', '.join(BENCHMARKS)} (default: split_digits)",
    )
    parser.add_argument(
        "--n-experiences",
        type=int,
        default=None,
        help="number of tasks (split_*: must divide the classes; permuted_fmnist: any, "
        "e.g. 100; dsc / asc / 20news: the first N tasks of --task-order; default: per "
        "benchmark)",
    )
    parser.add_argument(
        "--task-order",
        default=None,
        help="dsc / asc / 20news: the task order, as comma-separated task names (dsc: any domain "
        "with files in --data-root) or random:S, the paper's tasks shuffled with seed S "
        "(the same order for every run seed; default: the paper's order)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per experience (default: per benchmark)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="training mini-batch size")
    parser.add_argument(
        "--eval-batch-size", type=int, default=None, help="evaluation mini-batch size"
    )
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--hidden-size", type=int, default=None, help="backbone width")
    parser.add_argument(
        "--head-units",
        type=int,
        default=None,
        help="image benchmarks: units of every per-task head, unmasked (units beyond a "
        "task's classes are the superfluous units SupSup's task inference can read; "
        "default: one per class, masked)",
    )
    parser.add_argument(
        "--output-layer",
        default="heads",
        help="MLP benchmarks: heads (Avalanche's per-task heads, default) or masked (one "
        "output layer of --head-units units, default 10, shared by every task: the "
        "supermask strategies mask it per task, as the official SupSup/ExSSNeT models)",
    )
    parser.add_argument(
        "--task-inference",
        default=None,
        help="supermask strategies: after the last task, evaluate again without task "
        "labels, inferring each test batch's task with these comma-separated methods "
        "(one_shot, binary, statistics) and report both",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help="dataset folder (split_fmnist, split_mnist, split_cifar100; dsc / asc / "
        "20news: read the files there as they are, e.g. ../shared/data; without it they "
        "are downloaded, verified, into Avalanche's dataset folder, see `download`)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--encoder",
        default=None,
        help="text encoder name or folder (default: the packaged "
        "all-MiniLM-L6-v2; e.g. bert-base-uncased online)",
    )
    parser.add_argument("--max-length", type=int, default=None, help="text: tokens per input")
    parser.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="text and permuted_fmnist: training examples kept per task (default: per benchmark)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (with compare --jobs: per worker; default: the cores shared "
        "out over the workers)",
    )
    parser.add_argument(
        "--n-test",
        type=int,
        default=None,
        help="text: test (and dev) examples kept per task, a seeded stratified subsample "
        "(default: the whole files)",
    )
    parser.add_argument(
        "--best-dev-epoch",
        action="store_true",
        help="text: after each task, restore the epoch that scored best on the task's dev "
        "split (the official CTR recipe; every strategy of the run gets it)",
    )
    parser.add_argument(
        "--dev-criterion",
        default="accuracy",
        choices=("accuracy", "loss"),
        help="with --best-dev-epoch: keep the epoch of the highest dev accuracy (default) or "
        "of the lowest dev cross-entropy (the official CTR code's choice)",
    )
    parser.add_argument(
        "--optimizer",
        default="adam",
        choices=("adam", "bertadam"),
        help="adam (default) or bertadam, the official CTR code's BertAdam: no bias "
        "correction, weight decay 0.01 except biases and LayerNorms, each gradient tensor "
        "clipped to norm 1, and --warmup's schedule inside it too (so applied twice, as "
        "there)",
    )
    parser.add_argument(
        "--bottleneck",
        type=int,
        default=128,
        help="text: units of every adapter of the adapter strategies (the official CTR "
        "code: 2000; default: 128)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (default), bf16 or fp16: autocast of the forward pass (fp16 with loss "
        "scaling); weights, masks and frozen entries stay float32",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        default=None,
        help="read flags from a YAML file (flag: value per line, e.g. the config.yaml every "
        "run folder holds, which runs the same runs again); flags given here win",
    )
    parser.add_argument(
        "--wandb",
        nargs="?",
        const=WANDB_PROJECT,
        default=None,
        metavar="PROJECT",
        help=f"also log every run to Weights & Biases (project default: {WANDB_PROJECT}; "
        "WANDB_MODE=offline keeps the logs in OUT/wandb; needs avalanche-ctr[wandb])",
    )
    parser.add_argument(
        "--csv",
        action="store_true",
        help="also log every run with Avalanche's CSVLogger (OUT/csv/STRATEGY/seedK)",
    )
    _add_debug(parser, default=argparse.SUPPRESS)
    group = parser.add_argument_group("strategy options (each used by the strategies named)")
    for name, opt in all_options().items():
        users = ", ".join(n for n, r in STRATEGIES.items() if opt in r.options)
        per_benchmark = [b for b, spec in BENCHMARKS.items() if name in spec.defaults]
        default = f"per benchmark, else {opt.default}" if per_benchmark else opt.default
        group.add_argument(
            opt.flag,
            dest=f"option_{name}",
            metavar=name.upper(),
            type=opt.type,
            default=None,
            help=f"{opt.help}; {users} (default: {default})",
        )


def _add_debug(parser: argparse.ArgumentParser, default: object = False) -> None:
    """``--debug``: show the traceback of an error instead of its one line (on the main
    parser with ``default=False``, on each subcommand with ``argparse.SUPPRESS`` so that
    ``avalanche-ctr --debug run`` and ``avalanche-ctr run --debug`` both work)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="on an error, show its traceback instead of one line",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avalanche-ctr",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks:\n"
        + "\n".join(f"  {n:15s} {s.description}" for n, s in BENCHMARKS.items())
        + "\nstrategies:\n"
        + "\n".join(f"  {n:15s} {s.description}" for n, s in STRATEGIES.items())
        + "\nmore than one process or GPU:\n"
        "  compare --jobs N                     N runs (strategy x seed) at once\n"
        "  torchrun --nproc_per_node N -m avalanche_ctr.cli run|compare ...\n"
        "                                       one run data-parallel over N processes "
        "(gloo on cpu, nccl with --device cuda)",
    )
    _add_debug(parser)
    sub = parser.add_subparsers(dest="command")
    compare = sub.add_parser("compare", help="compare strategies over seeds on one benchmark")
    _add_common(compare)
    compare.add_argument(
        "--strategies",
        default=None,
        help="comma-separated names (default: every strategy for the benchmark's modality)",
    )
    compare.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    compare.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes for the independent runs (strategy x seed), each pinned to "
        "a device (--device cuda: the visible GPUs in turn); same results as --jobs 1 "
        "with the same --threads (default: 1, one run after another)",
    )
    compare.add_argument(
        "--out", default=None, help="output folder (default: runs/compare-<benchmark>)"
    )
    run = sub.add_parser("run", help="train one strategy on one benchmark")
    _add_common(run)
    run.add_argument("--strategy", default="exssnet", help=f"one of: {', '.join(STRATEGIES)}")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--out", default=None, help="output folder (default: runs/<strategy>-<benchmark>)"
    )
    verify = sub.add_parser(
        "verify",
        help="check a run folder: every record's digest, every checkpoint, runs.json; one "
        "line per problem, exit status 1 if there is any",
    )
    verify.add_argument("out_dir", metavar="OUT_DIR", help="the --out of a run or compare")
    _add_debug(verify, default=argparse.SUPPRESS)
    _add_download(sub)
    export = sub.add_parser(
        "export",
        help="write the model folder (safetensors weights, config, model card) of a finished "
        "run, for from_pretrained and the Hugging Face Hub",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="the --out of a finished run or compare")
    export.add_argument("out_dir", metavar="OUT_DIR", help="the model folder to write")
    export.add_argument("--strategy", default=None, help="which run, if RUN_DIR holds several")
    export.add_argument(
        "--seed", type=int, default=None, help="which seed, if RUN_DIR holds several"
    )
    _add_debug(export, default=argparse.SUPPRESS)
    return parser


def _verify(out: Path) -> int:
    problems, checked = verify_folder(out)
    for problem in problems:
        print(problem)
    counts = ", ".join(f"{n} {what}" for what, n in checked.items())
    print(f"{out}: {len(problems) or 'no'} problem(s) in {counts}")
    return 1 if problems else 0


def _add_download(sub) -> None:
    from avalanche_ctr.benchmarks.download import BASE_URL_ENV

    download = sub.add_parser(
        "download",
        help="download a text benchmark's data (dsc, asc: each file verified by its "
        "sha256 against the packaged manifest; 20news: scikit-learn's copy)",
    )
    download.add_argument("dataset", choices=("dsc", "asc", "20news"))
    download.add_argument(
        "--root",
        default=None,
        help="the dataset's folder, what --data-root then reads (default: Avalanche's "
        "dataset location, ~/.avalanche/data/<dataset>)",
    )
    download.add_argument(
        "--base-url",
        default=None,
        help=f"dsc / asc: a mirror laid out as the pinned repository (default: "
        f"${BASE_URL_ENV}, else the repository at its pinned commit)",
    )
    _add_debug(download, default=argparse.SUPPRESS)


def _download(args: argparse.Namespace) -> int:
    """``avalanche-ctr download``: fetch and verify, then say where the files are."""
    from avalanche_ctr.benchmarks.download import (
        DownloadError,
        download_text_data,
        download_twenty_news,
        text_manifest,
    )

    try:
        if args.dataset == "20news":
            print(f"20news: scikit-learn's 20 Newsgroups in {download_twenty_news(args.root)}")
            return 0
        result = download_text_data(args.dataset, args.root, base_url=args.base_url)
    except DownloadError as error:
        raise BenchmarkDataError(str(error)) from None
    manifest = text_manifest()
    print(
        f"{args.dataset}: {len(result.downloaded) + len(result.present)} files in "
        f"{result.root}, each matching the sha256 of the manifest ({manifest.source} at "
        f"{manifest.commit}): {len(result.downloaded)} downloaded, {len(result.present)} "
        f"there already"
    )
    return 0


def _settings(args: argparse.Namespace):
    from avalanche_ctr.experiments.runner import Settings

    return Settings(
        benchmark=args.benchmark,
        n_experiences=args.n_experiences,
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        lr=args.lr,
        hidden_size=args.hidden_size,
        data_root=args.data_root,
        device=args.device,
        encoder=args.encoder,
        max_length=args.max_length,
        n_train=args.n_train,
        n_test=args.n_test,
        head_units=args.head_units,
        output_layer=args.output_layer,
        task_inference=args.task_inference,
        best_dev_epoch=args.best_dev_epoch,
        dev_criterion=args.dev_criterion,
        task_order=args.task_order,
        precision=args.precision,
        optimizer=args.optimizer,
        bottleneck=args.bottleneck,
        options={name: getattr(args, f"option_{name}") for name in all_options()},
    )


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--{what} is empty; give comma-separated names")
    return names


def _execute(args: argparse.Namespace, command: argparse.ArgumentParser) -> int:
    import torch

    from avalanche_ctr.distributed import finish_distributed, init_distributed, is_main_process
    from avalanche_ctr.experiments.report import (
        aggregate,
        inference_table,
        markdown_table,
        paired_table,
    )
    from avalanche_ctr.experiments.runner import ablation_pairs, compare

    spec = get_benchmark(args.benchmark)
    if args.command == "run":
        strategies, seeds = [args.strategy], [args.seed]
        check_seeds(seeds, "--seed")
        out = Path(args.out or f"runs/{args.strategy}-{args.benchmark}")
    else:
        strategies = (
            _names(args.strategies, "strategies")
            if args.strategies
            else default_strategies(spec.modality)
        )
        try:
            seeds = [int(s) for s in _names(args.seeds, "seeds")]
        except ValueError:
            raise UsageError(
                f"--seeds must be comma-separated integers, got {args.seeds!r}"
            ) from None
        out = Path(args.out or f"runs/compare-{args.benchmark}")
    check_threads(args.threads)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = _settings(args)
    init_distributed(settings.device)  # under torchrun: one rank of a data-parallel run
    main_process = is_main_process()
    try:
        records = compare(
            settings,
            strategies,
            seeds,
            out=out,
            progress=not args.no_progress,
            log=_log,
            jobs=getattr(args, "jobs", 1),
            threads=args.threads,
            loggers=RunLoggers(wandb=args.wandb, csv=args.csv),
            config=resolved_config(
                args, command, settings, strategies=",".join(strategies), out=str(out)
            ),
        )
    finally:
        finish_distributed()
    if not main_process:
        return 0
    print()
    rows = aggregate(records)
    print(markdown_table(rows))
    if inferred := inference_table(rows):
        print()
        print(inferred)
    if paired := paired_table(records, ablation_pairs(strategies)):
        print()
        print(paired)
    print(
        f"\nresults: {out / 'results.md'}, {out / 'results.csv'}; plots: {out}/*.png; "
        f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}"
    )
    return 0


def _log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv) or list(MAIN_JOB)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "verify":
            return _verify(Path(args.out_dir))
        if args.command == "download":
            return _download(args)
        if args.command == "export":
            from avalanche_ctr.hub import export_run

            out = export_run(args.run_dir, args.out_dir, strategy=args.strategy, seed=args.seed)
            print(f"model folder: {out} (load it with HubModel.from_pretrained({str(out)!r}))")
            return 0
        command = _commands(parser)[args.command]
        if getattr(args, "config", None) is not None:  # run and compare take --config
            command.set_defaults(**read_config(args.config, command))
            args = parser.parse_args(argv)  # the command line wins over the file
        return _execute(args, command)
    except (
        UsageError,
        BenchmarkDataError,
        CheckpointError,
        DistributedError,
        RunFolderError,
        WorkerError,
        NonFiniteError,
    ) as error:
        if args.debug:
            raise
        raise _error_exit(error) from None


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parsers of the subcommands of ``parser``, by name."""
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices


def _error_exit(error: Exception) -> SystemExit:
    """The exit of a user's error: its one ``avalanche-ctr: error:`` line printed to
    stderr, then exit status 2 for a usage error (as argparse's), 1 for the rest. The
    ``SystemExit``'s text is the line too, for callers of :func:`main` in-process."""
    line = f"avalanche-ctr: error: {error}"
    print(line, file=sys.stderr)
    exit_ = SystemExit(line)
    exit_.code = 2 if isinstance(error, UsageError) else 1
    return exit_


if __name__ == "__main__":
    raise SystemExit(main())
