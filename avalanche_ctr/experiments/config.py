"""Configuration files of ``run`` and ``compare`` (``--config FILE.yaml``).

A configuration file is a YAML mapping from the command's flags, without their leading
``--`` (``n-experiences`` or ``n_experiences``), to values as the command line takes them::

    benchmark: split_mnist1d
    strategies: exssnet,supsup,naive
    seeds: 0,1,2
    output-layer: masked
    density: 0.02
    csv: true

Every flag of the command can be given; ``null`` stands for the flag's default. Flags
given on the command line win over the file. A key the command does not take, a value of
the wrong type or a file that is not YAML is refused with one line naming the key and
the fix (:class:`~avalanche_ctr.experiments.errors.UsageError`).

Every ``run`` and ``compare`` writes its resolved configuration (:func:`resolved_config`:
every flag, the benchmark's defaults filled in) to its run folder as ``config.yaml``;
passing that file back to ``--config`` gives the same run identity, so the command keeps
the folder's finished runs and resumes an interrupted one (``--out`` included), or runs
the same runs again in another ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from avalanche_ctr.experiments.errors import UsageError

__all__ = ["CONFIG_FILE", "config_yaml", "file_flags", "read_config", "resolved_config"]

CONFIG_FILE = "config.yaml"
"""The name of the resolved configuration in a run folder."""

_NOT_IN_FILE = ("help", "config", "debug")
"""Flags a configuration file does not hold: they do not describe a run."""

_KINDS = {int: "an integer", float: "a number"}


def file_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The flags of ``parser`` a configuration file can set, by key (the long flag
    without ``--``), in the order of ``--help``."""
    flags = {}
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if long and long[0][2:] not in _NOT_IN_FILE:
            flags[long[0][2:]] = action
    return flags


def read_config(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The values of the configuration file ``path`` for the command ``parser``, by
    the flags' ``dest``, each converted and checked as the command line would; keys
    with ``null`` are left out (the flag keeps its default).

    :raises UsageError: if the file cannot be read or is not YAML, is not a mapping,
        names a flag the command does not take (or one twice), or gives a value of the
        wrong type or outside the flag's choices.
    """
    where = f"--config {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise UsageError(f"{where}: cannot read it ({reason}); give a YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "unreadable"
        raise UsageError(
            f"{where}: not valid YAML ({problem}{line}); write one 'flag: value' per line"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"{where}: holds a {type(data).__name__}, not a mapping; write one 'flag: value' "
            "per line"
        )
    flags = file_flags(parser)
    values: dict[str, Any] = {}
    seen: dict[str, str] = {}
    unknown = []
    for raw, value in data.items():
        key = str(raw).replace("_", "-")
        if key not in flags:
            unknown.append(str(raw))
            continue
        if key in seen:
            raise UsageError(f"{where}: sets {key!r} twice ({seen[key]!r} and {raw!r}); keep one")
        seen[key] = str(raw)
        action = flags[key]
        if value is not None:
            values[action.dest] = _value(where, key, action, value)
    if unknown:
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; {parser.prog} takes: "
            f"{', '.join(flags)}"
        )
    return values


def _value(where: str, key: str, action: argparse.Action, value: Any) -> Any:
    """``value`` of the file's ``key`` converted as the command line converts the flag's
    text; :class:`UsageError` if it does not fit."""
    if action.nargs == 0:  # an on/off flag
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {key}: give true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        if action.nargs == "?":  # e.g. --wandb [PROJECT]: true is the flag alone
            return action.const if value else None
        raise UsageError(f"{where}: {key}: give a value as on the command line, got {value}")
    if not isinstance(value, str | int | float):
        raise UsageError(
            f"{where}: {key}: give one value as on the command line (a list as comma-separated "
            f"text, e.g. 0,1,2), got {value!r}"
        )
    converted: Any = str(value)
    if action.type is not None:
        try:
            converted = action.type(converted)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            kind = _KINDS.get(action.type, "a valid value")
            raise UsageError(f"{where}: {key}: give {kind}, got {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        raise UsageError(
            f"{where}: {key}: {value!r} is not one of {', '.join(map(str, action.choices))}"
        )
    return converted


def resolved_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, settings: Any, **resolved: Any
) -> dict[str, Any]:
    """Every flag a configuration file can set for the command ``parser``, with its
    value in ``args``; a flag left at ``None`` takes its value in ``resolved`` (by
    ``dest``, e.g. the default ``--strategies`` and ``--out``), else, if it names a
    setting, the resolved value in ``settings`` (the benchmark's default). Strategy
    options left out stay ``null``: each strategy resolves them (the runs' records hold
    the values)."""
    config = {}
    for key, action in file_flags(parser).items():
        value = getattr(args, action.dest, None)
        if value is None:
            value = resolved.get(action.dest, getattr(settings, action.dest, None))
        config[key] = value
    return config


def config_yaml(config: dict[str, Any]) -> bytes:
    """``config`` as the text of a configuration file (keys in the order given)."""
    header = (
        "# avalanche-ctr: the resolved configuration of this run folder; pass it back with\n"
        "# --config to run the same runs (flags given on the command line win)\n"
    )
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    return (header + body).encode("utf-8")
