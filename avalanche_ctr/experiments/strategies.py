"""The strategies the command line knows: ours and Avalanche's own baselines.

Avalanche's baselines are used through Avalanche's classes, with their
hyper-parameters in :data:`BASELINE_HPARAMS`. Every strategy of a run gets the
same backbone shape (image) or encoder (text), the same epochs per experience,
batch size and Adam learning rate:

* ExSSNeT / SSNeT split the epochs into ``ceil(epochs / 2)`` mask epochs and the
  rest weight epochs; SupSup trains its mask for all of them;
* PackNet trains ``epochs - 1`` epochs, prunes, and fine-tunes for 1 epoch. It runs
  as ``Naive`` plus Avalanche's ``PackNetPlugin`` because Avalanche 0.6's ``PackNet``
  wrapper drops user plugins.
* SI runs as ``Naive`` plus :class:`CopyingSIPlugin`, Avalanche's
  ``SynapticIntelligencePlugin`` with a fix for a CPU bug of Avalanche 0.6 (see there);
* MAS runs as ``Naive`` plus :class:`ZeroLossMASPlugin`, Avalanche's ``MASPlugin`` that
  no longer stops training when a mini-batch's loss is exactly 0 (see there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from avalanche.training import AGEM, EWC, Cumulative, LwF, Naive, Replay
from avalanche.training.plugins import MASPlugin, SynapticIntelligencePlugin
from avalanche.training.templates import SupervisedTemplate

from avalanche_ctr.experiments.errors import UsageError

__all__ = [
    "StrategySpec",
    "STRATEGIES",
    "BASELINE_HPARAMS",
    "StrategyContext",
    "get_strategy",
    "check_strategy_for",
    "default_strategies",
    "CopyingSIPlugin",
    "ZeroLossMASPlugin",
]

BASELINE_HPARAMS: dict[str, dict[str, Any]] = {
    "ewc": {"ewc_lambda": 1e5},
    "si": {"si_lambda": 1000.0},
    "lwf": {"alpha": 10.0, "temperature": 2.0},
    "mas": {"lambda_reg": 10.0, "alpha": 0.5},
    "replay": {"mem_size": 200},
    "agem": {"patterns_per_exp": 64, "sample_size": 64},
    "packnet": {"prune_proportion": 0.5, "post_prune_epochs": 1},
}
"""Hyper-parameters of Avalanche's baselines: the penalty weights of EWC, SI, MAS and
LwF were picked with ``benchmarks/baseline_sweep.py`` on split_digits and
split_fmnist (``benchmarks/RESULTS.md``); the rest are Avalanche's defaults or, for
LwF's temperature and PackNet, the values of their papers."""


@dataclass
class StrategyContext:
    """What a strategy factory needs.

    :param settings: the run's settings (epochs, batch size, lr, ...).
    :param backbone: makes the benchmark's backbone (image benchmarks).
    :param common: keyword arguments every strategy gets (batch sizes, device,
        plugins, evaluator).
    """

    settings: Any
    backbone: Callable[[], torch.nn.Module] | None
    common: dict[str, Any]


@dataclass(frozen=True)
class StrategySpec:
    """A strategy of the command line.

    :param name: its command-line name.
    :param description: one line for ``--help`` and the reports.
    :param modalities: ``{"image"}``, ``{"text"}`` or both.
    :param build: ``build(context) -> strategy``.
    :param ours: implemented by avalanche-ctr (else an Avalanche baseline).
    """

    name: str
    description: str
    modalities: frozenset[str]
    build: Callable[[StrategyContext], SupervisedTemplate]
    ours: bool = False


class CopyingSIPlugin(SynapticIntelligencePlugin):
    """Avalanche 0.6's ``SynapticIntelligencePlugin``, with the reference weights copied.

    The plugin stores reference weights as ``param.detach().cpu().flatten()``. On a
    CUDA device that is a copy; on CPU it is a view of the parameter itself, so the
    anchor of the penalty and the "old" weights of the path integral move with the
    parameters: every importance is 0 and SI trains exactly like Naive whatever
    ``si_lambda`` is. This subclass replaces the two stored views by copies right
    after Avalanche takes them; everything else is Avalanche's code.
    """

    def before_training_exp(self, strategy, **kwargs) -> None:
        super().before_training_exp(strategy, **kwargs)
        _own(self.ewc_data[0])

    def before_training_iteration(self, strategy, **kwargs) -> None:
        super().before_training_iteration(strategy, **kwargs)
        _own(self.syn_data["old_theta"])


def _own(params: dict) -> None:
    for param in params.values():
        param.data = param.data.clone()


class ZeroLossMASPlugin(MASPlugin):
    """Avalanche 0.6's ``MASPlugin``, able to train on a mini-batch whose loss is 0.

    Its ``before_backward`` raises "Loss is not available" when ``not strategy.loss``,
    which is also true for a loss tensor equal to 0.0: a confident network meets such a
    mini-batch sooner or later (it stopped a split_fmnist run here). This subclass adds
    the smallest positive float to an exactly-zero loss before Avalanche's check, which
    changes no gradient; everything else is Avalanche's code.
    """

    def before_backward(self, strategy, **kwargs) -> None:
        loss = strategy.loss
        if isinstance(loss, torch.Tensor) and loss.numel() == 1 and float(loss) == 0.0:
            strategy.loss = loss + torch.finfo(loss.dtype).tiny
        super().before_backward(strategy, **kwargs)


def _with_plugin(plugin_factory: Callable[[], Any]) -> Callable:
    """Avalanche's ``Naive`` with one more plugin (for the baselines we patch or whose
    wrapper drops user plugins)."""

    def build(ctx: StrategyContext) -> SupervisedTemplate:
        model = _model(ctx)
        common = dict(ctx.common)
        common["plugins"] = [*common["plugins"], plugin_factory()]
        return Naive(
            model=model,
            optimizer=_adam(model, ctx.settings),
            train_epochs=ctx.settings.epochs,
            **common,
        )

    return build


def _adam(model: torch.nn.Module, settings) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)


def _supermask(name: str) -> Callable[[StrategyContext], SupervisedTemplate]:
    def build(ctx: StrategyContext) -> SupervisedTemplate:
        from avalanche_ctr.training import ExSSNeT, SupSup

        s = ctx.settings
        model = ctx.backbone()
        optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
        if name == "supsup":
            return SupSup(
                model=model,
                optimizer=optimizer,
                density=s.density,
                train_epochs=s.epochs,
                **ctx.common,
            )
        mask_epochs = math.ceil(s.epochs / 2)
        return ExSSNeT(
            model=model,
            optimizer=optimizer,
            density=s.density,
            mask_epochs=mask_epochs,
            weight_epochs=s.epochs - mask_epochs,
            exclusive=name == "exssnet",
            **ctx.common,
        )

    return build


def _ctr(knowledge_sharing: bool) -> Callable[[StrategyContext], SupervisedTemplate]:
    def build(ctx: StrategyContext) -> SupervisedTemplate:
        from avalanche_ctr.models import CTRModel
        from avalanche_ctr.training import CTR

        s = ctx.settings
        model = CTRModel(
            s.encoder_model(), bottleneck=s.bottleneck, knowledge_sharing=knowledge_sharing
        )
        return CTR(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=s.lr),
            train_epochs=s.epochs,
            **ctx.common,
        )

    return build


def _model(ctx: StrategyContext, *, adapters: bool = True) -> torch.nn.Module:
    if ctx.backbone is not None:
        return ctx.backbone()
    from avalanche_ctr.models import AdapterBERT

    s = ctx.settings
    return AdapterBERT(s.encoder_model(), bottleneck=s.bottleneck, adapters=adapters)


def _baseline(cls: type, name: str | None = None) -> Callable:
    def build(ctx: StrategyContext) -> SupervisedTemplate:
        model = _model(ctx)
        return cls(
            model=model,
            optimizer=_adam(model, ctx.settings),
            train_epochs=ctx.settings.epochs,
            **BASELINE_HPARAMS.get(name, {}),
            **ctx.common,
        )

    return build


def _frozen(ctx: StrategyContext) -> SupervisedTemplate:
    model = _model(ctx, adapters=False)
    return Naive(
        model=model,
        optimizer=_adam(model, ctx.settings),
        train_epochs=ctx.settings.epochs,
        **ctx.common,
    )


def _packnet(ctx: StrategyContext) -> SupervisedTemplate:
    from avalanche.models.packnet import PackNetPlugin

    from avalanche_ctr.experiments.models import PackNetMultiHead

    s = ctx.settings
    hp = BASELINE_HPARAMS["packnet"]
    if s.epochs <= hp["post_prune_epochs"]:
        raise UsageError(
            f"packnet prunes after epochs - {hp['post_prune_epochs']} epochs and fine-tunes "
            f"after; it needs --epochs >= {hp['post_prune_epochs'] + 1}, got {s.epochs}"
        )
    model = PackNetMultiHead(ctx.backbone())
    common = dict(ctx.common)
    common["plugins"] = [*common["plugins"], PackNetPlugin(**hp)]
    return Naive(model=model, optimizer=_adam(model, s), train_epochs=s.epochs, **common)


_IMAGE = frozenset({"image"})
_TEXT = frozenset({"text"})
_BOTH = _IMAGE | _TEXT

STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec(
            "exssnet",
            "ExSSNeT (ours): supermasks + exclusive weights + KKT",
            _IMAGE,
            _supermask("exssnet"),
            ours=True,
        ),
        StrategySpec(
            "ssnet",
            "SSNeT (ours): ExSSNeT without exclusivity",
            _IMAGE,
            _supermask("ssnet"),
            ours=True,
        ),
        StrategySpec(
            "supsup",
            "SupSup (ours): one supermask per task, fixed weights",
            _IMAGE,
            _supermask("supsup"),
            ours=True,
        ),
        StrategySpec(
            "ctr",
            "CTR (ours): capsules, transfer routing and HAT in BERT",
            _TEXT,
            _ctr(True),
            ours=True,
        ),
        StrategySpec(
            "adapter_hat",
            "CTR without its KSM (ours): adapters + HAT",
            _TEXT,
            _ctr(False),
            ours=True,
        ),
        StrategySpec("frozen", "frozen encoder + per-task heads (Naive)", _TEXT, _frozen),
        StrategySpec("naive", "Avalanche Naive (fine-tuning)", _BOTH, _baseline(Naive)),
        StrategySpec("ewc", "Avalanche EWC", _BOTH, _baseline(EWC, "ewc")),
        StrategySpec(
            "si",
            "Avalanche SI (Naive + SynapticIntelligencePlugin, CPU fix)",
            _BOTH,
            _with_plugin(lambda: CopyingSIPlugin(**BASELINE_HPARAMS["si"])),
        ),
        StrategySpec("lwf", "Avalanche LwF", _BOTH, _baseline(LwF, "lwf")),
        StrategySpec(
            "mas",
            "Avalanche MAS (Naive + MASPlugin, zero-loss fix)",
            _BOTH,
            _with_plugin(lambda: ZeroLossMASPlugin(**BASELINE_HPARAMS["mas"])),
        ),
        StrategySpec("packnet", "Avalanche PackNet (Naive + PackNetPlugin)", _IMAGE, _packnet),
        StrategySpec("replay", "Avalanche Replay", _BOTH, _baseline(Replay, "replay")),
        StrategySpec("agem", "Avalanche AGEM", _BOTH, _baseline(AGEM, "agem")),
        StrategySpec(
            "cumulative",
            "Avalanche Cumulative (retrains on all data so far)",
            _BOTH,
            _baseline(Cumulative),
        ),
    )
}

_WHY_NOT = {
    "text": "{name} needs an image benchmark: it masks or prunes the Linear / Conv2d layers of a "
    "network trained from scratch, and text benchmarks use a frozen BERT-family encoder. On "
    "text use ctr, adapter_hat, frozen or an Avalanche baseline (trained on adapters)",
    "image": "{name} needs a text benchmark (dsc, asc): it works inside a BERT-family encoder. "
    "On images use exssnet, supsup, ssnet or an Avalanche baseline",
}


def get_strategy(name: str) -> StrategySpec:
    """The strategy called ``name``; :class:`UsageError` listing the valid names otherwise."""
    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def check_strategy_for(name: str, modality: str) -> StrategySpec:
    """The strategy ``name``, if it runs on ``modality``; :class:`UsageError` saying why not."""
    spec = get_strategy(name)
    if modality not in spec.modalities:
        raise UsageError(_WHY_NOT[modality].format(name=name))
    return spec


def default_strategies(modality: str) -> list[str]:
    """Every strategy that runs on ``modality``, ours first."""
    return [name for name, spec in STRATEGIES.items() if modality in spec.modalities]
