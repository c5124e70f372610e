"""Train strategies on a benchmark, seed by seed, and measure them.

:func:`run_one` trains one strategy with one seed on a task-incremental stream, as
Avalanche's canonical loop does: before training and after training experience ``i``
it evaluates the whole test stream (``strategy.eval(benchmark.test_stream)``), tasks
not trained yet included, and records the accuracy and macro-F1 matrices, the
training time, the peak memory and the bytes the strategy stores. Avalanche's
``TensorboardLogger`` writes the metrics of every run to
``<out>/tensorboard/<strategy>/seed<k>``, and on request its ``CSVLogger`` and
``WandBLogger`` (:mod:`avalanche_ctr.experiments.loggers`).

:func:`compare` runs several strategies over several seeds and writes the
report (:mod:`avalanche_ctr.experiments.report`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import MISSING, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import torch
from avalanche.evaluation.metrics import (
    accuracy_metrics,
    bwt_metrics,
    forgetting_metrics,
    loss_metrics,
)
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from avalanche_ctr.compat import PAD_LOGIT
from avalanche_ctr.ctr.diagnostics import CTRDiagnostics
from avalanche_ctr.distributed import (
    DistributedTraining,
    barrier,
    is_distributed,
    is_main_process,
    unsupported_plugins,
)
from avalanche_ctr.experiments.benchmarks import (
    BENCHMARKS,
    BenchmarkSpec,
    get_benchmark,
    text_tasks,
)
from avalanche_ctr.experiments.config import CONFIG_FILE, config_yaml
from avalanche_ctr.experiments.errors import UsageError
from avalanche_ctr.experiments.loggers import RunLoggers, close_loggers
from avalanche_ctr.experiments.measure import IterationTimer, PeakMemory, ProgressBar, stored_bytes
from avalanche_ctr.experiments.report import REPORT_FILES, summarize, write_report
from avalanche_ctr.experiments.strategies import (
    StrategyContext,
    StrategyRecord,
    all_options,
    check_strategy_for,
    get_strategy,
    resolve_options,
)
from avalanche_ctr.experiments.validation import (
    check_encoder,
    check_seeds,
    check_tasks,
    check_unique,
    encoder_config,
)
from avalanche_ctr.exssnet.diagnostics import ExSSNeTDiagnostics
from avalanche_ctr.exssnet.task_inference import METHODS as INFERENCE_METHODS
from avalanche_ctr.exssnet.task_inference import task_inference_metrics
from avalanche_ctr.files import atomic_write_bytes
from avalanche_ctr.hat.diagnostics import HATDiagnostics
from avalanche_ctr.metrics import macro_f1_metrics
from avalanche_ctr.precision import MixedPrecision, autocast_dtype
from avalanche_ctr.run_folder import (
    DamagedFile,
    RunFolderError,
    check_checkpoint,
    check_layout,
    check_zip,
    folder_errors,
    lock_folder,
    read_record,
    write_digested_json,
)
from avalanche_ctr.selection import CRITERIA as DEV_CRITERIA
from avalanche_ctr.selection import BestEpochPlugin
from avalanche_ctr.text_encoder import UnsupportedEncoderError, default_encoder_path, load_encoder
from avalanche_ctr.training.bert_adam import BertAdamSchedule

__all__ = [
    "Settings",
    "run_one",
    "run_paths",
    "compare",
    "experience_metric",
    "check_device",
    "check_strategies",
    "ablation_pairs",
    "build_strategy",
]


OPTIMIZERS = ("adam", "bertadam")
"""``--optimizer``: Adam, or the official CTR code's BertAdam
(:class:`~avalanche_ctr.training.bert_adam.BertAdam`)."""


@dataclass
class Settings:
    """Everything a run depends on besides the strategy and the seed.

    Values left ``None`` take the benchmark's defaults
    (:data:`~avalanche_ctr.experiments.benchmarks.BENCHMARKS`). ``options`` holds
    values of the strategies' own options (:class:`~avalanche_ctr.experiments.
    strategies.Option`, e.g. ``{"density": 0.05}``); an option left out takes the
    benchmark's default, else its own.
    """

    benchmark: str = "split_digits"
    n_experiences: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    lr: float | None = None
    hidden_size: int | None = None
    hidden_layers: int | None = None
    data_root: str | None = None
    device: str = "cpu"
    encoder: str | None = None
    max_length: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    bottleneck: int = 128
    head_units: int | None = None
    output_layer: str = "heads"
    task_inference: str | None = None
    best_dev_epoch: bool = False
    dev_criterion: str = "accuracy"
    task_order: str | None = None
    precision: str = "fp32"
    optimizer: str = "adam"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = get_benchmark(self.benchmark)
        for key, value in spec.defaults.items():
            if key in _COMMON and getattr(self, key) is None:
                setattr(self, key, value)
        check_device(self.device)
        autocast_dtype(self.precision)
        if self.n_test is not None and (spec.modality != "text" or self.n_test < 1):
            raise UsageError(
                f"--n-test keeps a positive number of test reviews per task of the text "
                f"benchmarks; got {self.n_test} for {self.benchmark}"
            )
        if self.best_dev_epoch and spec.modality != "text":
            raise UsageError(
                f"--best-dev-epoch needs a dev split, which only the text benchmarks have; "
                f"leave it out for {self.benchmark}"
            )
        if self.dev_criterion not in DEV_CRITERIA:
            raise UsageError(
                f"--dev-criterion {self.dev_criterion!r}: use one of {', '.join(DEV_CRITERIA)}"
            )
        if self.dev_criterion != "accuracy" and not self.best_dev_epoch:
            raise UsageError(
                f"--dev-criterion {self.dev_criterion} chooses the epoch that --best-dev-epoch "
                "keeps; add --best-dev-epoch"
            )
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.bottleneck < 1:
            raise UsageError(f"--bottleneck must be at least 1, got {self.bottleneck}")
        if self.task_order is not None:
            if spec.modality != "text":
                raise UsageError(
                    f"--task-order orders the tasks of the text benchmarks; {self.benchmark} "
                    "has no named tasks, leave it out"
                )
            text_tasks(self.benchmark, self.task_order, self.n_experiences)
        if self.options.get("encoder_layer") is not None:
            self._check_encoder_layer(self.options["encoder_layer"])
        for name in _COUNTS:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )
        if self.max_length is not None and self.max_length < 2:
            raise UsageError(
                f"--max-length {self.max_length}: give at least 2 tokens per input (the "
                "encoder's [CLS] and [SEP])"
            )
        if self.n_train is not None and spec.modality == "image":
            if self.benchmark != "permuted_fmnist":
                raise UsageError(
                    f"--n-train applies to the text benchmarks and permuted_fmnist, not to "
                    f"{self.benchmark}; leave it out"
                )
        if self.output_layer not in spec.output_layers:
            raise UsageError(
                f"--output-layer {self.output_layer!r} is not offered for {self.benchmark}; "
                f"use one of: {', '.join(spec.output_layers)}"
            )
        if self.head_units is not None and self.head_units < 1:
            raise UsageError(f"--head-units must be at least 1, got {self.head_units}")
        unknown_methods = [m for m in self.inference_methods if m not in INFERENCE_METHODS]
        if unknown_methods:
            raise UsageError(
                f"unknown --task-inference method(s) {unknown_methods}; use a comma-separated "
                f"list of {', '.join(INFERENCE_METHODS)}"
            )
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise UsageError(f"--lr must be a positive finite number, got {self.lr}")
        unknown = set(self.options) - set(all_options())
        if unknown:
            raise UsageError(
                f"unknown strategy option(s) {sorted(unknown)}; the registered strategies "
                f"take: {', '.join(sorted(all_options()))}"
            )
        self.options = {k: v for k, v in self.options.items() if v is not None}

    @property
    def inference_methods(self) -> tuple[str, ...]:
        """The task-inference methods of ``task_inference`` (comma-separated)."""
        text = self.task_inference or ""
        return tuple(m.strip() for m in text.split(",") if m.strip())

    @property
    def spec(self) -> BenchmarkSpec:
        return get_benchmark(self.benchmark)

    @property
    def task_names(self) -> list[str] | None:
        """The text benchmark's tasks in this run's order, ``--task-order`` resolved
        (``None`` for the image benchmarks, whose tasks have no names)."""
        if self.spec.modality != "text":
            return None
        return text_tasks(self.benchmark, self.task_order, self.n_experiences)

    def _check_encoder_layer(self, layer: Any) -> None:
        """``--encoder-layer`` names a layer of this run's text encoder (checked before any
        run starts, from the encoder's config)."""
        if self.spec.modality != "text":
            raise UsageError(
                f"--encoder-layer chooses the text encoder layer the supermask Kim-CNN reads; "
                f"{self.benchmark} has no encoder, leave it out"
            )
        from avalanche_ctr.models.kim_cnn import check_layer

        config = encoder_config(self.encoder)
        try:
            check_layer(layer, getattr(config, "num_hidden_layers", None))
        except (TypeError, ValueError) as error:
            raise UsageError(f"--encoder-layer: {error}") from None

    def strategy_options(self, record: StrategyRecord) -> dict[str, Any]:
        """``record``'s options for this run, resolved and checked."""
        return resolve_options(record, self.options, self.spec.defaults)

    def config(self, strategies: list[str] | None = None) -> dict[str, Any]:
        """The settings as a JSON-ready flat dict (what a run's results depend on): the
        common settings and the resolved options of ``strategies`` (default: none)."""
        flat = {key: getattr(self, key) for key in _COMMON}
        if self.spec.mixed_widths:
            # runs made before the padding fix lack it and are refused, not mixed in
            flat["pad_logit"] = PAD_LOGIT
        for name in strategies or []:
            flat.update(self.strategy_options(get_strategy(name)))
        return flat


_COMMON = tuple(f.name for f in fields(Settings) if f.name != "options")
_COUNTS = (
    "n_experiences",
    "epochs",
    "batch_size",
    "eval_batch_size",
    "hidden_size",
    "hidden_layers",
    "n_train",
)
"""The settings that count something, each at least 1 when given."""


RECORD_FORMAT = 2
"""Version of a run's record: 2 holds every test experience in every row of the accuracy
matrix (tasks not trained yet included) and the accuracies before training."""


def check_device(device: str) -> torch.device:
    """``device`` as a ``torch.device``; :class:`UsageError` if it does not exist here."""
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise UsageError(f"--device {device}: {error}; use cpu or cuda") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise UsageError(
                f"--device {device}: this machine has {count} CUDA device(s) (torch "
                f"{torch.__version__}); use --device cpu" + (" or --device cuda" if count else "")
            )
    return parsed


def experience_metric(metrics: dict[str, float], name: str, exp_id: int) -> float:
    """The eval-phase value of an experience metric (e.g. ``Top1_Acc_Exp``) of experience
    ``exp_id`` in ``metrics``."""
    suffix = f"/Exp{exp_id:03d}"
    keys = [k for k in metrics if k.startswith(f"{name}/eval_phase/") and k.endswith(suffix)]
    if len(keys) != 1:
        raise KeyError(f"expected one {name} of experience {exp_id}, found {keys}")
    return float(metrics[keys[0]])


def run_paths(out: Path, strategy_name: str, seed: int) -> tuple[Path, Path]:
    """Where a run keeps its checkpoint and, once finished, its record."""
    name = f"{strategy_name}-seed{seed}"
    return out / "checkpoints" / f"{name}.pt", out / "runs" / f"{name}.json"


def _check_same_run(
    found: dict[str, Any], expected: dict[str, Any], path: Path, spec: BenchmarkSpec
) -> None:
    """Refuse to continue a run whose strategy, seed or settings differ from this one's.

    A setting or option the earlier run does not record did not exist then; it counts
    as its default (the benchmark's, else the option's, else ``None``), which is what
    that run used."""
    defaults = {
        **{f.name: f.default for f in fields(Settings) if f.default is not MISSING},
        **{name: opt.default for name, opt in all_options().items()},
        **spec.defaults,
    }

    def flat(identity: dict[str, Any]) -> dict[str, Any]:
        return {
            **{k: v for k, v in identity.items() if k != "settings"},
            **identity.get("settings", {}),
        }

    there, here = flat(found), flat(expected)
    differences = [
        f"{key}={there.get(key)!r} there, {value!r} here"
        for key, value in here.items()
        if there.get(key, defaults.get(key)) != value
    ]
    if differences:
        raise CheckpointError(
            f"{path} belongs to another run ({'; '.join(differences)}); use another --out "
            "to start a new run, or the same settings to resume it"
        )


def check_strategies(settings: Settings, strategies: list[str]) -> list[StrategyRecord]:
    """The records of ``strategies``, each checked against the benchmark's modality and
    with its options checked, before any run starts (:class:`UsageError` saying what to
    change)."""
    modalities = {name: spec.modality for name, spec in BENCHMARKS.items()}
    records = [check_strategy_for(n, settings.spec.modality, modalities) for n in strategies]
    for record in records:
        settings.strategy_options(record)
    check_tasks(settings)
    check_encoder(settings)
    return records


def build_strategy(
    settings: Settings, registered: StrategyRecord, *, plugins: list, evaluator: Any
) -> Any:
    """``registered``'s strategy for ``settings``, built as every run builds it (the
    benchmark's backbone or text encoder, cross-entropy, the settings' batch sizes and
    device), with ``plugins`` and ``evaluator``."""
    spec = settings.spec
    context = StrategyContext(
        settings=settings,
        options=settings.strategy_options(registered),
        backbone=(lambda: spec.backbone(settings)) if spec.backbone else None,
        encoder=(lambda: load_encoder(settings.encoder)) if spec.modality == "text" else None,
        common={
            "criterion": torch.nn.CrossEntropyLoss(),
            "train_mb_size": settings.batch_size,
            "eval_mb_size": settings.eval_batch_size,
            "device": settings.device,
            "plugins": plugins,
            "evaluator": evaluator,
        },
    )
    try:
        return registered.build(context, registered)
    except UnsupportedEncoderError as error:
        raise UsageError(
            f"--encoder {settings.encoder or default_encoder_path()}: {registered.name} puts "
            f"its modules into the encoder's layers, but {error}; pass a BERT-family "
            "encoder (e.g. bert-base-uncased), or leave --encoder out for the packaged "
            "all-MiniLM-L6-v2"
        ) from None


def run_one(
    settings: Settings,
    strategy_name: str,
    seed: int,
    *,
    out: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    loggers: RunLoggers = RunLoggers(),
) -> dict[str, Any]:
    """Train ``strategy_name`` with ``seed`` on ``settings.benchmark``; return its record.

    The record holds the accuracy and macro-F1 matrices (row ``i``: after training
    experience ``i``; column ``j``: test experience ``j <= i``), per experience the
    training and evaluation seconds, the mean training-iteration seconds and the
    bytes stored, the peak memory, the diagnostics of ExSSNeT, CTR and HAT models (keys
    ``diagnostics``, ``ctr_diagnostics`` and ``hat_diagnostics``, one dict per
    experience), and
    :func:`~avalanche_ctr.experiments.report.summarize`'s metrics.

    After each experience the run saves a checkpoint in ``out/checkpoints`` (see
    :mod:`avalanche_ctr.checkpoint`); a finished run leaves its record in ``out/runs``.
    Called again with the same ``out``, a finished run returns its record and an
    unfinished one resumes after its last checkpoint, ending with the metrics an
    uninterrupted run gets. The record carries a digest; a damaged or edited record is
    rebuilt from the checkpoint, which holds it. The run holds the lock of ``out``
    (:func:`~avalanche_ctr.run_folder.lock_folder`). ``loggers`` says which of
    Avalanche's loggers log it besides TensorBoard.
    """
    check_seeds([seed], "--seed")
    (record,) = check_strategies(settings, [strategy_name])
    loggers.check()
    with folder_errors(out), _locked(out, log):
        return _run(settings, record, seed, out=out, progress=progress, log=log, loggers=loggers)


def _locked(out: Path, log: Callable[[str], None]) -> AbstractContextManager:
    """The lock of the run folder ``out`` (:func:`~avalanche_ctr.run_folder.lock_folder`);
    under torchrun rank 0 holds it for every rank."""
    return lock_folder(out, log) if is_main_process() else nullcontext()


def _run(
    settings: Settings,
    registered: StrategyRecord,
    seed: int,
    *,
    out: Path,
    progress: bool,
    log: Callable[[str], None],
    loggers: RunLoggers,
) -> dict[str, Any]:
    spec = settings.spec
    strategy_name = registered.name
    log = log if is_main_process() else _quiet
    options = settings.strategy_options(registered)
    identity = {
        "strategy": strategy_name,
        "seed": seed,
        "record_format": RECORD_FORMAT,
        "settings": {**settings.config(), **options},
    }
    checkpoint_path, record_path = run_paths(out, strategy_name, seed)
    check_layout(out, [checkpoint_path, record_path])
    if record_path.exists():
        kept = _kept_record(record_path, checkpoint_path, identity, spec, log=log)
        if kept is not None:
            return kept
    RNGManager.set_random_seeds(seed)
    benchmark = spec.build(seed, settings)
    n = len(benchmark.train_stream)
    timer = IterationTimer()
    main = is_main_process()  # under torchrun only rank 0 writes files, logs and bars
    plugins: list = [DistributedTraining(), timer] if is_distributed() else [timer]
    if progress and main:
        plugins.append(ProgressBar(f"{strategy_name} seed {seed}", n))
    if settings.precision != "fp32":
        if settings.precision == "fp16" and is_distributed():
            raise UsageError(
                "--precision fp16 skips a step whose gradients overflow, which the processes of "
                "a torchrun run would decide apart; use --precision bf16 under torchrun"
            )
        plugins.insert(0, MixedPrecision(settings.precision))
    if settings.best_dev_epoch:
        plugins.append(
            BestEpochPlugin(
                benchmark.dev_stream,
                batch_size=settings.eval_batch_size,
                criterion=settings.dev_criterion,
            )
        )
    if settings.optimizer == "bertadam":
        plugins.append(BertAdamSchedule())
    diagnostics = ExSSNeTDiagnostics()
    ctr_diagnostics = CTRDiagnostics()
    hat_diagnostics = HATDiagnostics()
    run_loggers = loggers.build(out, strategy_name, seed, identity) if main else []
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(epoch=True, experience=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        *macro_f1_metrics(experience=True, stream=True),
        *task_inference_metrics(experience=True, stream=True),
        diagnostics,
        ctr_diagnostics,
        hat_diagnostics,
        loggers=run_loggers,
    )
    strategy = build_strategy(settings, registered, plugins=plugins, evaluator=evaluator)
    unsupported = unsupported_plugins(strategy) if is_distributed() else []
    if unsupported:
        raise UsageError(
            f"{strategy_name} uses plugins that do not support distributed training "
            f"({', '.join(unsupported)}); run it without torchrun, e.g. several runs at "
            "once with compare --jobs N"
        )
    record: dict[str, Any] = {
        "strategy": strategy_name,
        "seed": seed,
        "benchmark": settings.benchmark,
        "n_experiences": n,
        "initial_acc": None,
        "initial_f1": None,
        "acc_matrix": [],
        "f1_matrix": [],
        "train_s": [],
        "eval_s": [],
        "iteration_s": [],
        "iterations": [],
        "stored_bytes": [],
        "peak_memory_bytes": None,
        "diagnostics": [],
        "ctr_diagnostics": [],
        "hat_diagnostics": [],
    }
    if checkpoint_path.is_file():
        check_zip(checkpoint_path)
        meta = load_checkpoint(
            strategy,
            checkpoint_path,
            check_meta=lambda m: _check_same_run(
                m.get("identity", {}), identity, checkpoint_path, spec
            ),
        )
        record = meta["record"]
        # loading replaced the evaluator's metric objects with the saved ones
        diagnostics = _evaluator_metric(strategy, ExSSNeTDiagnostics)
        ctr_diagnostics = _evaluator_metric(strategy, CTRDiagnostics)
        hat_diagnostics = _evaluator_metric(strategy, HATDiagnostics)
        log(
            f"{strategy_name} seed {seed}: resuming after experience {len(record['acc_matrix'])}"
            f" of {n} ({checkpoint_path})"
        )

    def evaluate() -> tuple[list[float], list[float]]:
        metrics = strategy.eval(benchmark.test_stream)
        return (
            [experience_metric(metrics, "Top1_Acc_Exp", j) for j in range(n)],
            [experience_metric(metrics, "MacroF1_Exp", j) for j in range(n)],
        )

    try:
        if record["initial_acc"] is None:
            record["initial_acc"], record["initial_f1"] = evaluate()
        for i in range(len(record["acc_matrix"]), n):
            start = time.perf_counter()
            with PeakMemory(settings.device) as memory:
                strategy.train(benchmark.train_stream[i])
            trained = time.perf_counter()
            accuracies, f1s = evaluate()
            done = time.perf_counter()
            _record_experience(record, accuracies, f1s, memory, timer, strategy)
            record["train_s"].append(trained - start)
            record["eval_s"].append(done - trained)
            if diagnostics.result():
                record.setdefault("diagnostics", []).append(diagnostics.result())
            if ctr_diagnostics.result():
                record.setdefault("ctr_diagnostics", []).append(ctr_diagnostics.result())
            if hat_diagnostics.result():
                record.setdefault("hat_diagnostics", []).append(hat_diagnostics.result())
            for plugin in strategy.plugins:
                if isinstance(plugin, BestEpochPlugin):
                    record.setdefault("best_epoch", []).append(plugin.best_epoch)
                    record.setdefault("dev_acc", []).append(plugin.history[-1])
            if i == n - 1:
                record["inferred"] = _evaluate_inferring(strategy, benchmark, settings, n)
            if main:
                save_checkpoint(
                    strategy, checkpoint_path, meta={"identity": identity, "record": record}
                )
    finally:
        close_loggers(run_loggers)
    record["summary"] = summarize(record)
    if main:
        write_digested_json(record_path, {"identity": identity, "record": record})
    barrier()
    s = record["summary"]
    log(
        f"{strategy_name} seed {seed}: final accuracy {100 * s['final_accuracy']:.2f}%, "
        f"forgetting {100 * s['forgetting']:.2f} pts, train {s['train_time_s']:.1f} s"
    )
    return record


def _kept_record(
    record_path: Path,
    checkpoint_path: Path,
    identity: dict[str, Any],
    spec: BenchmarkSpec,
    *,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """The record of a finished run, its digest checked; a damaged record is rebuilt
    from the run's checkpoint, which holds it. ``None`` if the run is to resume from its
    checkpoint instead (a damaged record of a run its checkpoint has not finished).

    :raises RunFolderError: if the record is damaged and the checkpoint cannot rebuild it.
    """
    name = f"{identity['strategy']} seed {identity['seed']}"
    try:
        found = read_record(record_path)
    except DamagedFile as damage:
        try:
            meta = check_checkpoint(checkpoint_path)["meta"]
            record = meta["record"]
        except (CheckpointError, KeyError) as error:
            delete = [record_path, *([checkpoint_path] if checkpoint_path.exists() else [])]
            raise RunFolderError(
                f"{damage}, and its checkpoint cannot rebuild it ({error}); delete "
                f"{' and '.join(map(str, delete))} to train the run again, or restore a copy"
            ) from None
        _check_same_run(meta.get("identity", {}), identity, checkpoint_path, spec)
        done = len(record["acc_matrix"])
        if done < record["n_experiences"]:
            log(
                f"{name}: {damage}; its checkpoint has {done} of {record['n_experiences']} "
                "experiences"
            )
            return None
        record["summary"] = summarize(record)
        if is_main_process():
            write_digested_json(record_path, {"identity": identity, "record": record})
        log(f"{name}: {damage}; rebuilt it from its checkpoint {checkpoint_path}")
        return record
    _check_same_run(found["identity"], identity, record_path, spec)
    log(f"{name}: finished earlier, kept ({record_path})")
    return found["record"]


def _evaluator_metric(strategy, cls: type):
    """The evaluator's metric of class ``cls``."""
    (metric,) = [m for m in strategy.evaluator.metrics if isinstance(m, cls)]
    return metric


def _evaluate_inferring(strategy, benchmark, settings: Settings, n: int) -> dict[str, Any]:
    """The test stream evaluated once per task-inference method, without task labels
    (strategies with an ``exssnet_plugin`` only): per test experience the accuracy
    with inferred tasks and the task-inference accuracy, and the evaluation time."""
    plugin = getattr(strategy, "exssnet_plugin", None)
    if plugin is None:
        return {}
    results = {}
    for method in settings.inference_methods:
        plugin.task_inference = method
        start = time.perf_counter()
        try:
            metrics = strategy.eval(benchmark.test_stream)
        finally:
            plugin.task_inference = None
        results[method] = {
            "acc": [experience_metric(metrics, "Top1_Acc_Exp", j) for j in range(n)],
            "task_acc": [experience_metric(metrics, "TaskInference_Acc_Exp", j) for j in range(n)],
            "eval_s": time.perf_counter() - start,
        }
    return results


def _quiet(message: str) -> None:
    """The log of ranks other than 0 under torchrun: rank 0 says it once."""


def _record_experience(record, accuracies, f1s, memory, timer, strategy) -> None:
    """Append one experience's row of every measurement to ``record``."""
    if memory.peak is not None:
        record["peak_memory_bytes"] = max(record["peak_memory_bytes"] or 0, memory.peak)
    steps = timer.times.pop() if timer.times else []  # none: the strategy skipped training
    record["acc_matrix"].append(accuracies)
    record["f1_matrix"].append(f1s)
    record["iteration_s"].append(sum(steps) / len(steps) if steps else float("nan"))
    record["iterations"].append(len(steps))
    record["stored_bytes"].append(stored_bytes(strategy))


def compare(
    settings: Settings,
    strategies: list[str],
    seeds: list[int],
    *,
    out: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    threads: int | None = None,
    loggers: RunLoggers = RunLoggers(),
    config: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every strategy with every seed on ``settings.benchmark`` and write the
    report to ``out``: ``results.csv``, ``results.md``, ``runs.json``, the PNG plots and
    the TensorBoard logs. Returns the per-run records.

    The command holds the lock of ``out`` (:func:`~avalanche_ctr.run_folder.lock_folder`)
    and writes every file but the TensorBoard logs atomically; ``runs.json`` and the run
    records carry a digest, checked when they are read back.

    :param jobs: worker processes; above 1 the runs go to
        :func:`~avalanche_ctr.experiments.parallel.run_parallel` (same records, no
        progress bars), each worker with ``threads`` intra-op threads.
    :param loggers: Avalanche's loggers of every run besides TensorBoard.
    :param config: the command's resolved configuration
        (:func:`~avalanche_ctr.experiments.config.resolved_config`), written to
        ``out/config.yaml`` before the first run starts.
    :raises RunFolderError: if ``out`` is locked by another command or one of its files
        cannot be written or read; the message names the file and the fix.
    """
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if jobs > 1 and is_distributed():
        raise UsageError(
            "--jobs runs several runs at once, torchrun trains one run over several "
            "processes: use one of them"
        )
    log = log if is_main_process() else _quiet
    check_unique(strategies, "--strategies")
    check_seeds(seeds)
    checked = check_strategies(settings, strategies)
    loggers.check()
    log(
        f"{settings.benchmark}: {', '.join(strategies)}; seeds {seeds}; epochs "
        f"{settings.epochs}, batch {settings.batch_size}, lr {settings.lr}; output in {out}"
    )
    paths = [p for r in checked for seed in seeds for p in run_paths(out, r.name, seed)]
    with folder_errors(out):
        check_layout(out, [*paths, *(out / name for name in (*REPORT_FILES, CONFIG_FILE))])
        with _locked(out, log):
            return _compare(
                settings,
                checked,
                seeds,
                out=out,
                progress=progress,
                log=log,
                jobs=jobs,
                threads=threads,
                loggers=loggers,
                config=config,
            )


def _compare(
    settings: Settings,
    checked: list[StrategyRecord],
    seeds: list[int],
    *,
    out: Path,
    progress: bool,
    log: Callable[[str], None],
    jobs: int,
    threads: int | None,
    loggers: RunLoggers,
    config: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """:func:`compare` in the locked run folder ``out``."""
    strategies = [registered.name for registered in checked]
    out.mkdir(parents=True, exist_ok=True)
    if config is not None and is_main_process():
        atomic_write_bytes(out / CONFIG_FILE, config_yaml(config))
    if jobs > 1:
        from avalanche_ctr.experiments.parallel import run_parallel

        runs = [(registered.name, seed) for registered in checked for seed in seeds]
        records = run_parallel(
            partial(run_one, loggers=loggers),
            settings,
            runs,
            out=out,
            jobs=jobs,
            threads=threads,
            log=log,
        )
    else:
        records = [
            _run(settings, registered, seed, out=out, progress=progress, log=log, loggers=loggers)
            for registered in checked
            for seed in seeds
        ]
    if is_main_process():
        write_digested_json(
            out / "runs.json",
            {
                "settings": settings.config(strategies),
                "tasks": settings.task_names,
                "runs": records,
            },
        )
        write_report(records, settings, out, ablation_pairs(strategies))
    return records


def ablation_pairs(strategies: list[str]) -> dict[str, str]:
    """The strategies of ``strategies`` whose registered ablation also runs, mapped to it."""
    return {
        name: get_strategy(name).ablation
        for name in strategies
        if get_strategy(name).ablation in strategies
    }
