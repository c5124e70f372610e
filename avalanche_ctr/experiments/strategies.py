"""The strategies the command line knows, one :class:`StrategyRecord` each.

A record says everything about a strategy that the command line, ``compare``
and the report need: its name, the modalities it runs on, its factory, and its
own :class:`Option` s with their defaults (for Avalanche's baselines, their
hyper-parameters). Adding a method is one call to :func:`register`: the
command line gets a flag per option (``--density``, ``--ewc-lambda``, ...),
``--help`` lists it, and ``compare`` can run it.

Avalanche's baselines are used through Avalanche's classes. Every strategy of a
run gets the same backbone shape (image) or encoder (text), the same epochs per
experience, batch size and Adam learning rate:

* ExSSNeT / SSNeT split the epochs into ``ceil(epochs / 2)`` mask epochs and the
  rest weight epochs, or, with ``weight_epochs`` set, train ``epochs`` mask epochs
  and then ``weight_epochs`` weight epochs (the official split: the mask phase as
  long as SupSup's); SupSup trains its mask for all of them; on text they mask a
  Kim-CNN over the frozen encoder's token states (ExSSNeT's text model, the
  benchmark's ``supermask_model``);
* PackNet trains ``epochs - post_prune_epochs`` epochs, prunes, and fine-tunes;
* SI, MAS, Replay and PackNet run as ``Naive`` plus their Avalanche plugin, patched
  in :mod:`avalanche_ctr.compat` (Avalanche's ``Replay`` is ``Naive`` plus
  ``ReplayPlugin`` too).

The penalty weights of EWC, SI, MAS and LwF were picked with
``benchmarks/baseline_sweep.py`` on split_digits and split_fmnist
(``benchmarks/RESULTS.md``); the rest are Avalanche's defaults or, for LwF's
temperature and PackNet, the values of their papers.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from avalanche.training import AGEM, EWC, Cumulative, LwF, Naive
from avalanche.training.templates import SupervisedTemplate

from avalanche_ctr.compat import (
    CopyingSIPlugin,
    PackNetMultiHead,
    PostAdaptReplayPlugin,
    ZeroLossMASPlugin,
)
from avalanche_ctr.experiments.errors import UsageError
from avalanche_ctr.experiments.validation import check_finite
from avalanche_ctr.exssnet.supermask_net import (
    OUTPUT_FLOOR_DEFAULT,
    OUTPUT_TOPK_DEFAULT,
    WEIGHT_SCALE_DEFAULT,
    check_density,
)

__all__ = [
    "Option",
    "StrategyContext",
    "StrategyRecord",
    "STRATEGIES",
    "register",
    "unregister",
    "get_strategy",
    "check_strategy_for",
    "default_strategies",
    "all_options",
    "resolve_options",
    "DENSITY",
    "MASK_LR",
    "WEIGHT_LR",
    "LR_SCHEDULE",
    "HAT_LR",
    "HAT_OPTIONS",
    "WARMUP",
    "KSM_INIT",
    "OFFICIAL_BATCH_MIXING",
    "TRAIN_LAYERNORM",
    "GATE_BIAS",
    "MASK_INIT_MEAN",
    "KKT",
    "KKT_PRESET",
    "KKT_SAMPLES",
    "KKT_K",
    "KKT_FEATURES",
    "KKT_INIT",
    "KKT_LIFT",
    "OUTPUT_TOPK",
    "OUTPUT_FLOOR",
    "WEIGHT_EPOCHS",
    "ENCODER_LAYER",
]


@dataclass(frozen=True)
class Option:
    """An option of a strategy, on the command line as ``--<name with dashes>``.

    :param name: its key in :attr:`Settings.options
        <avalanche_ctr.experiments.runner.Settings>`; strategies that declare the same
        name share the option (and must agree on its default and type).
    :param default: its value when neither the user nor the benchmark sets it.
    :param help: one line for ``--help``.
    :param type: parses the command-line text.
    :param check: validates a value (returns it, or raises ``ValueError`` saying what
        is wrong and what to give instead).
    :param kwarg: the keyword the strategy's class takes (default: ``name``).
    """

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = float
    check: Callable[[Any], Any] | None = None
    kwarg: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def keyword(self) -> str:
        return self.kwarg or self.name


@dataclass
class StrategyContext:
    """What a strategy factory gets.

    :param settings: the run's settings (epochs, batch size, lr, ...).
    :param options: the strategy's own options, resolved (name -> value).
    :param backbone: makes the benchmark's backbone (image benchmarks).
    :param encoder: loads a fresh copy of the text encoder (text benchmarks).
    :param common: keyword arguments every strategy gets (batch sizes, device,
        plugins, evaluator, criterion).
    """

    settings: Any
    options: dict[str, Any]
    backbone: Callable[[], torch.nn.Module] | None
    encoder: Callable[[], torch.nn.Module] | None
    common: dict[str, Any]

    def keywords(self, record: StrategyRecord) -> dict[str, Any]:
        """The record's options as keyword arguments of its class."""
        return {opt.keyword: self.options[opt.name] for opt in record.options}

    def model(self, *, adapters: bool = True) -> torch.nn.Module:
        """The benchmark's backbone (image) or an ``AdapterBERT`` on the encoder (text)."""
        if self.backbone is not None:
            return self.backbone()
        from avalanche_ctr.models import AdapterBERT

        return AdapterBERT(self.encoder(), bottleneck=self.settings.bottleneck, adapters=adapters)

    def optimizer(
        self, model: torch.nn.Module, *, trainable_only: bool = True
    ) -> torch.optim.Optimizer:
        """The run's optimizer (``--optimizer``) at its learning rate over the model's
        trainable parameters (every parameter with ``trainable_only=False``, for the
        strategies whose plugin points the optimizer at each phase's parameters):
        Adam, or the official CTR code's
        :class:`~avalanche_ctr.training.bert_adam.BertAdam` with its warm-up fraction
        from ``--warmup``."""
        params = [p for p in model.parameters() if p.requires_grad or not trainable_only]
        if self.settings.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.settings.lr)
        from avalanche_ctr.training.bert_adam import BertAdam, official_no_decay

        return BertAdam(
            params,
            lr=self.settings.lr,
            warmup=self.settings.options.get("warmup"),
            no_decay=official_no_decay(model),
        )


@dataclass(frozen=True)
class StrategyRecord:
    """A strategy of the command line.

    :param name: its command-line name.
    :param description: one line for ``--help`` and the reports.
    :param modalities: ``{"image"}``, ``{"text"}`` or both.
    :param build: ``build(context, record) -> strategy``.
    :param options: its own options with their defaults.
    :param requirement: why it needs its modalities (said when a user asks for
        another one).
    :param ours: implemented by avalanche-ctr (else an Avalanche baseline).
    :param ablation: the strategy it is compared with seed by seed in the report (its
        own ablation, which shares its initialisation and data order).
    """

    name: str
    description: str
    modalities: frozenset[str]
    build: Callable[[StrategyContext, StrategyRecord], SupervisedTemplate]
    options: tuple[Option, ...] = ()
    requirement: str = ""
    ours: bool = False
    ablation: str | None = None

    def defaults(self) -> dict[str, Any]:
        return {opt.name: opt.default for opt in self.options}


STRATEGIES: dict[str, StrategyRecord] = {}
"""Every registered strategy by name, in registration order (ours first)."""


def register(record: StrategyRecord) -> StrategyRecord:
    """Make ``record`` known to the command line and ``compare``.

    :raises ValueError: if the name is taken, or an option it shares with another
        strategy has another default or type.
    """
    if record.name in STRATEGIES:
        raise ValueError(f"a strategy named {record.name!r} is already registered")
    if not record.modalities or not record.modalities <= {"image", "text"}:
        raise ValueError(f"modalities must be 'image' and/or 'text', got {record.modalities}")
    known = all_options()
    for opt in record.options:
        other = known.get(opt.name)
        if other is not None and (other.default, other.type) != (opt.default, opt.type):
            raise ValueError(
                f"option {opt.name!r} of {record.name!r} clashes with the option of that name "
                f"already registered (default {other.default!r}); give it another name"
            )
    STRATEGIES[record.name] = record
    return record


def unregister(name: str) -> None:
    """Forget the strategy called ``name`` (e.g. a test's toy strategy)."""
    STRATEGIES.pop(name, None)


def all_options() -> dict[str, Option]:
    """Every option of the registered strategies, by name (the command-line flags)."""
    options: dict[str, Option] = {}
    for record in STRATEGIES.values():
        for opt in record.options:
            options.setdefault(opt.name, opt)
    return options


def get_strategy(name: str) -> StrategyRecord:
    """The strategy called ``name``; :class:`UsageError` listing the valid names otherwise."""
    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def check_strategy_for(name: str, modality: str, benchmarks: Mapping[str, str]) -> StrategyRecord:
    """The strategy ``name``, if it runs on ``modality``; :class:`UsageError` saying why not.

    :param benchmarks: benchmark name -> modality (to name the right benchmarks).
    """
    record = get_strategy(name)
    if modality in record.modalities:
        return record
    needed = sorted(record.modalities)[0]
    names = ", ".join(b for b, m in benchmarks.items() if m == needed)
    article = "an" if needed[0] in "aeiou" else "a"
    reason = f": {record.requirement}" if record.requirement else ""
    alternatives = ", ".join(default_strategies(modality))
    raise UsageError(
        f"{name} needs {article} {needed} benchmark ({names}){reason}. On {modality} use "
        f"{alternatives}"
    )


def default_strategies(modality: str) -> list[str]:
    """Every strategy that runs on ``modality``, in registration order (ours first)."""
    return [name for name, record in STRATEGIES.items() if modality in record.modalities]


# ----------------------------------------------------------------------------- ours
DENSITY = Option(
    "density",
    0.1,
    "supermask density: fraction of each layer's weights a task's mask keeps",
    check=check_density,
)


def _positive_or_none(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ValueError(f"must be a positive learning rate, got {value}")
    return value


def _one_of(what: str, choices: Callable[[], tuple[str, ...]]) -> Callable[[str], str]:
    """A check that a value is one of ``choices()`` (read when checking, so that the
    method modules are imported only then)."""

    def check(value: str) -> str:
        valid = choices()
        if value not in valid:
            raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(valid)}")
        return value

    return check


def _lr_schedules() -> tuple[str, ...]:
    from avalanche_ctr.exssnet.lifecycle import LR_SCHEDULES

    return tuple(LR_SCHEDULES)


def _ksm_inits() -> tuple[str, ...]:
    from avalanche_ctr.ctr.ctr_model import KSM_INITS

    return KSM_INITS


MASK_LR = Option(
    "mask_lr",
    None,
    "learning rate of the supermask phase (default: --lr)",
    check=_positive_or_none,
)
WEIGHT_LR = Option(
    "weight_lr",
    None,
    "learning rate of ExSSNeT's weight phase (default: --lr)",
    check=_positive_or_none,
)
LR_SCHEDULE = Option(
    "lr_schedule",
    "constant",
    "learning-rate schedule within each supermask phase: constant or cosine",
    type=str,
    check=_one_of("schedule", _lr_schedules),
)


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"must be on or off, got {value!r}")
    return value == "on"


def _bool_or_none(value: bool | None) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"must be True, False or None (the strategy's default), got {value!r}")
    return value


def _non_negative_or_none(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"must be a number of epochs >= 0, got {value!r}")
    return value


KKT = Option(
    "kkt",
    None,
    "KNN-based knowledge transfer for each new mask: on or off (default: on for exssnet "
    "and ssnet, off for supsup, as in the paper)",
    type=_on_off,
    check=_bool_or_none,
)


def _kkt_choices(name: str) -> Callable[[], tuple[str, ...]]:
    def choices() -> tuple[str, ...]:
        from avalanche_ctr.exssnet import kkt

        return tuple(getattr(kkt, name))

    return choices


def _topk_rules() -> tuple[str, ...]:
    from avalanche_ctr.masking import TOPK_RULES

    return TOPK_RULES


def _or_none(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _count(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _floor(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a number of weights >= 0, got {value!r}")
    return value


KKT_PRESET = Option(
    "kkt_preset",
    None,
    "KKT's settings: default, or official (1,280 samples, 200 neighbours, features before "
    "the ReLU, scores copied); --kkt-samples/-k/-features/-init override it",
    type=str,
    check=_or_none(_one_of("KKT preset", _kkt_choices("KKT_PRESETS"))),
)
KKT_SAMPLES = Option(
    "kkt_samples",
    None,
    "training samples of a new task that KKT reads (default: the preset's)",
    type=int,
    check=_or_none(_count),
)
KKT_K = Option(
    "kkt_k",
    None,
    "neighbours of KKT's KNN classifier (default: the preset's)",
    type=int,
    check=_or_none(_count),
)
KKT_FEATURES = Option(
    "kkt_features",
    None,
    "where KKT reads features: post_activation (the output layer's input) or "
    "pre_activation (the layer before, before its ReLU) (default: the preset's)",
    type=str,
    check=_or_none(_one_of("KKT feature point", _kkt_choices("KKT_FEATURES"))),
)
KKT_INIT = Option(
    "kkt_init",
    None,
    "how KKT starts a new mask: lift_mask (the chosen task's mask over fresh scores) or "
    "copy_scores (its float scores, kept for every task: 32 bits per weight and task) "
    "(default: the preset's)",
    type=str,
    check=_or_none(_one_of("KKT initialisation", _kkt_choices("KKT_INITS"))),
)


def _kkt_lift_text(text: str) -> str | float:
    """``--kkt-lift``: a rule's name as it is, anything else as a number."""
    from avalanche_ctr.exssnet.kkt import KKT_LIFT_RULES

    if text in KKT_LIFT_RULES:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {', '.join(KKT_LIFT_RULES)} or a positive number, got {text!r}"
        ) from None


def _kkt_lift(value: str | float) -> str | float:
    from avalanche_ctr.exssnet.kkt import KKT_LIFT_RULES

    if isinstance(value, str) and value in KKT_LIFT_RULES:
        return value
    return _positive(value)


KKT_LIFT = Option(
    "kkt_lift",
    None,
    "how far KKT's lift_mask lifts the chosen task's mask entries: a number, in units of "
    "the largest fresh score, or steps (what a fifth of the mask phase's steps times its "
    "rate undo, within 1-10, with Adam) (default: exssnet/ssnet steps, supsup the "
    "preset's 1)",
    type=_kkt_lift_text,
    check=_or_none(_kkt_lift),
)
OUTPUT_TOPK = Option(
    "output_topk",
    None,
    "top-k rule of a masked output layer (--output-layer masked): unit (density of each "
    "unit's fan-in), layer (density of the layer, the official code) or layer_floor (the "
    f"layer's, at least --output-floor per unit) (default: {OUTPUT_TOPK_DEFAULT})",
    type=str,
    check=_or_none(_one_of("output top-k rule", _topk_rules)),
)
OUTPUT_FLOOR = Option(
    "output_floor",
    None,
    f"weights every output unit keeps under --output-topk layer_floor (default: "
    f"{OUTPUT_FLOOR_DEFAULT})",
    type=int,
    check=_or_none(_floor),
)


def _weight_scale_text(text: str) -> str | float:
    """``--weight-scale``: a rule's name as it is, anything else as a number."""
    from avalanche_ctr.exssnet.supermask import WEIGHT_SCALES

    if text in WEIGHT_SCALES:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {', '.join(WEIGHT_SCALES)} or a positive number, got {text!r}"
        ) from None


def _weight_scale(value: str | float) -> str | float:
    from avalanche_ctr.exssnet.supermask import check_weight_scale

    return check_weight_scale(value)


WEIGHT_SCALE = Option(
    "weight_scale",
    None,
    "factor on the supermask layers' signed-constant weights: none (1, the official "
    "code's), density (density^(-1/4), ours: larger logits at a low density), low_density "
    "(min(1, density / 0.1)^(-1/4), ours: 1 from density 0.1 up) or a positive number "
    f"(default: supsup low_density, exssnet/ssnet {WEIGHT_SCALE_DEFAULT})",
    type=_weight_scale_text,
    check=_or_none(_weight_scale),
)
_SUPERMASK_OPTIONS = (
    KKT_PRESET,
    KKT_SAMPLES,
    KKT_K,
    KKT_FEATURES,
    KKT_INIT,
    KKT_LIFT,
    OUTPUT_TOPK,
    OUTPUT_FLOOR,
    WEIGHT_SCALE,
)

WEIGHT_EPOCHS = Option(
    "weight_epochs",
    None,
    "train --epochs mask epochs, then this many weight epochs (the official split, the "
    "mask phase as long as SupSup's; default: ceil(epochs / 2) mask epochs, the rest "
    "weight epochs, the same epochs as SupSup)",
    type=int,
    check=_non_negative_or_none,
)


def _layer_or_none(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"must be a layer index, got {value!r}")
    return value


ENCODER_LAYER = Option(
    "encoder_layer",
    None,
    "text: the frozen encoder layer whose token states the supermask Kim-CNN reads (0: "
    "the embeddings, negative: from the last; default: the last layer, as the official "
    "model)",
    type=int,
    check=_layer_or_none,
)
HAT_LR = Option(
    "hat_lr",
    0.05,
    "learning rate of the HAT mask embeddings of hat, ctr and adapter_hat, their own "
    "parameter group (Adam is per parameter: --hat-lr equal to --lr trains them as the "
    "other parameters)",
    check=_positive_or_none,
)


def _warmup(value: float | None) -> float | None:
    if value is not None and not 0 <= value < 1:
        raise ValueError(f"must be a warm-up fraction in [0, 1), got {value}")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


MASK_INIT_MEAN = Option(
    "mask_init_mean",
    0.0,
    "CTR and adapter_hat: mean of the HAT mask embeddings' N(mean, 1) start (HAT: 0); "
    "a task starts with a fraction Phi(mean) of every layer's units on, e.g. 0.16 at -1",
    check=_finite,
)
GATE_BIAS = Option(
    "gate_bias",
    0.0,
    "CTR: initial margin of every KSM gate's 'use' logit over 'skip' (0: PyTorch's init, "
    "gates at chance; b > 0: sources start on with probability about sigmoid(b))",
    check=_finite,
)
KSM_INIT = Option(
    "ksm_init",
    "zero",
    "CTR's KSM projection starts at zero, or random as the official code",
    type=str,
    check=_one_of("KSM initialisation", _ksm_inits),
)
OFFICIAL_BATCH_MIXING = Option(
    "official_batch_mixing",
    False,
    "ctr_official: on reproduces the official code's view/repeat calls that mix the samples "
    "of a batch (only to measure that leak; benchmarks/ctr_leak_test.py)",
    type=_on_off,
    check=_bool_or_none,
)
TRAIN_LAYERNORM = Option(
    "train_layernorm",
    False,
    "CTR and adapter_hat: on trains the encoder's LayerNorms with every task, shared and "
    "unprotected, as the official code (its regime; earlier tasks may forget)",
    type=_on_off,
    check=_bool_or_none,
)
WARMUP = Option(
    "warmup",
    None,
    "BERT's warmup_linear schedule per task with this warm-up fraction (default: constant "
    "learning rate)",
    check=_warmup,
)
_CTR_NEEDS = "it works inside a BERT-family encoder"


def _supermask_model(ctx: StrategyContext) -> torch.nn.Module:
    """The image benchmark's backbone, or the text benchmark's supermask network over
    a fresh copy of the encoder."""
    if ctx.backbone is not None:
        return ctx.backbone()
    build = ctx.settings.spec.supermask_model
    if build is None:
        raise UsageError(f"{ctx.settings.benchmark} has no supermask model for ExSSNeT/SupSup")
    layer = ctx.options["encoder_layer"]  # its range was checked with the settings
    if layer is None:
        return build(ctx.settings, ctx.encoder())
    return build(ctx.settings, ctx.encoder(), layer=layer)


def _supsup(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
    from avalanche_ctr.training import SupSup

    model = _supermask_model(ctx)
    optimizer = ctx.optimizer(model, trainable_only=False)
    return SupSup(
        model=model,
        optimizer=optimizer,
        train_epochs=ctx.settings.epochs,
        input_statistics="statistics" in ctx.settings.inference_methods,
        **_supermask_keywords(ctx, record),
        **ctx.common,
    )


def _supermask_keywords(ctx: StrategyContext, record: StrategyRecord) -> dict[str, Any]:
    """The record's options as keywords, leaving out ``kkt``, ``kkt_lift``, the output
    top-k rule and ``weight_scale`` when unset (each class's own default),
    ``weight_epochs`` (the factory splits the epochs) and ``encoder_layer`` (the model's)."""
    keywords = ctx.keywords(record)
    unset_is_default = ("kkt", "kkt_lift", "output_topk", "output_floor", "weight_scale")
    for name in unset_is_default:  # unset: the class's default
        if name in keywords and keywords[name] is None:
            del keywords[name]
    keywords.pop("weight_epochs", None)
    keywords.pop("encoder_layer", None)
    return keywords


def _exssnet(exclusive: bool):
    def build(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
        from avalanche_ctr.training import ExSSNeT

        epochs = ctx.settings.epochs
        weight_epochs = ctx.options["weight_epochs"]
        if weight_epochs is None:
            mask_epochs = math.ceil(epochs / 2)
            weight_epochs = epochs - mask_epochs
        else:
            mask_epochs = epochs
        model = _supermask_model(ctx)
        return ExSSNeT(
            model=model,
            optimizer=ctx.optimizer(model, trainable_only=False),
            mask_epochs=mask_epochs,
            weight_epochs=weight_epochs,
            exclusive=exclusive,
            input_statistics="statistics" in ctx.settings.inference_methods,
            **_supermask_keywords(ctx, record),
            **ctx.common,
        )

    return build


_CTR_MODEL_OPTIONS = (
    "ksm_init",
    "gate_bias",
    "mask_init_mean",
    "official_batch_mixing",
    "train_layernorm",
)


def _ctr(knowledge_sharing: bool, ksm: str = "protected"):
    def build(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
        from avalanche_ctr.models import CTRModel
        from avalanche_ctr.training import CTR

        options = ctx.keywords(record)
        model_options = {k: options.pop(k) for k in _CTR_MODEL_OPTIONS if k in options}
        if ksm == "official":  # it allocates every task of the stream up front
            model_options.update(ksm=ksm, n_tasks=len(ctx.settings.task_names))
        model = CTRModel(
            ctx.encoder(),
            bottleneck=ctx.settings.bottleneck,
            knowledge_sharing=knowledge_sharing,
            **model_options,
        )
        return CTR(
            model=model,
            optimizer=ctx.optimizer(model, trainable_only=False),
            train_epochs=ctx.settings.epochs,
            **options,
            **ctx.common,
        )

    return build


# ----------------------------------------------------------------------------- baselines
def _baseline(cls: type) -> Callable[[StrategyContext, StrategyRecord], SupervisedTemplate]:
    """An Avalanche strategy class on the run's model, with the record's options."""

    def build(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
        model = ctx.model()
        return cls(
            model=model,
            optimizer=ctx.optimizer(model),
            train_epochs=ctx.settings.epochs,
            **ctx.keywords(record),
            **ctx.common,
        )

    return build


def _naive_with(
    plugin_cls: type,
) -> Callable[[StrategyContext, StrategyRecord], SupervisedTemplate]:
    """Avalanche's ``Naive`` plus ``plugin_cls(**options)`` (for the baselines that run as
    a plugin we patch)."""

    def build(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
        model = ctx.model()
        common = dict(ctx.common)
        common["plugins"] = [*common["plugins"], plugin_cls(**ctx.keywords(record))]
        return Naive(
            model=model, optimizer=ctx.optimizer(model), train_epochs=ctx.settings.epochs, **common
        )

    return build


def _frozen(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
    model = ctx.model(adapters=False)
    return Naive(
        model=model, optimizer=ctx.optimizer(model), train_epochs=ctx.settings.epochs, **ctx.common
    )


def _with_warmup(ctx: StrategyContext) -> dict[str, Any]:
    """The common keywords, with BERT's warm-up schedule as a plugin when ``--warmup``
    is given (CTR's and adapter_hat's schedule, for the baselines paired with them)."""
    from avalanche_ctr.ctr.lifecycle import WarmupLinearPlugin

    common = dict(ctx.common)
    if ctx.options["warmup"] is not None:
        common["plugins"] = [*common["plugins"], WarmupLinearPlugin(ctx.options["warmup"])]
    return common


def _one(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
    from avalanche_ctr.models import AdapterBERT

    model = AdapterBERT(ctx.encoder(), bottleneck=ctx.settings.bottleneck, per_task_adapters=True)
    return Naive(
        model=model,
        optimizer=ctx.optimizer(model),
        train_epochs=ctx.settings.epochs,
        **_with_warmup(ctx),
    )


def _mtl(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
    from avalanche_ctr.training import MultiTaskJoint

    model = ctx.model()
    return MultiTaskJoint(
        model=model,
        optimizer=ctx.optimizer(model),
        train_epochs=ctx.settings.epochs,
        n_tasks=len(ctx.settings.task_names),
        **_with_warmup(ctx),
    )


def _packnet(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
    from avalanche.models.packnet import PackNetPlugin

    post_prune = ctx.options["packnet_post_prune_epochs"]
    if ctx.settings.epochs <= post_prune:
        raise UsageError(
            f"packnet prunes after epochs - {post_prune} epochs and fine-tunes after; it "
            f"needs --epochs >= {post_prune + 1}, got {ctx.settings.epochs}"
        )
    if ctx.settings.output_layer != "heads":
        raise UsageError(
            "packnet keeps per-task heads outside the pruned network; run it with "
            "--output-layer heads"
        )
    model = PackNetMultiHead(ctx.backbone())
    common = dict(ctx.common)
    common["plugins"] = [*common["plugins"], PackNetPlugin(**ctx.keywords(record))]
    return Naive(
        model=model, optimizer=ctx.optimizer(model), train_epochs=ctx.settings.epochs, **common
    )


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be positive, got {value}")
    return value


def _non_negative(value: float) -> float:
    if not value >= 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"must be in [0, 1], got {value}")
    return value


HAT_OPTIONS = (
    Option("hat_smax", 400.0, "HAT's largest mask scale s_max", check=_positive, kwarg="s_max"),
    Option(
        "hat_lambda",
        0.75,
        "HAT's mask regulariser weight (the paper's c, the official code's lamb)",
        check=_non_negative,
        kwarg="mask_reg",
    ),
    Option(
        "hat_thres_cosh",
        50.0,
        "HAT's clamp of s*e in the embedding-gradient compensation",
        check=_positive,
        kwarg="thres_cosh",
    ),
    HAT_LR,
)
"""HAT's options (``hat``), with the embedding learning rate CTR shares."""


def _hat(ctx: StrategyContext, record: StrategyRecord) -> SupervisedTemplate:
    from avalanche_ctr.hat import HAT

    if ctx.settings.output_layer != "heads":
        raise UsageError(
            "hat gives every task its own head, as the paper's models; run it with "
            "--output-layer heads"
        )
    model = ctx.backbone()
    return HAT(
        model=model,
        optimizer=ctx.optimizer(model, trainable_only=False),
        train_epochs=ctx.settings.epochs,
        **ctx.keywords(record),
        **ctx.common,
    )


_IMAGE = frozenset({"image"})
_TEXT = frozenset({"text"})
_BOTH = _IMAGE | _TEXT

for _record in (
    StrategyRecord(
        "exssnet",
        "ExSSNeT (ours): supermasks + exclusive weights + KKT",
        _BOTH,
        _exssnet(exclusive=True),
        (
            DENSITY,
            MASK_LR,
            WEIGHT_LR,
            LR_SCHEDULE,
            KKT,
            *_SUPERMASK_OPTIONS,
            WEIGHT_EPOCHS,
            ENCODER_LAYER,
        ),
        ours=True,
        ablation="supsup",
    ),
    StrategyRecord(
        "ssnet",
        "SSNeT (ours): ExSSNeT without exclusivity",
        _BOTH,
        _exssnet(exclusive=False),
        (
            DENSITY,
            MASK_LR,
            WEIGHT_LR,
            LR_SCHEDULE,
            KKT,
            *_SUPERMASK_OPTIONS,
            WEIGHT_EPOCHS,
            ENCODER_LAYER,
        ),
        ours=True,
    ),
    StrategyRecord(
        "supsup",
        "SupSup (ours): one supermask per task, fixed weights",
        _BOTH,
        _supsup,
        (DENSITY, MASK_LR, LR_SCHEDULE, KKT, *_SUPERMASK_OPTIONS, ENCODER_LAYER),
        ours=True,
    ),
    StrategyRecord(
        "ctr",
        "CTR (ours): capsules, transfer routing and HAT in BERT",
        _TEXT,
        _ctr(knowledge_sharing=True),
        (HAT_LR, WARMUP, KSM_INIT, GATE_BIAS, MASK_INIT_MEAN, TRAIN_LAYERNORM),
        requirement=_CTR_NEEDS,
        ours=True,
        ablation="adapter_hat",
    ),
    StrategyRecord(
        "ctr_official",
        "CTR with the official code's plastic KSM (ours): earlier capsules and the shared "
        "routing retrained by later tasks",
        _TEXT,
        _ctr(knowledge_sharing=True, ksm="official"),
        (
            HAT_LR,
            WARMUP,
            KSM_INIT,
            GATE_BIAS,
            MASK_INIT_MEAN,
            OFFICIAL_BATCH_MIXING,
            TRAIN_LAYERNORM,
        ),
        requirement=_CTR_NEEDS,
        ours=True,
        ablation="adapter_hat",
    ),
    StrategyRecord(
        "adapter_hat",
        "CTR without its KSM (ours): adapters + HAT",
        _TEXT,
        _ctr(knowledge_sharing=False),
        (HAT_LR, WARMUP, MASK_INIT_MEAN, TRAIN_LAYERNORM),
        requirement=_CTR_NEEDS,
        ours=True,
    ),
    StrategyRecord(
        "hat",
        "HAT (ours): per-task hard attention masks on the units of any model",
        _IMAGE,
        _hat,
        HAT_OPTIONS,
        "hat masks the Linear / Conv layers of a network trained from scratch",
        ours=True,
    ),
    StrategyRecord(
        "frozen",
        "frozen encoder + per-task heads (Naive)",
        _TEXT,
        _frozen,
        requirement="it is the frozen-encoder baseline of the text benchmarks",
    ),
    StrategyRecord(
        "one",
        "ONE: a fresh adapters model (adapters + head) per task over the frozen encoder",
        _TEXT,
        _one,
        (WARMUP,),
        requirement="it trains adapters inside a BERT-family encoder",
    ),
    StrategyRecord(
        "mtl",
        "MTL: every task trained jointly with its head at the last experience (upper bound)",
        _TEXT,
        _mtl,
        (WARMUP,),
        requirement="it trains adapters inside a BERT-family encoder",
    ),
    StrategyRecord("naive", "Avalanche Naive (fine-tuning)", _BOTH, _baseline(Naive)),
    StrategyRecord(
        "ewc",
        "Avalanche EWC",
        _BOTH,
        _baseline(EWC),
        (Option("ewc_lambda", 1e5, "EWC's penalty weight", check=_non_negative),),
    ),
    StrategyRecord(
        "si",
        "Avalanche SI (Naive + SynapticIntelligencePlugin, CPU fix)",
        _BOTH,
        _naive_with(CopyingSIPlugin),
        (Option("si_lambda", 1000.0, "SI's penalty weight", check=_non_negative),),
    ),
    StrategyRecord(
        "lwf",
        "Avalanche LwF",
        _BOTH,
        _baseline(LwF),
        (
            Option(
                "lwf_alpha", 10.0, "LwF's distillation weight", check=_non_negative, kwarg="alpha"
            ),
            Option(
                "lwf_temperature",
                2.0,
                "LwF's softmax temperature",
                check=_positive,
                kwarg="temperature",
            ),
        ),
    ),
    StrategyRecord(
        "mas",
        "Avalanche MAS (Naive + MASPlugin, zero-loss fix)",
        _BOTH,
        _naive_with(ZeroLossMASPlugin),
        (
            Option(
                "mas_lambda_reg",
                10.0,
                "MAS's penalty weight",
                check=_non_negative,
                kwarg="lambda_reg",
            ),
            Option("mas_alpha", 0.5, "MAS's importance decay", check=_fraction, kwarg="alpha"),
        ),
    ),
    StrategyRecord(
        "packnet",
        "Avalanche PackNet (Naive + PackNetPlugin)",
        _IMAGE,
        _packnet,
        (
            Option(
                "packnet_prune_proportion",
                0.5,
                "PackNet's fraction of free weights pruned per task",
                check=_fraction,
                kwarg="prune_proportion",
            ),
            Option(
                "packnet_post_prune_epochs",
                1,
                "PackNet's fine-tuning epochs after pruning",
                type=int,
                check=_non_negative,
                kwarg="post_prune_epochs",
            ),
        ),
        "Avalanche's PackNet prunes the Linear / Conv2d layers of a network trained from scratch",
    ),
    StrategyRecord(
        "replay",
        "Avalanche Replay (Naive + ReplayPlugin, without its deprecated call)",
        _BOTH,
        _naive_with(PostAdaptReplayPlugin),
        (
            Option(
                "replay_mem_size",
                200,
                "Replay's memory (samples; naive is replay without one)",
                type=int,
                check=_positive,
                kwarg="mem_size",
            ),
        ),
    ),
    StrategyRecord(
        "agem",
        "Avalanche AGEM",
        _BOTH,
        _baseline(AGEM),
        (
            Option(
                "agem_patterns_per_exp",
                64,
                "AGEM's memory per experience",
                type=int,
                check=_positive,
                kwarg="patterns_per_exp",
            ),
            Option(
                "agem_sample_size",
                64,
                "AGEM's memory sample per step",
                type=int,
                check=_positive,
                kwarg="sample_size",
            ),
        ),
    ),
    StrategyRecord(
        "cumulative",
        "Avalanche Cumulative (retrains on all data so far)",
        _BOTH,
        _baseline(Cumulative),
    ),
):
    register(_record)
del _record


def resolve_options(
    record: StrategyRecord, given: Mapping[str, Any], benchmark_defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The record's options: the user's value, else the benchmark's default, else the
    option's own default; each checked once here (:class:`UsageError` naming the flag;
    a non-finite number is refused whatever the option)."""
    values = {}
    for opt in record.options:
        value = given.get(opt.name)
        if value is None:
            value = benchmark_defaults.get(opt.name, opt.default)
        check_finite(value, opt.flag)
        if opt.check is not None:
            try:
                value = opt.check(value)
            except (TypeError, ValueError) as error:
                raise UsageError(f"{opt.flag}: {error}") from None
        values[opt.name] = value
    return values
