"""Checkpoints of a strategy between experiences, without pickling anything.

Avalanche 0.6's ``save_checkpoint`` pickles the whole strategy with dill, which
fails with current dill, and loading a pickle runs whatever code it names. A
checkpoint here is a ``torch.save`` file of tensors and plain values only (``None``,
booleans, numbers, strings, and lists, tuples and dicts of them), read back with
``torch.load(weights_only=True)``, which builds nothing else: loading runs no code
from the file. After a finished experience it holds:

* the model's ``state_dict``, which parameters are frozen (``requires_grad``: PackNet
  freezes finished tasks' biases that way) and the attributes Avalanche's multi-task
  modules keep outside the state dict (``max_class_label``, ``known_train_tasks_labels``);
* the optimizer's state, with its parameters named, and Avalanche's map of
  optimized parameters;
* the state of every plugin, as the plugin declares it: a plugin of avalanche-ctr
  has ``state_dict()`` / ``load_state_dict(state)``; for Avalanche's plugins,
  :data:`avalanche_ctr.compat.PLUGIN_STATE` names the attributes kept, which are
  encoded value by value (:class:`_Codec`: tensors, numbers, containers, Avalanche's
  ``ParamData``, datasets as their sample tensors, a copy of the model as its state
  dict, references to the strategy, its model and its optimizer by name, an object
  such as a metric as its attributes, restored into the new strategy's object);
* ``Cumulative``'s data seen so far, as sample tensors;
* the random number generator states of Python, NumPy and PyTorch
  (:mod:`avalanche_ctr.random_state`);
* whatever the caller adds (``meta``: e.g. the run's settings and its metric record);
* a SHA-256 digest of every tensor and one of the whole content, checked on every
  read (:func:`read_checkpoint`, :func:`verify_checkpoint`).

The model has grown since it was built (heads, task masks, capsules, ...).
:func:`grow_model` adds the per-task parts a state dict needs to a freshly built
model of the same configuration, so :func:`load_model` can load a trained model
for inference from the checkpoint alone, and :func:`load_checkpoint` can resume a
strategy built as the original one was.

Files are written atomically (:func:`atomic_save`): a kill during a save leaves the
previous checkpoint as it was. Loading checks the format, the digests, the strategy
and plugin classes, every tensor shape and the random states, and raises
:class:`CheckpointError` naming the file, the problem and what to do.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import math
import os
import types
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from avalanche.models.dynamic_modules import IncrementalClassifier
from avalanche.training.utils import ParamData
from torch import nn

from avalanche_ctr import random_state
from avalanche_ctr.compat import (
    CONSTRUCTIBLE,
    dataset_from_samples,
    dataset_samples,
    grow_head_units,
    held_data,
    plugin_state_attributes,
    rebuild_after_restore,
)
from avalanche_ctr.files import atomic_write_bytes

__all__ = [
    "CheckpointError",
    "FORMAT",
    "VERSION",
    "atomic_save",
    "read_checkpoint",
    "verify_checkpoint",
    "grow_model",
    "dynamic_attributes",
    "restore_dynamic_attributes",
    "load_model",
    "save_checkpoint",
    "load_checkpoint",
    "kept_plugins",
    "constructor_options",
    "build_record",
]

FORMAT = "avalanche-ctr-checkpoint"
VERSION = 2
"""Version 1 (avalanche-ctr before issue 31) pickled the plugin states and the
random states; it is refused, never unpickled."""

DIGEST = "sha256"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, corrupt, edited, unsafe, or from
    another setup."""


_START_OVER = (
    "delete it to start this run over (the command line then retrains this seed), or "
    "restore an intact copy"
)


# ----------------------------------------------------------------------------- files
def atomic_save(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` of ``payload`` to ``path``, written by
    :func:`~avalanche_ctr.files.atomic_write_bytes`: readers see the old file or the new
    one, never a part."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def _tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    if tensor.numel():
        flat = tensor.detach().reshape(-1).contiguous()  # a copy only if not contiguous
        digest.update((flat if flat.device.type == "cpu" else flat.cpu()).view(torch.uint8).numpy())
    return digest.hexdigest()


def _skeleton(value: Any, path: str, tensors: dict[str, str]) -> Any:
    """``value`` with each tensor replaced by its path, whose digest goes to ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[path] = _tensor_digest(value)
        return ("tensor", path)
    if isinstance(value, dict):
        return (
            type(value).__name__,
            [(repr(k), _skeleton(v, f"{path}/{k}", tensors)) for k, v in value.items()],
        )
    if isinstance(value, list | tuple):
        return (
            type(value).__name__,
            [_skeleton(v, f"{path}/{i}", tensors) for i, v in enumerate(value)],
        )
    return value


def _digests(content: dict[str, Any]) -> dict[str, Any]:
    """The digest of every tensor of ``content`` (by path) and of the whole content
    (its structure, its plain values and the tensors' digests)."""
    tensors: dict[str, str] = {}
    skeleton = _skeleton(content, "", tensors)
    whole = hashlib.sha256(repr((skeleton, sorted(tensors.items()))).encode()).hexdigest()
    return {"algorithm": DIGEST, "tensors": tensors, "content": whole}


def _check_digests(payload: dict[str, Any], path: Path) -> None:
    stored = payload.get("digest")
    if not isinstance(stored, dict) or stored.get("algorithm") != DIGEST:
        raise CheckpointError(f"checkpoint {path} has no {DIGEST} digest; {_START_OVER}")
    actual = _digests({k: v for k, v in payload.items() if k != "digest"})
    if actual["content"] == stored.get("content"):
        return
    expected = stored.get("tensors") if isinstance(stored.get("tensors"), dict) else {}
    changed = [name for name, d in actual["tensors"].items() if expected.get(name) != d]
    what = (
        f"tensor{'s' if len(changed) > 1 else ''} {', '.join(changed[:3])}"
        + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        if changed
        else "its settings, records or plugin states"
    )
    raise CheckpointError(
        f"checkpoint {path} does not match its digest: {what} changed since it was written "
        f"(disk damage or an edit); {_START_OVER}"
    )


def _load_failure(error: Exception) -> tuple[bool, str]:
    """Whether ``torch.load(weights_only=True)`` refused a global (a class or function
    the file names: a crafted pickle), and the line of its message that says what."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "global" in line.lower() and "unsupported" in line.lower()]
    if named:
        line = named[0].removeprefix("WeightsUnpickler error:").strip()
        return True, line.split(" was not an allowed global")[0].split(" whose module")[0][:300]
    specific = [line for line in lines if "unsupported" in line.lower() or "error" in line.lower()]
    return False, (specific or lines or ["no detail"])[-1][:300]


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, its digests checked.

    The file is read with ``torch.load(weights_only=True)``: only tensors and plain
    values are built, and a file naming anything else (e.g. a crafted pickle) is
    refused unread.

    :raises CheckpointError: if the file is missing, truncated, corrupt, not ours, of
        the old pickled format (version 1), holds anything but tensors and plain values,
        or does not match its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch.load raises many types; each means "unusable"
        unsafe, detail = _load_failure(error)
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} holds something other than tensors and plain values "
                f"({detail}); it was refused unread, since building it could run code; "
                f"{_START_OVER}"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(error).__name__}: {detail}); "
            f"{_START_OVER}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an avalanche-ctr checkpoint")
    if payload.get("version") == 1:
        raise CheckpointError(
            f"checkpoint {path} has the old format (version 1), whose plugin and random "
            "states are pickled; it is not read, since unpickling can run code. Delete it "
            "and run the command again: that run starts over from its first experience"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this avalanche-ctr reads "
            f"version {VERSION}"
        )
    _check_digests(payload, path)
    return payload


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint without loading it into a strategy: its format, that it holds
    tensors and plain values only, its digests and its random states.

    :return: a summary: ``strategy`` (class), ``tensors`` (how many were checked) and
        ``meta`` (what the caller saved with it).
    :raises CheckpointError: naming the file, the problem and what to do.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    try:
        random_state.check(payload.get("rng"))
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: {error}; {_START_OVER}") from None
    return {
        "strategy": payload.get("strategy_class"),
        "tensors": len(payload["digest"]["tensors"]),
        "meta": payload.get("meta", {}),
    }


# ----------------------------------------------------------------------------- model
def dynamic_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """What Avalanche's multi-task modules keep outside the state dict
    (``max_class_label``, ``known_train_tasks_labels``), as plain values by module name."""
    return {
        name: {
            "max_class_label": int(module.max_class_label),
            "known_train_tasks_labels": sorted(int(t) for t in module.known_train_tasks_labels),
        }
        for name, module in model.named_modules()
        if isinstance(module, MultiTaskModule)
    }


def _grow_heads(heads: MultiHeadClassifier, state: dict[str, torch.Tensor], prefix: str) -> None:
    """Give ``heads`` every head of ``state``, each with the stored number of classes."""
    device = heads._adaptation_device
    for key, weight in state.items():
        if not (key.startswith(f"{prefix}classifiers.") and key.endswith(".classifier.weight")):
            continue
        task = key[len(f"{prefix}classifiers.") : -len(".classifier.weight")]
        if "." in task:
            continue
        out_features, in_features = weight.shape
        head = heads.classifiers[task] if task in heads.classifiers else None
        if head is None or head.classifier.weight.shape != weight.shape:
            head = IncrementalClassifier(
                in_features, out_features, masking=False, auto_adapt=False
            ).to(device)
            heads.classifiers[task] = head
        grow_head_units(head, state.get(f"{prefix}classifiers.{task}.active_units"), device)
        units = state.get(f"{prefix}active_units_T{task}")
        if units is not None:
            heads.register_buffer(f"active_units_T{task}", torch.zeros_like(units, device=device))
        heads.max_class_label = max(heads.max_class_label, out_features)


def grow_model(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Add to ``model`` the per-task parts that ``state`` (a state dict of a model built
    the same way and trained further) holds: Avalanche's per-task heads, and whatever
    a module with a ``grow_for_state(state, prefix)`` method adds (supermask task
    masks, per-task BatchNorm, CTR's capsules, routing and task embeddings)."""
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        grow = getattr(module, "grow_for_state", None)
        if grow is not None:
            grow(state, prefix)
        if isinstance(module, MultiHeadClassifier):
            _grow_heads(module, state, prefix)
    return model


def _load_model_state(model: nn.Module, payload: dict[str, Any], path: Path) -> None:
    state = payload.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds no model state dict; {_START_OVER}")
    grow_model(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({payload.get('model_class')} in the "
            f"checkpoint, {_qualname(model)} here): {detail[:600]}. Build the model with the "
            "settings it was trained with (same architecture, widths and density)"
        ) from None
    frozen = payload.get("requires_grad", {})
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(frozen[name])
    restore_dynamic_attributes(model, payload.get("dynamic", {}))


def restore_dynamic_attributes(model: nn.Module, dynamic: dict[str, dict[str, Any]]) -> None:
    """Put back what :func:`dynamic_attributes` returned."""
    for name, attributes in dynamic.items():
        module = model.get_submodule(name) if name else model
        if isinstance(module, MultiTaskModule):
            module.max_class_label = int(attributes["max_class_label"])
            module.known_train_tasks_labels = {
                int(t) for t in attributes["known_train_tasks_labels"]
            }


def load_model(path: str | os.PathLike, model: nn.Module, *, map_location: Any = "cpu"):
    """Load a trained model from a checkpoint for inference.

    :param path: a checkpoint written by :func:`save_checkpoint` (or the command line).
    :param model: a model built exactly as the trained one was before training, e.g.
        ``convert_to_supermask(MTSimpleMLP(...), density=...)`` or ``CTRModel(...)``;
        its per-task parts are grown to the checkpoint's (:func:`grow_model`).
    :return: ``model``, loaded and in ``eval`` mode.
    """
    path = Path(path)
    payload = read_checkpoint(path, map_location)
    _load_model_state(model, payload, path)
    return model.eval()


def _model_record(model: nn.Module) -> dict[str, Any]:
    """What :func:`_load_model_state` loads into a model built the same way."""
    return {
        "model_class": _qualname(model),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "dynamic": dynamic_attributes(model),
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def _drop_heads(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Remove from ``model`` the per-task heads that ``state`` lacks."""
    for name, heads in list(model.named_modules()):
        if not isinstance(heads, MultiHeadClassifier):
            continue
        prefix = f"{name}." if name else ""
        for task in list(heads.classifiers):
            if f"{prefix}classifiers.{task}.classifier.weight" not in state:
                del heads.classifiers[task]
                heads._buffers.pop(f"active_units_T{task}", None)


def _model_copy(model: nn.Module, record: dict[str, Any], path: Path) -> nn.Module:
    """A copy of ``model`` (built as the saved strategy's, already restored) holding
    the saved state of a copy taken earlier, e.g. LwF's model of the previous
    experience, which may have fewer heads."""
    other = copy.deepcopy(model)
    _drop_heads(other, record["model"])
    _load_model_state(other, record, path)
    return other


# ----------------------------------------------------------------------------- strategy
def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


_CONFIGURATION = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.LambdaType,
)
_PLAIN = (type(None), bool, int, float, str)
_DICTS = {"dict": dict, "OrderedDict": OrderedDict, "Counter": Counter}
_SEQUENCES = {"list": list, "tuple": tuple, "set": set | frozenset}


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first part of ``value`` that is not a tensor or a
    plain value (what ``torch.load(weights_only=True)`` reads back as it was)."""
    if type(value) in _PLAIN or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            _check_plain(key, f"{where} (a key)")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}, not a tensor or a plain value")


class _Codec:
    """Plugin attributes as tensors and plain values, and back into a new strategy.

    Every encoded value other than a tensor or a plain value is a dict with a
    ``kind``. Decoding builds only what the kinds name: containers, Avalanche's
    ``ParamData``, Avalanche datasets from their samples, a copy of the new model,
    references to the new strategy's objects, and objects that the new strategy
    already holds at the same place (metrics, LwF's helper, a replay storage policy)
    or that :data:`~avalanche_ctr.compat.CONSTRUCTIBLE` lists.

    :param strategy: the strategy saved, or the one restored.
    :param path: the checkpoint (named in errors).
    """

    def __init__(self, strategy, path: Path) -> None:
        self.strategy = strategy
        self.path = path
        self.names: dict[str, Any] = {
            "strategy": strategy,
            "model": strategy.model,
            "optimizer": strategy.optimizer,
        }
        for name, tensor in strategy.model.state_dict(keep_vars=True).items():
            self.names[f"model.{name}"] = tensor
        self.refs = {id(obj): name for name, obj in self.names.items()}

    # ------------------------------------------------------------------ save
    def encode(self, value: Any, where: str) -> Any:
        if id(value) in self.refs:
            return {"kind": "ref", "to": self.refs[id(value)]}
        if type(value) in _PLAIN:
            return value
        if isinstance(value, torch.Tensor):
            return value.detach().cpu()
        kind = next((k for k, types_ in _SEQUENCES.items() if isinstance(value, types_)), None)
        if kind is not None:
            return {
                "kind": kind,
                "items": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)],
            }
        if isinstance(value, Mapping):
            return {
                "kind": "dict",
                "type": type(value).__name__,
                "keys": [self.encode(k, f"{where} (a key)") for k in value],
                "values": [self.encode(v, f"{where}[{k!r}]") for k, v in value.items()],
            }
        if isinstance(value, ParamData):
            return {
                "kind": "param_data",
                "name": value.name,
                "device": str(value.device),
                "data": value.data.detach().cpu(),
            }
        if isinstance(value, AvalancheDataset):
            try:
                return {"kind": "dataset", **dataset_samples(value)}
            except TypeError as error:
                raise TypeError(f"{where}: {error}") from None
        if isinstance(value, nn.Module):
            return {"kind": "model_copy", **_model_record(value)}
        if isinstance(value, torch.optim.lr_scheduler.LRScheduler):
            state = value.state_dict()
            _check_plain(state, where)
            return {"kind": "state_dict", "class": _qualname(value), "state": state}
        if isinstance(value, _CONFIGURATION) or not hasattr(value, "__dict__"):
            raise TypeError(f"{where} is a {type(value).__name__}, which a checkpoint cannot hold")
        return {
            "kind": "object",
            "class": _qualname(value),
            "attributes": {
                key: self.encode(item, f"{where}.{key}")
                for key, item in vars(value).items()
                if not isinstance(item, (*_CONFIGURATION, types.GeneratorType))
            },
        }

    # ------------------------------------------------------------------ load
    def decode(self, state: Any, current: Any, where: str, factory: Any = None) -> Any:
        """``state`` as a value; objects are restored into ``current`` (the new
        strategy's value at the same place) or into a new one made by ``factory``."""
        if not isinstance(state, dict):
            return state
        kind = state.get("kind")
        if kind == "ref":
            if state.get("to") not in self.names:
                raise self.error(where, f"refers to {state.get('to')!r}, which this model lacks")
            return self.names[state["to"]]
        if kind in ("list", "tuple", "set"):
            olds = current if isinstance(current, list | tuple) else []
            items = [
                self.decode(s, olds[i] if i < len(olds) else None, f"{where}[{i}]")
                for i, s in enumerate(state["items"])
            ]
            if kind == "list" and isinstance(current, list):
                current[:] = items
                return current
            return {"list": list, "tuple": tuple, "set": set}[kind](items)
        if kind == "dict":
            return self._decode_dict(state, current, where)
        if kind == "param_data":
            device = state["device"] if state["device"] == "cpu" else self._device()
            data = state["data"].to(device)
            return ParamData(state["name"], init_tensor=data, device=device)
        if kind == "dataset":
            return dataset_from_samples(state)
        if kind == "model_copy":
            return _model_copy(self.strategy.model, state, self.path)
        if kind in ("state_dict", "object"):
            target = current
            if target is None and factory is not None:
                target = factory()
            if target is None:
                target = next(
                    (c.__new__(c) for c in CONSTRUCTIBLE if _class_name(c) == state["class"]),
                    None,
                )
            if target is None or _qualname(target) != state["class"]:
                found = "nothing" if target is None else f"a {_qualname(target)}"
                raise self.error(
                    where, f"holds a {state['class']}, but the new strategy has {found} there"
                )
            if kind == "state_dict":
                target.load_state_dict(state["state"])
                return target
            for key, item in state["attributes"].items():
                setattr(
                    target, key, self.decode(item, getattr(target, key, None), f"{where}.{key}")
                )
            return target
        raise self.error(where, f"holds a value of unknown kind {kind!r}")

    def _decode_dict(self, state: dict[str, Any], current: Any, where: str) -> Any:
        keys = [self.decode(k, None, f"{where} (a key)") for k in state["keys"]]
        keys = [tuple(k) if isinstance(k, list) else k for k in keys]
        if isinstance(current, dict):
            target, olds = current, dict(current)
            target.clear()
        elif state["type"] in _DICTS:
            target, olds = _DICTS[state["type"]](), {}
        else:
            raise self.error(where, f"holds a {state['type']} that the new strategy lacks")
        factory = getattr(target, "default_factory", None)
        for key, value in zip(keys, state["values"], strict=True):
            target[key] = self.decode(value, olds.get(key), f"{where}[{key!r}]", factory)
        return target

    def _device(self) -> torch.device:
        return _device_of(self.strategy)

    def error(self, where: str, problem: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {self.path}: the saved {where} {problem}; build the strategy with "
            "the plugins and settings it was saved with"
        )


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _declares_state(plugin) -> bool:
    return callable(getattr(plugin, "state_dict", None)) and callable(
        getattr(plugin, "load_state_dict", None)
    )


def _plugin_states(strategy, path: Path) -> list[dict[str, Any]]:
    """Each plugin's state: what it declares (``state_dict()``), or the attributes
    :data:`~avalanche_ctr.compat.PLUGIN_STATE` names for Avalanche's plugins."""
    codec = _Codec(strategy, path)
    states = []
    for plugin in kept_plugins(strategy):
        name = _qualname(plugin)
        try:
            if _declares_state(plugin):
                state = plugin.state_dict()
                _check_plain(state, f"{name}.state_dict()")
                states.append({"declared": state})
                continue
            attributes = plugin_state_attributes(plugin)
            if attributes is None and not vars(plugin):
                attributes = ()
            if attributes is None:
                raise CheckpointError(
                    f"cannot checkpoint plugin {name}: it declares no state. Give it "
                    "state_dict() (tensors and plain values; {} if it keeps none) and "
                    "load_state_dict(state) (see docs/checkpoints.md)"
                )
            states.append(
                {
                    "attributes": {
                        a: codec.encode(getattr(plugin, a), f"{name}.{a}") for a in attributes
                    }
                }
            )
        except TypeError as error:
            raise CheckpointError(f"cannot checkpoint plugin {name}: {error}") from None
    return states


_MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError)
"""What a well-formed file holding a state of the wrong form raises while decoding."""


def _restore_plugins(strategy, states: list[Any], path: Path) -> None:
    codec = _Codec(strategy, path)
    for plugin, state in zip(kept_plugins(strategy), states, strict=True):
        name = _qualname(plugin)
        if _declares_state(plugin):
            if not isinstance(state, dict) or "declared" not in state:
                raise codec.error(name, "state was not declared by the plugin")
            try:
                plugin.load_state_dict(state["declared"])
            except _MALFORMED as error:
                raise codec.error(f"state of {name}", f"does not fit it ({error!r})") from None
            continue
        if not isinstance(state, dict) or not isinstance(state.get("attributes"), dict):
            raise codec.error(name, "state is not a dict of attributes")
        for key, value in state["attributes"].items():
            where = f"{name}.{key}"
            try:
                setattr(plugin, key, codec.decode(value, getattr(plugin, key, None), where))
            except _MALFORMED as error:
                raise codec.error(where, f"is malformed ({error!r})") from None
        rebuild_after_restore(plugin)


def _optimizer_state(strategy) -> dict[str, Any]:
    """The optimizer's state with its parameters named. Tensors it holds that are no
    longer parameters of the model (e.g. the released scores of a finished supermask
    task) can never receive a gradient again and are left out."""
    names = {id(p): n for n, p in strategy.model.named_parameters()}
    full = strategy.optimizer.state_dict()
    groups, states = [], {}
    for group, saved in zip(strategy.optimizer.param_groups, full["param_groups"], strict=True):
        kept = [
            (names[id(p)], i)
            for p, i in zip(group["params"], saved["params"], strict=True)
            if id(p) in names
        ]
        groups.append(
            {
                **{k: v for k, v in saved.items() if k != "params"},
                "params": [name for name, _ in kept],
            }
        )
        states.update({name: full["state"][i] for name, i in kept if i in full["state"]})
    optimized = getattr(strategy, "optimized_param_id", None)
    return {
        "groups": groups,
        "state": states,
        "optimized_param_names": None
        if optimized is None
        else [n for n in optimized if n in dict(strategy.model.named_parameters())],
    }


def _restore_optimizer(strategy, saved: dict[str, Any], path: Path) -> None:
    params = dict(strategy.model.named_parameters())
    optimizer = strategy.optimizer
    missing = [n for g in saved["groups"] for n in g["params"] if n not in params]
    if missing:
        raise CheckpointError(
            f"checkpoint {path}: its optimizer updates parameters this model lacks ({missing[:3]})"
        )
    optimizer.param_groups.clear()
    optimizer.state = defaultdict(dict)
    index, groups, state = 0, [], {}
    for group in saved["groups"]:
        optimizer.add_param_group({**group, "params": [params[n] for n in group["params"]]})
        ids = list(range(index, index + len(group["params"])))
        groups.append({**group, "params": ids})
        state.update(
            {
                i: saved["state"][n]
                for i, n in zip(ids, group["params"], strict=True)
                if n in saved["state"]
            }
        )
        index += len(ids)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as error:
        raise CheckpointError(
            f"checkpoint {path}: its optimizer state does not fit {type(optimizer).__name__} "
            f"({error})"
        ) from None
    if saved["optimized_param_names"] is not None:
        strategy.optimized_param_id = {n: params[n] for n in saved["optimized_param_names"]}


def kept_plugins(strategy) -> list:
    """The plugins a checkpoint records: all but those whose class sets
    ``checkpoint_transient = True`` (:class:`~avalanche_ctr.distributed.DistributedTraining`,
    which is there only under torchrun, and the progress bar, only where bars are shown).
    Such a plugin keeps nothing across experiences, so a checkpoint written with or without
    it resumes in a strategy built with or without it (e.g. on another number of processes)."""
    return [p for p in strategy.plugins if not getattr(p, "checkpoint_transient", False)]


_NOT_OPTIONS = frozenset({"device"})
"""Constructor arguments never compared: a checkpoint loads onto any device."""


def _is_option(value: Any) -> bool:
    if type(value) in _PLAIN:
        return not (isinstance(value, float) and math.isnan(value))
    return type(value) in (list, tuple) and all(_is_option(v) for v in value)


def _as_list(value: Any) -> Any:
    """``value`` with tuples as lists (a stored tuple and a built one compare equal)."""
    if isinstance(value, list | tuple):
        return [_as_list(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_list(v) for k, v in value.items()}
    return value


def constructor_options(obj: Any) -> dict[str, Any]:
    """The arguments ``obj`` was built with, as far as it keeps them: each parameter of
    the ``__init__`` of its class and its bases that ``obj`` holds under the same name
    as a plain value (a number, string, boolean, ``None`` or a list or tuple of them),
    the convention of scikit-learn's ``get_params``. Attributes its class names in
    ``runtime_options`` (settings meant to change between calls, e.g. ExSSNeT's
    ``task_inference``) and the device are left out."""
    names: list[str] = []
    for cls in type(obj).__mro__:
        init = cls.__dict__.get("__init__")
        if not inspect.isfunction(init):
            continue
        for parameter in list(inspect.signature(init).parameters.values())[1:]:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.append(parameter.name)
    skipped = _NOT_OPTIONS | set(getattr(type(obj), "runtime_options", ()))
    attributes = vars(obj)
    return {
        name: _as_list(attributes[name])
        for name in dict.fromkeys(names)
        if name not in skipped and name in attributes and _is_option(attributes[name])
    }


def build_record(strategy) -> dict[str, Any]:
    """What ``strategy`` was built with, in plain values, for :func:`load_checkpoint` to
    compare: the strategy's, each kept plugin's and the model's constructor options
    (:func:`constructor_options`; a Hub model of ours adds the arguments that rebuild it,
    ``hub_arguments()``: e.g. a supermask network's density and its backbone's widths),
    the model's class, and the optimizer's class, constructor hyper-parameters
    (``defaults``) and, per parameter group, those hyper-parameters except the learning
    rate (which schedules and phases change)."""
    model, optimizer = strategy.model, strategy.optimizer
    hub = getattr(model, "hub_arguments", None)
    model_options = (
        _as_list(hub()) if callable(hub) and getattr(model, "hub_model_type", None) else {}
    )
    model_options.update(constructor_options(model))  # a strategy may set some (CTR's s_max)
    defaults = {k: _as_list(v) for k, v in optimizer.defaults.items() if _is_option(v)}
    return {
        "strategy": constructor_options(strategy),
        "plugins": [constructor_options(p) for p in kept_plugins(strategy)],
        "model_class": _qualname(model),
        "model": model_options,
        "optimizer_class": _qualname(optimizer),
        "optimizer": defaults,
        "param_groups": [
            {k: _as_list(g[k]) for k in defaults if k != "lr" and k in g and _is_option(g[k])}
            for g in optimizer.param_groups
        ],
    }


_UNSET = object()


def _shown(value: Any) -> str:
    return "unset" if value is _UNSET else repr(value)


def _differences(there: dict[str, Any], here: dict[str, Any], prefix: str) -> list[str]:
    """Each option (``prefix`` and its name; nested dicts by dotted names) that differs
    between the checkpoint's record ``there`` and this strategy's ``here``."""
    differences = []
    for key in dict.fromkeys([*there, *here]):
        saved, built = there.get(key, _UNSET), here.get(key, _UNSET)
        if isinstance(saved, dict) and isinstance(built, dict):
            differences += _differences(saved, built, f"{prefix}{key}.")
        elif saved != built:
            differences.append(
                f"{prefix}{key} {_shown(saved)} in the checkpoint, {_shown(built)} here"
            )
    return differences


def _short(qualname: str) -> str:
    return qualname.rsplit(".", 1)[-1]


def _check_build(saved: Any, strategy, path: Path) -> None:
    """Refuse a checkpoint whose strategy was built otherwise than ``strategy``
    (:func:`build_record`), naming every difference."""
    built = build_record(strategy)
    if not isinstance(saved, dict) or set(saved) != set(built):
        raise CheckpointError(f"checkpoint {path} has a malformed build record; {_START_OVER}")
    differences = _differences(saved["strategy"], built["strategy"], f"{type(strategy).__name__} ")
    names = [type(p).__name__ for p in kept_plugins(strategy)]
    repeated = {n for n, count in Counter(names).items() if count > 1}
    for i, (name, there, here) in enumerate(
        zip(names, saved["plugins"], built["plugins"], strict=False)
    ):
        label = f"{name}[{names[:i].count(name)}]" if name in repeated else name
        differences += _differences(there, here, f"{label} ")
    for part in ("model", "optimizer"):
        there, here = saved[f"{part}_class"], built[f"{part}_class"]
        if there != here:
            differences.append(f"{part} {there} in the checkpoint, {here} here")
            continue
        differences += _differences(saved[part], built[part], f"{_short(here)} ")
    if saved["optimizer_class"] == built["optimizer_class"]:
        name = _short(built["optimizer_class"])
        for i, (there, here) in enumerate(
            zip(saved["param_groups"], built["param_groups"], strict=False)
        ):
            same = {k for k in here if saved["optimizer"].get(k) == built["optimizer"].get(k)}
            differences += _differences(
                {k: v for k, v in there.items() if k in same},
                {k: v for k, v in here.items() if k in same},
                f"{name} parameter group {i} ",
            )
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was saved from a strategy built otherwise: "
            f"{'; '.join(differences)}. Build the strategy as the saved one was (same options, "
            "model and optimizer) to resume it"
        )


def save_checkpoint(strategy, path: str | os.PathLike, *, meta: dict[str, Any] | None = None):
    """Save ``strategy`` between experiences (after ``train`` / ``eval`` returned).

    :param strategy: any Avalanche ``SupervisedTemplate`` (ours or Avalanche's) whose
        plugins declare their state (see the module's docstring).
    :param path: the file; written atomically.
    :param meta: tensors and plain values to keep with it (settings, metric records, ...).
    :raises CheckpointError: naming a plugin, or the part of ``meta``, that cannot be
        stored as tensors and plain values; the previous checkpoint is left as it was.
    """
    path = Path(path)
    rng = random_state.capture()  # first: reading a dataset's samples may draw numbers
    model = strategy.model
    try:
        _check_plain(meta or {}, "meta")
        extras = {
            key: _Codec(strategy, path).encode(value, f"strategy.{key}")
            for key, value in held_data(strategy).items()
        }
    except TypeError as error:
        raise CheckpointError(f"cannot checkpoint {path}: {error}") from None
    content = {
        "format": FORMAT,
        "version": VERSION,
        "strategy_class": _qualname(strategy),
        "plugin_classes": [_qualname(p) for p in kept_plugins(strategy)],
        "build": build_record(strategy),
        **_model_record(model),
        "optimizer": _optimizer_state(strategy),
        "plugins": _plugin_states(strategy, path),
        "extras": extras,
        "rng": rng,
        "meta": meta or {},
    }
    atomic_save({**content, "digest": _digests(content)}, path)


_STRATEGY_PARTS = ("strategy_class", "plugin_classes", "optimizer", "plugins", "extras", "rng")


def load_checkpoint(
    strategy,
    path: str | os.PathLike,
    *,
    check_meta: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Restore a strategy built exactly as the saved one was (same classes, model
    configuration, optimizer and plugins) to the saved state; return the ``meta``
    saved with it. The next ``train`` call continues as the saved run would have.

    Nothing in the file is executed: it is read as tensors and plain values
    (:func:`read_checkpoint`) and decoded into the objects the new strategy holds.
    What the strategy was built with is compared with the checkpoint's record
    (:func:`build_record`) first; checkpoints written before that record existed are
    loaded without this comparison.

    :param check_meta: called with the saved ``meta`` before anything is compared or
        restored (the command line checks its run's settings there, in its own terms).
    :raises CheckpointError: naming the file and the problem, e.g. each option, model
        or optimizer setting that differs from the checkpoint's; the strategy is left
        as it was.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    missing = [part for part in _STRATEGY_PARTS if part not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; {_START_OVER}")
    if check_meta is not None:
        check_meta(payload.get("meta", {}))
    if payload["strategy_class"] != _qualname(strategy):
        raise CheckpointError(
            f"checkpoint {path} was written by strategy {payload['strategy_class']}, not "
            f"{_qualname(strategy)}; load it into the strategy that wrote it"
        )
    plugins = [_qualname(p) for p in kept_plugins(strategy)]
    if payload["plugin_classes"] != plugins:
        raise CheckpointError(
            f"checkpoint {path} was written with plugins {payload['plugin_classes']}, but this "
            f"strategy has {plugins}; build the strategy with the same plugins"
        )
    if "build" in payload:  # checkpoints written before issue 32 lack it: not compared
        _check_build(payload["build"], strategy, path)
    try:
        random_state.check(payload["rng"])
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: {error}; {_START_OVER}") from None
    _load_model_state(strategy.model, payload, path)
    _restore_optimizer(strategy, payload["optimizer"], path)
    _restore_plugins(strategy, payload["plugins"], path)
    codec = _Codec(strategy, path)
    for key, value in payload["extras"].items():
        try:
            setattr(strategy, key, codec.decode(value, None, f"strategy.{key}"))
        except _MALFORMED as error:
            raise codec.error(f"strategy.{key}", f"is malformed ({error!r})") from None
    random_state.restore(payload["rng"])
    return payload["meta"]


def _device_of(strategy) -> torch.device:
    return torch.device(getattr(strategy, "device", "cpu"))
