"""Checks of a run's input made before anything is built or trained.

Each check raises :class:`~avalanche_ctr.experiments.errors.UsageError` with a message
that names the flag and the value at fault and says what to give instead; the command
line prints it as one ``avalanche-ctr: error:`` line (exit status 2). The checks that
need the settings only run in :class:`~avalanche_ctr.experiments.runner.Settings`; these
need more (the strategies, the seeds, the thread count, the text encoder's files):

* :func:`check_unique`, :func:`check_seeds` -- a strategy or a seed named twice would be
  one run counted twice (``2 seeds, ± 0.00``); a seed must be one numpy accepts;
* :func:`check_threads` -- a positive number of torch threads;
* :func:`check_finite` -- every number read is finite (``--lr inf`` trains to NaN);
* :func:`check_tasks` -- ``--n-experiences`` the benchmark can give and ``--head-units``
  at least the classes of every task;
* :func:`check_encoder` (with :func:`encoder_config`) -- ``--encoder`` is a model with a
  tokenizer that fits it, read from its small files before any weight is loaded, and
  ``--max-length`` within what the encoder reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avalanche_ctr.experiments.errors import UsageError

__all__ = [
    "SEED_RANGE",
    "check_unique",
    "check_seeds",
    "check_threads",
    "check_finite",
    "check_tasks",
    "encoder_config",
    "check_encoder",
]

SEED_RANGE = range(2**32)
"""The seeds a run accepts: those of ``numpy.random.seed``, which Avalanche's
``RNGManager`` seeds with the run seed."""

_MASKED_OUTPUTS = 10
"""The output units of ``--output-layer masked`` without ``--head-units``."""

_ENCODER_FIX = (
    "pass a model folder as save_pretrained writes it (config.json, the weights and the "
    "tokenizer files), a model name on the Hugging Face hub (e.g. bert-base-uncased; "
    "online once), or leave --encoder out for the packaged all-MiniLM-L6-v2"
)


def check_unique(values: Sequence[Any], flag: str) -> None:
    """Refuse a value named twice in ``flag``'s list: its run would be counted twice."""
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        twice = ", ".join(str(v) for v in dict.fromkeys(repeated))
        raise UsageError(
            f"{flag} names {twice} more than once, which would count the same run twice; "
            "give each once"
        )


def check_seeds(seeds: Sequence[int], flag: str = "--seeds") -> None:
    """Every seed in :data:`SEED_RANGE`, none twice."""
    for seed in seeds:
        if seed not in SEED_RANGE:
            raise UsageError(
                f"{flag} {seed}: a seed must be an integer from 0 to {SEED_RANGE[-1]} "
                "(numpy's range); give one in that range"
            )
    check_unique(list(seeds), flag)


def check_threads(threads: int | None) -> None:
    """``--threads`` unset or at least 1."""
    if threads is not None and threads < 1:
        raise UsageError(
            f"--threads {threads}: give a number of torch CPU threads of at least 1, or leave "
            "it out to use every core"
        )


def check_finite(value: Any, flag: str) -> Any:
    """``value``, unless it is a non-finite float (``inf``, ``nan``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{flag} {value}: give a finite number")
    return value


def check_tasks(settings: Any) -> None:
    """``--n-experiences`` the image benchmark can split its classes into, and
    ``--head-units`` (or the masked output layer's 10 units) at least the classes of every
    task; ``--head-units`` only where the heads take it (the image benchmarks)."""
    spec = settings.spec
    name = spec.name
    if spec.modality == "text":
        if settings.head_units is not None:
            raise UsageError(
                f"--head-units sets the heads of the image benchmarks; the text strategies "
                f"size each head from its task's classes: leave it out for {name}"
            )
        return
    if spec.classes is None:
        return
    n = settings.n_experiences
    per_task = spec.classes
    if spec.split_classes:
        if spec.classes % n:
            divisors = [d for d in range(1, spec.classes + 1) if spec.classes % d == 0]
            raise UsageError(
                f"--n-experiences {n}: {name} splits its {spec.classes} classes evenly over "
                f"its tasks; give one of {', '.join(map(str, divisors))}"
            )
        per_task = spec.classes // n
    units = settings.head_units
    if units is not None and units < per_task:
        raise UsageError(
            f"--head-units {units}: every task of {name} has {per_task} classes; give "
            f"--head-units {per_task} or more, or leave it out (one unit per class)"
        )
    if units is None and settings.output_layer == "masked" and per_task > _MASKED_OUTPUTS:
        raise UsageError(
            f"--output-layer masked: its {_MASKED_OUTPUTS} output units are fewer than the "
            f"{per_task} classes of every task of {name}; give --head-units {per_task} or more"
        )


def encoder_config(encoder: str | None) -> Any:
    """The ``transformers`` config of ``--encoder`` (``None``: the packaged
    all-MiniLM-L6-v2), read without loading any weight; :class:`UsageError` naming the
    value if it is not a model."""
    from transformers import AutoConfig

    from avalanche_ctr.text_encoder import default_encoder_path

    name = encoder or default_encoder_path()
    path = Path(name).expanduser()
    # a hub name is "model" or "owner/model"; anything else can only be a folder
    if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise UsageError(f"--encoder {name}: no such folder; {_ENCODER_FIX}")
    if path.is_file():
        raise UsageError(f"--encoder {name} is a file; {_ENCODER_FIX}")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UsageError(
            f"--encoder {name} is a folder without a model (no config.json); {_ENCODER_FIX}"
        )
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        where = "no such folder, and no model of that name on the Hugging Face hub"
        if path.is_dir():
            where = "its config.json is not a transformers model's"
        raise UsageError(
            f"--encoder {name}: {where} ({_first_line(error)}); {_ENCODER_FIX}"
        ) from None


def check_encoder(settings: Any) -> None:
    """A text benchmark's ``--encoder``: a model (:func:`encoder_config`) with a tokenizer
    of its own (more than special tokens, no id beyond the model's embeddings), reading at
    least ``--max-length`` tokens."""
    if settings.spec.modality != "text":
        return
    from avalanche_ctr.experiments.benchmarks import _tokenizer

    config = encoder_config(settings.encoder)
    name = settings.encoder or "all-MiniLM-L6-v2 (packaged)"
    try:
        tokenizer = _tokenizer(settings.encoder)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(
            f"--encoder {name}: its tokenizer could not be loaded ({_first_line(error)}); "
            f"{_ENCODER_FIX}"
        ) from None
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        # transformers builds such a tokenizer from a model folder without tokenizer files
        raise UsageError(
            f"--encoder {name}: its tokenizer knows only its special tokens (the folder holds "
            f"no tokenizer files), so every word would read as unknown; {_ENCODER_FIX}"
        )
    embeddings = getattr(config, "vocab_size", None)
    if isinstance(embeddings, int) and len(tokenizer) > embeddings:
        raise UsageError(
            f"--encoder {name}: its tokenizer has {len(tokenizer)} tokens but the model embeds "
            f"only {embeddings}; the tokenizer belongs to another model: {_ENCODER_FIX}"
        )
    # a tokenizer without a recorded limit says 10**30
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 10**6]
    if limits and settings.max_length > min(limits):
        raise UsageError(
            f"--max-length {settings.max_length}: the encoder {name} reads at most "
            f"{min(limits)} tokens; give --max-length {min(limits)} or less"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
