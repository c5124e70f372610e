"""Checkpoints of a strategy between experiences, without pickling the strategy.

Avalanche 0.6's ``save_checkpoint`` pickles the whole strategy with dill, which
fails with current dill. A checkpoint here holds, after a finished experience:

* the model's ``state_dict``, which parameters are frozen (``requires_grad``: PackNet
  freezes finished tasks' biases that way) and the attributes Avalanche's multi-task
  modules keep outside the state dict (``max_class_label``, ``known_train_tasks_labels``);
* the optimizer's state, with its parameters named, and Avalanche's map of
  optimized parameters;
* the state of every plugin (the evaluator's metric history and metric states, the
  clock, EWC importances, replay buffers, ...), pickled attribute by attribute;
  references to the strategy, its model, the model's tensors and its optimizer are
  stored as such and re-linked to the new strategy on load; functions (configuration),
  generators and the attributes a plugin names in ``transient_attributes`` (e.g. the data
  it was given) are left to the new strategy;
* the random number generator states of Python, NumPy and PyTorch;
* whatever the caller adds (``meta``: e.g. the run's settings and its metric record).

The model has grown since it was built (heads, task masks, capsules, ...).
:func:`grow_model` adds the per-task parts a state dict needs to a freshly built
model of the same configuration, so :func:`load_model` can load a trained model
for inference from the checkpoint alone, and :func:`load_checkpoint` can resume a
strategy built as the original one was.

Files are written atomically (:func:`atomic_save`): a kill during a save leaves the
previous checkpoint as it was. Loading checks the format, the strategy and plugin
classes and every tensor shape, and raises :class:`CheckpointError` naming the
file and the mismatch. The plugin states are unpickled: load only checkpoints you
trust, as with ``torch.load(weights_only=False)``.
"""

from __future__ import annotations

import io
import os
import pickle
import types
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from avalanche.models.dynamic_modules import IncrementalClassifier
from torch import nn

from avalanche_ctr import random_state
from avalanche_ctr.compat import grow_head_units, held_data, rebuild_after_restore
from avalanche_ctr.files import atomic_write_bytes

__all__ = [
    "CheckpointError",
    "FORMAT",
    "atomic_save",
    "read_checkpoint",
    "grow_model",
    "load_model",
    "save_checkpoint",
    "load_checkpoint",
]

FORMAT = "avalanche-ctr-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: truncated, corrupt, or from another setup."""


# ----------------------------------------------------------------------------- files
def atomic_save(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` of ``payload`` to ``path``, written by
    :func:`~avalanche_ctr.files.atomic_write_bytes`: readers see the old file or the new
    one, never a part."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's contents (tensors and plain values only: nothing is unpickled
    beyond them); :class:`CheckpointError` if it is truncated, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
    ) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); delete it to start "
            "over, or restore a copy"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an avalanche-ctr checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this avalanche-ctr reads "
            f"version {VERSION}"
        )
    return payload


# ----------------------------------------------------------------------------- model
def _dynamic_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
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
    state = payload["model"]
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
    for name, attributes in payload.get("dynamic", {}).items():
        module = model.get_submodule(name) if name else model
        if isinstance(module, MultiTaskModule):
            module.max_class_label = attributes["max_class_label"]
            module.known_train_tasks_labels = set(attributes["known_train_tasks_labels"])


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


# ----------------------------------------------------------------------------- strategy
def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class _DefaultDictState(dict):
    """A ``defaultdict``'s items, restored into the new plugin's own ``defaultdict``
    (whose factory may be a function that cannot be pickled)."""


_TRANSIENT = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.GeneratorType,
    types.LambdaType,
)


class _Pickler(pickle.Pickler):
    def __init__(self, handle, shared: dict[int, Any]) -> None:
        super().__init__(handle, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared = shared

    def persistent_id(self, obj: Any) -> Any:
        return self.shared.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle, shared: dict[Any, Any]) -> None:
        super().__init__(handle)
        self.shared = shared

    def persistent_load(self, pid: Any) -> Any:
        return self.shared[pid]


def _shared_objects(strategy) -> dict[Any, Any]:
    """Objects the plugins may point at, by a stable name: they are re-linked, not copied."""
    shared: dict[Any, Any] = {
        "strategy": strategy,
        "model": strategy.model,
        "optimizer": strategy.optimizer,
    }
    for name, tensor in strategy.model.state_dict(keep_vars=True).items():
        shared[f"model.{name}"] = tensor
    return shared


def _plugin_states(strategy) -> list[tuple[str, dict[str, Any]]]:
    states = []
    for plugin in strategy.plugins:
        state = {}
        kept_by_new = getattr(plugin, "transient_attributes", ())
        for key, value in vars(plugin).items():
            if key == "loggers" or key in kept_by_new or isinstance(value, _TRANSIENT):
                continue
            state[key] = _DefaultDictState(value) if isinstance(value, defaultdict) else value
        states.append((_qualname(plugin), state))
    return states


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


def save_checkpoint(strategy, path: str | os.PathLike, *, meta: dict[str, Any] | None = None):
    """Save ``strategy`` between experiences (after ``train`` / ``eval`` returned).

    :param strategy: any Avalanche ``SupervisedTemplate`` (ours or Avalanche's).
    :param path: the file; written atomically.
    :param meta: plain values to keep with it (settings, metric records, ...).
    """
    shared = _shared_objects(strategy)
    buffer = io.BytesIO()
    _Pickler(buffer, {id(obj): name for name, obj in shared.items()}).dump(
        {"plugins": _plugin_states(strategy), "extras": held_data(strategy)}
    )
    model = strategy.model
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "strategy_class": _qualname(strategy),
        "plugin_classes": [_qualname(p) for p in strategy.plugins],
        "model_class": _qualname(model),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "dynamic": _dynamic_attributes(model),
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "optimizer": _optimizer_state(strategy),
        "plugins": torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8),
        "rng": random_state.capture(),
        "meta": meta or {},
    }
    atomic_save(payload, path)


def load_checkpoint(strategy, path: str | os.PathLike) -> dict[str, Any]:
    """Restore a strategy built exactly as the saved one was (same classes, model
    configuration, optimizer and plugins) to the saved state; return the ``meta``
    saved with it. The next ``train`` call continues as the saved run would have.
    """
    path = Path(path)
    payload = read_checkpoint(path, map_location=_device_of(strategy))
    if payload["strategy_class"] != _qualname(strategy):
        raise CheckpointError(
            f"checkpoint {path} was written by strategy {payload['strategy_class']}, not "
            f"{_qualname(strategy)}; load it into the strategy that wrote it"
        )
    plugins = [_qualname(p) for p in strategy.plugins]
    if payload["plugin_classes"] != plugins:
        raise CheckpointError(
            f"checkpoint {path} was written with plugins {payload['plugin_classes']}, but this "
            f"strategy has {plugins}; build the strategy with the same plugins"
        )
    _load_model_state(strategy.model, payload, path)
    _restore_optimizer(strategy, payload["optimizer"], path)
    shared = _shared_objects(strategy)
    blob = payload["plugins"].cpu().numpy().tobytes()
    try:
        saved = _Unpickler(io.BytesIO(blob), shared).load()
    except Exception as error:  # any unpickling failure means the file is unusable
        raise CheckpointError(
            f"checkpoint {path}: its plugin states cannot be read ({type(error).__name__}: {error})"
        ) from None
    for plugin, (_, state) in zip(strategy.plugins, saved["plugins"], strict=True):
        for key, value in state.items():
            current = getattr(plugin, key, None)
            if isinstance(value, _DefaultDictState) and isinstance(current, defaultdict):
                current.clear()
                current.update(value)
            else:
                setattr(plugin, key, dict(value) if isinstance(value, _DefaultDictState) else value)
        rebuild_after_restore(plugin)
    for key, value in saved["extras"].items():
        setattr(strategy, key, value)
    random_state.restore(payload["rng"])
    return payload["meta"]


def _device_of(strategy) -> torch.device:
    return torch.device(getattr(strategy, "device", "cpu"))
