"""The benchmarks the command line knows, with their per-benchmark defaults.

Image benchmarks give every strategy the same backbone
(:mod:`avalanche_ctr.experiments.backbones`); text benchmarks give it the same
frozen encoder. All are task-incremental: one task label per experience, classes
counted from zero in each experience.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

from avalanche_ctr.experiments.backbones import MaskedOutputMLP, MultiHeadConvNet, MultiHeadMLP
from avalanche_ctr.experiments.errors import BenchmarkDataError, UsageError

__all__ = [
    "BenchmarkSpec",
    "BENCHMARKS",
    "BenchmarkDataError",
    "get_benchmark",
    "text_root",
    "text_tasks",
]


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark of the command line.

    :param name: its command-line name.
    :param modality: ``"image"`` or ``"text"``.
    :param description: one line for ``--help`` and the reports.
    :param build: ``build(seed, settings) -> benchmark``.
    :param defaults: default settings (epochs, batch size, learning rate, ...).
    :param backbone: ``backbone(settings) -> model`` for image benchmarks.
    :param output_layers: the ``--output-layer`` values the backbone offers:
        ``"heads"`` (Avalanche's per-task heads) and, for the MLP benchmarks,
        ``"masked"`` (one output layer shared by all tasks,
        :class:`~avalanche_ctr.experiments.backbones.MaskedOutputMLP`, which the
        supermask strategies mask per task as the official models do).
    :param supermask_model: text benchmarks: ``supermask_model(settings, encoder)``, the
        network the supermask strategies mask over the frozen encoder
        (:class:`~avalanche_ctr.models.KimCNN`, ExSSNeT's text model); called with
        ``layer=`` too when ``--encoder-layer`` is given.
    :param mixed_widths: its tasks have different numbers of classes, so how a model pads
        a narrower head's logits (:class:`~avalanche_ctr.compat.PaddedMultiTaskModule`)
        changes results, and a run records it.
    :param classes: image benchmarks: the dataset's classes, which ``--n-experiences``
        must divide when ``split_classes`` (each task gets an equal share), else every task
        has all of them (``permuted_fmnist``); checked before a run starts
        (:func:`~avalanche_ctr.experiments.validation.check_tasks`).
    :param split_classes: see ``classes``.
    """

    name: str
    modality: str
    description: str
    build: Callable[[int, Any], Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    backbone: Callable[[Any], nn.Module] | None = None
    output_layers: tuple[str, ...] = ("heads",)
    supermask_model: Callable[..., nn.Module] | None = None
    mixed_widths: bool = False
    classes: int | None = None
    split_classes: bool = True


def _mlp(input_size: int) -> Callable[[Any], nn.Module]:
    def build(s) -> nn.Module:
        hidden = (s.hidden_size,) * s.hidden_layers
        if s.output_layer == "masked":
            return MaskedOutputMLP(input_size, hidden, outputs=s.head_units or 10)
        return MultiHeadMLP(input_size, hidden, head_units=s.head_units)

    return build


def _split_digits(seed: int, settings) -> Any:
    from avalanche_ctr.benchmarks import SplitDigits

    return SplitDigits(settings.n_experiences, seed=seed)


def _split_mnist1d(seed: int, settings) -> Any:
    from avalanche_ctr.benchmarks import SplitMNIST1D

    try:
        return SplitMNIST1D(settings.n_experiences, seed=seed)
    except ValueError as error:
        raise UsageError(f"--n-experiences: {error}") from None


def _fmnist(builder_name: str):
    def build(seed: int, settings) -> Any:
        from avalanche_ctr import benchmarks

        builder = getattr(benchmarks, builder_name)
        kwargs = {"n_train": settings.n_train} if builder_name == "PermutedFashionMNIST" else {}
        try:
            return builder(
                settings.n_experiences, seed=seed, dataset_root=settings.data_root, **kwargs
            )
        except FileNotFoundError as error:
            raise BenchmarkDataError(str(error)) from None

    return build


def _kim_cnn(n_classes: int) -> Callable[..., nn.Module]:
    """A :class:`~avalanche_ctr.models.KimCNN` with ``n_classes`` shared outputs (the
    most classes of any task of the benchmark) over the frozen encoder's layer
    ``layer`` (``None``: the last)."""

    def build(s, encoder: nn.Module, *, layer: int | None = None) -> nn.Module:
        from avalanche_ctr.models import KimCNN

        return KimCNN(encoder, outputs=n_classes, layer=layer)

    return build


def _torchvision_split(builder_name: str, dataset: str):
    def build(seed: int, settings) -> Any:
        from avalanche.benchmarks import classic

        builder = getattr(classic, builder_name)
        try:
            return builder(
                settings.n_experiences,
                return_task_id=True,
                class_ids_from_zero_in_each_exp=True,
                seed=seed,
                dataset_root=settings.data_root,
            )
        except (RuntimeError, OSError) as error:
            where = settings.data_root or "Avalanche's default folder (~/.avalanche/data)"
            raise BenchmarkDataError(
                f"could not load {dataset} from {where}: {str(error).splitlines()[0]} "
                f"Connect to the internet once so that torchvision downloads it, or put the "
                f"torchvision {dataset} files under a folder and pass it as --data-root."
            ) from None

    return build


def text_root(data_root: str | os.PathLike | None, name: str) -> Path | None:
    """The folder of text benchmark ``name`` (``dsc`` / ``asc`` / ``20news``):
    ``data_root/name`` if it exists, else ``data_root`` itself; ``None`` without
    ``data_root`` (the benchmark's default folder, where it downloads its data)."""
    if data_root is None:
        return None
    root = Path(data_root).expanduser()
    return root / name if (root / name).is_dir() else root


@cache
def _tokenizer(encoder: str | None):
    """The tokenizer of ``encoder`` (default: the packaged all-MiniLM-L6-v2), loaded once."""
    from avalanche_ctr.text_encoder import load_tokenizer

    return load_tokenizer(encoder)


def text_tasks(name: str, task_order: str | None, n_experiences: int | None) -> list[str]:
    """The tasks of text benchmark ``name`` (``dsc`` / ``asc`` / ``20news``) in
    ``--task-order``'s order, cut to the first ``n_experiences``.

    ``task_order`` is ``None`` (the paper's order: :data:`~avalanche_ctr.benchmarks.text.
    DSC_DOMAINS`, :data:`~avalanche_ctr.benchmarks.text.ASC_TASKS`,
    :data:`~avalanche_ctr.benchmarks.text.TWENTY_NEWS_TASKS`), ``random:S`` (the
    paper's tasks shuffled by a generator seeded with ``S``: not the run seed, so the
    runs of one order stay paired by seed) or comma-separated task names (``dsc``: any
    domain with files in the data folder, checked when the data are read).
    :class:`UsageError` saying what to change otherwise.
    """
    from avalanche_ctr.benchmarks.text import ASC_TASKS, DSC_DOMAINS, TWENTY_NEWS_TASKS

    paper = list({"dsc": DSC_DOMAINS, "asc": ASC_TASKS, "20news": TWENTY_NEWS_TASKS}[name])
    if task_order is None:
        names = paper
    elif task_order.startswith("random:"):
        seed = task_order.removeprefix("random:").strip()
        if not (seed.isascii() and seed.isdigit()):
            raise UsageError(
                f"--task-order {task_order!r}: give random:S with a seed S >= 0, e.g. random:1"
            )
        names = paper
        random.Random(int(seed)).shuffle(names)
    else:
        names = [n.strip() for n in task_order.split(",") if n.strip()]
        if not names:
            raise UsageError("--task-order is empty; give comma-separated task names or random:S")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UsageError(f"--task-order names {repeated} more than once; give each task once")
        unknown = [n for n in names if n not in paper] if name != "dsc" else []
        if unknown:
            raise UsageError(
                f"--task-order: unknown {name} task(s) {unknown}; the tasks are: {', '.join(paper)}"
            )
    if n_experiences is not None and n_experiences > len(names):
        raise UsageError(
            f"--n-experiences {n_experiences}: the {name} order has {len(names)} tasks; "
            f"give at most {len(names)}"
        )
    return names[:n_experiences]


def _text(name: str):
    """Build text benchmark ``name`` from ``--data-root`` as it is, or, without it, from
    its default folder (Avalanche's ``default_dataset_location(name)``), downloading and
    verifying what the folder lacks first."""

    def build(seed: int, settings) -> Any:
        from avalanche_ctr.benchmarks import ASC, DSC, TwentyNews
        from avalanche_ctr.benchmarks.download import DownloadError

        builder, keyword = {
            "dsc": (DSC, "domains"),
            "asc": (ASC, "tasks"),
            "20news": (TwentyNews, "tasks"),
        }[name]
        root = text_root(settings.data_root, name)
        try:
            return builder(
                root,
                download=root is None,
                n_train=settings.n_train,
                n_test=settings.n_test,
                tokenizer=_tokenizer(settings.encoder),
                max_length=settings.max_length,
                seed=seed,
                dev=settings.best_dev_epoch,
                **{keyword: settings.task_names},
            )
        except (FileNotFoundError, DownloadError) as error:
            raise BenchmarkDataError(str(error)) from None

    return build


_IMAGE = {
    "n_experiences": 5,
    "batch_size": 32,
    "eval_batch_size": 512,
    "lr": 0.01,
    "hidden_size": 256,
}
_TEXT = {"batch_size": 32, "eval_batch_size": 128, "lr": 1e-3, "max_length": 128}

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "split_digits",
            "image",
            "scikit-learn's 8x8 digits, 5 tasks of 2 classes (embedded, no download)",
            _split_digits,
            {**_IMAGE, "epochs": 4, "hidden_layers": 2, "density": 0.1},
            _mlp(64),
            ("heads", "masked"),
            classes=10,
        ),
        BenchmarkSpec(
            "split_mnist1d",
            "image",
            "MNIST-1D, 5 tasks of 2 classes (generated offline by the mnist1d package)",
            _split_mnist1d,
            {**_IMAGE, "epochs": 4, "hidden_layers": 2, "density": 0.05},
            _mlp(40),
            ("heads", "masked"),
            classes=10,
        ),
        BenchmarkSpec(
            "split_fmnist",
            "image",
            "Fashion-MNIST, 5 tasks of 2 classes (Debian package dataset-fashion-mnist)",
            _fmnist("SplitFashionMNIST"),
            {**_IMAGE, "batch_size": 128, "epochs": 4, "hidden_layers": 2, "density": 0.05},
            _mlp(784),
            ("heads", "masked"),
            classes=10,
        ),
        BenchmarkSpec(
            "permuted_fmnist",
            "image",
            "Fashion-MNIST, 10 tasks of 10 classes, one pixel permutation each "
            "(--n-experiences; Debian package dataset-fashion-mnist)",
            _fmnist("PermutedFashionMNIST"),
            {
                **_IMAGE,
                "n_experiences": 10,
                "batch_size": 128,
                "epochs": 4,
                "hidden_layers": 2,
                "density": 0.05,
            },
            _mlp(784),
            ("heads", "masked"),
            classes=10,
            split_classes=False,
        ),
        BenchmarkSpec(
            "split_mnist",
            "image",
            "MNIST, 5 tasks of 2 classes (torchvision download or --data-root)",
            _torchvision_split("SplitMNIST", "MNIST"),
            {**_IMAGE, "batch_size": 128, "epochs": 4, "hidden_layers": 2, "density": 0.05},
            _mlp(784),
            ("heads", "masked"),
            classes=10,
        ),
        BenchmarkSpec(
            "split_cifar100",
            "image",
            "CIFAR-100, 10 tasks of 10 classes (torchvision download or --data-root)",
            _torchvision_split("SplitCIFAR100", "CIFAR-100"),
            {
                **_IMAGE,
                "n_experiences": 10,
                "batch_size": 64,
                "lr": 1e-3,
                "epochs": 6,
                "hidden_layers": 1,
                "density": 0.1,
            },
            lambda s: MultiHeadConvNet(3, 32, hidden_size=s.hidden_size, head_units=s.head_units),
            classes=100,
        ),
        BenchmarkSpec(
            "dsc",
            "text",
            "CTR paper's document sentiment, 10 Amazon domains (verified download, or --data-root)",
            _text("dsc"),
            {**_TEXT, "epochs": 2, "n_train": 500},
            supermask_model=_kim_cnn(2),
        ),
        BenchmarkSpec(
            "asc",
            "text",
            "CTR paper's aspect sentiment, 19 tasks (verified download, or --data-root)",
            _text("asc"),
            {**_TEXT, "epochs": 2, "n_train": None},
            supermask_model=_kim_cnn(3),
            mixed_widths=True,
        ),
        BenchmarkSpec(
            "20news",
            "text",
            "CTR paper's topic classification, 20 Newsgroups as 10 tasks of 2 "
            "(scikit-learn download, or --data-root)",
            _text("20news"),
            {**_TEXT, "epochs": 2, "n_train": 500},
            supermask_model=_kim_cnn(2),
        ),
    )
}


def get_benchmark(name: str) -> BenchmarkSpec:
    """The benchmark called ``name``; :class:`UsageError` listing the valid names otherwise."""
    if name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
