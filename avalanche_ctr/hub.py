"""Hugging Face Hub-style models: ``save_pretrained`` / ``from_pretrained`` /
``push_to_hub`` for every model our strategies build, on ``huggingface_hub``'s
:class:`~huggingface_hub.ModelHubMixin`.

A model class becomes a Hub model in one place, its class statement::

    class CTRModel(PaddedMultiTaskModule, HubModel, model_type="ctr"): ...

which registers it under its model type (:data:`MODEL_TYPES`). ``ModelHubMixin``
records the JSON-ready constructor arguments of every instance, whatever the class's
signature is at the time; a transformers encoder among them (the argument
``encoder``) is stored as its transformers configuration and rebuilt from it, its
weights coming with the model's.

A model folder holds

* ``model.safetensors``: the ``state_dict`` as it is (finished tasks' bit-packed
  supermasks stay ``uint8`` buffers, CTR's capsules and HAT embeddings per task);
* ``config.json``: ``library_name`` ``"avalanche-ctr"``, :data:`FORMAT_VERSION`, the
  model type, the constructor arguments, and the attributes Avalanche's multi-task
  modules keep outside the state dict;
* ``README.md``: a model card (method and paper, tasks learned in order with their
  classes, density, accuracy per task when the run's record is given, how to load).

Loading builds the model from the config, grows its per-task parts to the state's
(:func:`~avalanche_ctr.checkpoint.grow_model`) and loads the state: nothing is
unpickled (JSON and safetensors only). A folder of another library or format version
raises :class:`ModelFolderError`. ``avalanche-ctr export RUN_DIR OUT_DIR``
(:func:`export_run`) writes the folder of a finished run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from torch import nn

from avalanche_ctr.checkpoint import (
    CheckpointError,
    dynamic_attributes,
    restore_dynamic_attributes,
)
from avalanche_ctr.files import atomic_write_bytes

__all__ = [
    "LIBRARY_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "MODEL_TYPES",
    "METHODS",
    "ModelFolderError",
    "HubModel",
    "read_config",
    "model_card_text",
    "export_run",
]

LIBRARY_NAME = "avalanche-ctr"
FORMAT_VERSION = 1
"""Version of the model folder's layout; a folder of another version is refused."""
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

MODEL_TYPES: dict[str, type[HubModel]] = {}
"""Every Hub model class by its model type (filled by the class statements)."""

METHODS: dict[str, tuple[str, str]] = {
    "exssnet": (
        "ExSSNeT: supermasks with exclusive weight training and KNN-based knowledge transfer",
        "Yadav & Bansal, *Exclusive Supermask Subnetwork Training for Continual Learning*, "
        "Findings of ACL 2023 (https://arxiv.org/abs/2210.10209)",
    ),
    "ssnet": (
        "SSNeT: ExSSNeT without exclusivity (ablation)",
        "Yadav & Bansal, Findings of ACL 2023 (https://arxiv.org/abs/2210.10209)",
    ),
    "supsup": (
        "SupSup: one supermask per task over fixed weights",
        "Wortsman et al., *Supermasks in Superposition*, NeurIPS 2020 "
        "(https://arxiv.org/abs/2006.14769)",
    ),
    "ctr": (
        "CTR: capsules, transfer routing and HAT masks in a frozen BERT-family encoder",
        "Ke et al., *Achieving Forgetting Prevention and Knowledge Transfer in Continual "
        "Learning*, NeurIPS 2021 (https://arxiv.org/abs/2112.02706)",
    ),
    "hat": (
        "HAT: hard attention masks per task over every hidden unit",
        "Serra et al., *Overcoming Catastrophic Forgetting with Hard Attention to the Task*, "
        "ICML 2018 (https://arxiv.org/abs/1801.01423)",
    ),
    "adapter_hat": (
        "CTR without its knowledge sharing module: adapters with HAT masks (ablation)",
        "Ke et al., NeurIPS 2021 (https://arxiv.org/abs/2112.02706)",
    ),
}
"""Method title and paper of a strategy, for the model card (others: Avalanche's)."""

_DEFAULT_METHOD = {"supermask": "supsup", "ctr": "ctr", "hat": "hat"}
"""The method a model type's card names when the caller does not say."""

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
"""The tokenizer files :func:`export_run` writes for a text model."""

_ENCODER_ARGUMENT = "encoder"
_ENCODER_KEY = "transformers_config"

T = TypeVar("T", bound="HubModel")


class ModelFolderError(CheckpointError):
    """A model folder (or Hub repository) that cannot be loaded: missing, of another
    library or format version, or not fitting the model it describes."""


# ----------------------------------------------------------------------------- encoders
def _transformers_model():
    from transformers import PreTrainedModel

    return PreTrainedModel


def _encoder_config(model: nn.Module) -> dict[str, Any]:
    """The transformers configuration of the one encoder inside ``model``."""
    pretrained = _transformers_model()
    encoders = [m for m in model.modules() if isinstance(m, pretrained)]
    if len(encoders) != 1:
        raise ModelFolderError(
            f"{type(model).__name__} takes an encoder but holds {len(encoders)} transformers "
            "models; save a model with exactly one"
        )
    config = encoders[0].config
    return {
        "config": config.to_dict(),
        "attn_implementation": getattr(config, "_attn_implementation", None),
    }


def _build_encoder(stored: dict[str, Any]) -> nn.Module:
    """A transformers encoder of the stored configuration, its weights not loaded yet."""
    from transformers import AutoConfig, AutoModel

    values = dict(stored["config"])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    implementation = stored.get("attn_implementation")
    if implementation is not None:
        return AutoModel.from_config(config, attn_implementation=implementation)
    return AutoModel.from_config(config)


# ----------------------------------------------------------------------------- the mixin
class HubModel(ModelHubMixin, library_name=LIBRARY_NAME, tags=["continual-learning"]):
    """``save_pretrained(dir)``, ``from_pretrained(dir_or_repo_id)`` and ``push_to_hub``
    for an ``nn.Module``; a subclass names its ``model_type`` in its class statement.

    ``HubModel.from_pretrained`` loads a folder of any registered type;
    ``Subclass.from_pretrained`` refuses a folder of another type. Keywords of
    ``from_pretrained`` besides the Hub's (``revision``, ``cache_dir``,
    ``local_files_only``, ``token``, ``force_download``): ``map_location`` (default
    ``"cpu"``) and those of the class's builder (``backbone`` for
    :class:`~avalanche_ctr.exssnet.SupermaskNet`).
    """

    hub_model_type: ClassVar[str | None] = None

    def __init_subclass__(cls, *, model_type: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if model_type is not None:
            if model_type in MODEL_TYPES and MODEL_TYPES[model_type] is not cls:
                raise ValueError(
                    f"model type {model_type!r} is taken by {MODEL_TYPES[model_type].__qualname__}"
                )
            cls.hub_model_type = model_type
            MODEL_TYPES[model_type] = cls

    # ------------------------------------------------------------- arguments
    def hub_arguments(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model before training, JSON-ready:
        those ``ModelHubMixin`` recorded, the encoder as its transformers configuration."""
        arguments = dict(self._hub_mixin_config or {})
        if _ENCODER_ARGUMENT in type(self)._hub_mixin_init_parameters:
            arguments[_ENCODER_ARGUMENT] = {_ENCODER_KEY: _encoder_config(self)}
        return arguments

    @classmethod
    def hub_build(cls: type[T], arguments: dict[str, Any], **kwargs: Any) -> T:
        """A model built from :meth:`hub_arguments` as the saved one was before training
        (its weights still to be loaded)."""
        if kwargs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained got unexpected keywords {sorted(kwargs)}"
            )
        return cls(**_decoded(arguments))

    # ------------------------------------------------------------- saving
    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save

        if self.hub_model_type is None:
            raise ModelFolderError(
                f"{type(self).__name__} has no model type; declare one in its class statement "
                f"(class {type(self).__name__}(..., HubModel, model_type=...))"
            )
        training = getattr(self, "training_task", None)
        if training is not None:
            raise ModelFolderError(
                f"task {training} is still in training (its mask or masks are not final); "
                "save the model after strategy.train(...) has returned"
            )
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        atomic_write_bytes(save_directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
        config = {
            "library_name": LIBRARY_NAME,
            "format_version": FORMAT_VERSION,
            "model_type": self.hub_model_type,
            "model_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "arguments": self.hub_arguments(),
            "dynamic": dynamic_attributes(self),
        }
        text = json.dumps(config, indent=2, sort_keys=True)
        atomic_write_bytes(save_directory / CONFIG_NAME, text.encode())
        (save_directory / "README.md").unlink(missing_ok=True)  # the card is made anew

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card: Hub metadata (library ``avalanche-ctr``, tags) and
        :func:`model_card_text`, whose keywords ``save_pretrained`` passes on as
        ``model_card_kwargs``."""
        data = ModelCardData(**self._hub_mixin_info.model_card_data.to_dict())
        text = model_card_text(self, **kwargs)
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")

    # ------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls: type[T],
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        **model_kwargs: Any,
    ) -> T:
        """The model saved in a folder, or in a Hub repository (downloaded with
        ``huggingface_hub``; offline, a clear :class:`ModelFolderError`)."""
        folder = _resolve_folder(
            str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
        )
        config = read_config(folder)
        target = MODEL_TYPES[config["model_type"]]
        if not issubclass(target, cls):
            raise ModelFolderError(
                f"{folder} holds a {target.__name__} (model type {config['model_type']!r}), "
                f"not a {cls.__name__}; load it with {target.__name__}.from_pretrained or "
                "avalanche_ctr.hub.HubModel.from_pretrained"
            )
        return ModelHubMixin.from_pretrained.__func__(target, folder, **model_kwargs)

    @classmethod
    def _from_pretrained(
        cls: type[T],
        *,
        model_id: str,
        config: dict[str, Any],
        map_location: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> T:
        for key in ("revision", "cache_dir", "force_download", "local_files_only", "token"):
            kwargs.pop(key, None)
        from safetensors.torch import load_file

        from avalanche_ctr.checkpoint import grow_model

        folder = Path(model_id)
        try:
            model = cls.hub_build(config["arguments"], **kwargs)
        except (TypeError, ValueError, KeyError) as error:
            raise ModelFolderError(
                f"{folder}: its {CONFIG_NAME} does not build a {cls.__name__} "
                f"({type(error).__name__}: {error})"
            ) from None
        state = load_file(str(folder / WEIGHTS_NAME))
        try:
            grow_model(model, state)
            model.load_state_dict(state)
        except RuntimeError as error:
            detail = " ".join(str(error).split())
            raise ModelFolderError(
                f"{folder / WEIGHTS_NAME} does not fit the {cls.__name__} its config describes: "
                f"{detail[:600]}"
            ) from None
        restore_dynamic_attributes(model, config.get("dynamic", {}))
        return model.to(map_location).eval()


def _decoded(arguments: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments with a stored encoder rebuilt."""
    decoded = dict(arguments)
    encoder = decoded.get(_ENCODER_ARGUMENT)
    if isinstance(encoder, dict) and _ENCODER_KEY in encoder:
        decoded[_ENCODER_ARGUMENT] = _build_encoder(encoder[_ENCODER_KEY])
    return decoded


def _resolve_folder(name: str, **download: Any) -> str:
    """A local folder holding the model: ``name`` itself, or its Hub snapshot."""
    if os.path.isdir(name):
        return name
    if os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelFolderError(
            f"{name} is not a model folder; give the folder save_pretrained or "
            "avalanche-ctr export wrote, or a Hub repository id such as user/model"
        )
    try:
        return snapshot_download(
            repo_id=name,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md", *_TOKENIZER_FILES],
            **download,
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        raise ModelFolderError(
            f"cannot download {name!r} from the Hugging Face Hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); check the "
            "repository id and the network (offline, HF_HUB_OFFLINE=1 uses the local cache "
            "only), or give a local folder"
        ) from None


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's ``config.json``, checked to be an avalanche-ctr model of this format
    version and of a known model type (:class:`ModelFolderError` otherwise)."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelFolderError(
            f"{folder} has no {CONFIG_NAME}: it is not a model folder of save_pretrained or "
            "avalanche-ctr export"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{path} is not a JSON object")
    library = config.get("library_name")
    if library != LIBRARY_NAME:
        other = config.get("model_type") or config.get("architectures")
        origin = f"by {library}" if library else "by another library"
        raise ModelFolderError(
            f"{folder} was saved {origin} (model type {other!r}), not by {LIBRARY_NAME}; "
            "load it with the library that wrote it"
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFolderError(
            f"{folder} has {LIBRARY_NAME} model format version {version}; this "
            f"{LIBRARY_NAME} reads version {FORMAT_VERSION}: install the {LIBRARY_NAME} that "
            "wrote it"
        )
    _register_ours()
    if config.get("model_type") not in MODEL_TYPES:
        raise ModelFolderError(
            f"{folder} holds model type {config.get('model_type')!r}, which this "
            f"{LIBRARY_NAME} does not know (known: {', '.join(sorted(MODEL_TYPES))})"
        )
    if not (folder / WEIGHTS_NAME).is_file():
        raise ModelFolderError(f"{folder} has no {WEIGHTS_NAME}")
    return config


def backbone_entry(net: nn.Module) -> dict[str, Any] | None:
    """What rebuilds the backbone ``net`` that a wrapper (a supermask or HAT network)
    converted: its model type and arguments when it is one of ours
    (:data:`MODEL_TYPES`), else ``None`` (the caller passes it to ``from_pretrained``)."""
    if isinstance(net, HubModel) and net.hub_model_type is not None:
        return {"model_type": net.hub_model_type, "arguments": net.hub_arguments()}
    return None


def backbone_from(
    stored: dict[str, Any] | None, backbone: nn.Module | None, wrapper: str
) -> nn.Module:
    """The backbone a wrapper's ``hub_build`` converts: ``backbone`` as the caller
    passed it, else the one :func:`backbone_entry` stored; :class:`ModelFolderError`
    when neither is there."""
    if backbone is not None:
        return backbone
    if stored is None:
        raise ModelFolderError(
            f"this {wrapper} wraps a backbone that avalanche-ctr cannot rebuild (not one of "
            f"its registered models); pass it, built as before training and not converted, "
            f"as {wrapper}.from_pretrained(folder, backbone=...)"
        )
    return MODEL_TYPES[stored["model_type"]].hub_build(stored["arguments"])


def _register_ours() -> None:
    """Import our model modules, whose class statements register their types."""
    import avalanche_ctr.experiments.backbones  # noqa: F401
    import avalanche_ctr.hat  # noqa: F401
    import avalanche_ctr.models  # noqa: F401


# ----------------------------------------------------------------------------- model card
def _task_classes(model: nn.Module, task: int) -> list[int]:
    known = getattr(model, "task_classes", None)
    if known is not None:
        return known(task)
    for module in model.modules():
        units = getattr(module, f"active_units_T{task}", None)
        if isinstance(units, torch.Tensor):
            return [int(c) for c in units.nonzero().flatten().tolist()]
    return []


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def model_card_text(
    model: nn.Module,
    *,
    strategy: str | None = None,
    record: dict[str, Any] | None = None,
    task_names: list[str] | None = None,
    tokenizer: bool = False,
    repo_id: str | None = None,
) -> str:
    """The model card's Markdown: the method and its paper, the tasks learned in order
    with their classes (and, given the run's ``record``, the accuracy on each after
    learning it and at the end), the density of a supermask model, how to load it.

    :param strategy: the method's name (default: the model type's).
    :param record: a run's record (its ``acc_matrix``, benchmark and seed).
    :param task_names: the tasks' names in training order (text benchmarks).
    :param tokenizer: the folder holds the encoder's tokenizer files.
    :param repo_id: the Hub repository, for the loading example."""
    model_type = getattr(model, "hub_model_type", None)
    method = strategy or _DEFAULT_METHOD.get(model_type or "", None)
    title, paper = METHODS.get(method or "", (None, None))
    cls = type(model).__name__
    lines = [f"# {cls} ({method or model_type}) trained with {LIBRARY_NAME}", ""]
    if title is not None:
        lines += [f"**Method.** {title}.", "", f"**Paper.** {paper}.", ""]
    elif method is not None:
        lines += [f"**Method.** Avalanche's {method} strategy on this model.", ""]
    tasks = [int(t) for t in getattr(model, "trained_tasks", [])]
    if not tasks and record is not None:
        tasks = list(range(len(record.get("acc_matrix", []))))
    density = getattr(model, "density", None)
    if density is not None:
        lines += [f"**Density.** Each task's supermask keeps {100 * density:g}% of the weights."]
        masks = getattr(model, "task_masks", None)
        if masks is not None and tasks:
            kept = [
                sum(int(m.sum()) for m in masks(t)) / max(1, getattr(model, "n_maskable", 1))
                for t in tasks
            ]
            lines += [
                "Measured per task: " + ", ".join(f"{100 * k:.2f}%" for k in kept) + ".",
            ]
        lines += [""]
    acc = (record or {}).get("acc_matrix", [])
    lines += [f"**Tasks learned, in order** ({len(tasks)}):", ""]
    header = "| order | task label | task | classes (labels within the task) |"
    rule = "|---|---|---|---|"
    if acc:
        header += " accuracy after learning it (%) | final accuracy (%) |"
        rule += "---|---|"
    lines += [header, rule]
    for position, task in enumerate(tasks):
        classes = ", ".join(str(c) for c in _task_classes(model, task)) or "not recorded"
        name = task_names[position] if task_names and position < len(task_names) else ""
        row = f"| {position + 1} | {task} | {name} | {classes} |"
        if acc:
            own = acc[position][position] if position < len(acc) else None
            final = acc[-1][position] if position < len(acc[-1]) else None
            row += f" {_percent(own)} | {_percent(final)} |"
        lines.append(row)
    if record is not None and record.get("benchmark"):
        lines += ["", f"Trained on `{record['benchmark']}`, seed {record.get('seed')}."]
    source = repo_id or "path/to/this/folder"
    text = (
        [
            "from transformers import AutoTokenizer",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{source}")',
            'batch = tokenizer(texts, padding="max_length", truncation=True, max_length=128,',
            '                  return_tensors="pt")',
            'x = torch.stack([batch["input_ids"], batch["attention_mask"],',
            '                 batch["token_type_ids"]], dim=1)  # (batch, 3, length)',
        ]
        if tokenizer
        else []
    )
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "import torch",
        f"from {type(model).__module__} import {cls}",
        "",
        f'model = {cls}.from_pretrained("{source}")',
        *text,
        "model(x, task_labels)  # outputs of every learned task, as at the end of training",
        "```",
        "",
        "Any avalanche-ctr model folder also loads with "
        f'`avalanche_ctr.hub.HubModel.from_pretrained("{source}")`. Give the loaded model '
        "to a new strategy of the same method to go on learning new tasks.",
    ]
    if model_type in ("supermask", "hat") and model.hub_arguments().get("backbone") is None:
        lines += [
            "",
            f"This {cls} wraps a backbone avalanche-ctr cannot rebuild by itself: "
            "pass it, built as before training, with "
            f'`{cls}.from_pretrained("{source}", backbone=...)`.',
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- export
def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    strategy: str | None = None,
    seed: int | None = None,
) -> Path:
    """Write the model folder of a finished run of ``avalanche-ctr run`` / ``compare``.

    :param run_dir: the run's ``--out`` (``runs/<strategy>-seed<k>.json`` and
        ``checkpoints/<strategy>-seed<k>.pt``).
    :param out_dir: the model folder to write.
    :param strategy: which run, if the folder holds several.
    :param seed: which seed, if the folder holds several.
    :raises UsageError: no finished run matches, or several do.
    :return: ``out_dir``.
    """
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_ctr.checkpoint import load_model
    from avalanche_ctr.experiments.errors import UsageError
    from avalanche_ctr.experiments.runner import Settings, build_strategy, run_paths
    from avalanche_ctr.experiments.strategies import all_options, get_strategy
    from avalanche_ctr.run_folder import read_record

    run_dir, out = Path(run_dir), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a folder (new or not) for the model folder")
    runs = sorted((run_dir / "runs").glob("*-seed*.json"))
    found = []
    for path in runs:
        name, _, number = path.stem.rpartition("-seed")
        if number.isdigit() and strategy in (None, name) and seed in (None, int(number)):
            found.append((name, int(number), path))
    if not found:
        chosen = " ".join(
            f"--{k} {v}" for k, v in (("strategy", strategy), ("seed", seed)) if v is not None
        )
        raise UsageError(
            f"{run_dir} holds no finished run{' for ' + chosen if chosen else ''} (no "
            f"{run_dir / 'runs'}/<strategy>-seed<k>.json); give the --out of a finished "
            "avalanche-ctr run or compare"
            + (f", or one of its runs: {_listed(runs)}" if runs else "")
        )
    if len(found) > 1:
        raise UsageError(
            f"{run_dir} holds {len(found)} runs ({_listed([p for _, _, p in found])}); choose "
            "one with --strategy and --seed"
        )
    name, number, record_path = found[0]
    saved = read_record(record_path)
    checkpoint, _ = run_paths(run_dir, name, number)
    known = set(all_options())
    stored = saved["identity"]["settings"]
    common = {f: stored[f] for f in Settings.__dataclass_fields__ if f in stored}
    common["device"] = "cpu"  # the folder is written from the CPU, whatever trained it
    settings = Settings(**common, options={k: v for k, v in stored.items() if k in known})
    built = build_strategy(
        settings, get_strategy(name), plugins=[], evaluator=EvaluationPlugin(loggers=[])
    )
    model = load_model(checkpoint, built.model)
    if not isinstance(model, HubModel):
        raise UsageError(
            f"{name}'s model ({type(model).__name__}) cannot be saved as a model folder; "
            f"export supports the models of: {', '.join(sorted(MODEL_TYPES))}"
        )
    text = settings.spec.modality == "text"
    card = {
        "strategy": name,
        "record": saved["record"],
        "task_names": settings.task_names,
        "tokenizer": text,
    }
    model.save_pretrained(out, model_card_kwargs=card)
    if text:
        from avalanche_ctr.text_encoder import load_tokenizer

        load_tokenizer(settings.encoder).save_pretrained(str(out))
    return out


def _listed(paths: list[Path]) -> str:
    names = []
    for path in paths:
        name, _, number = path.stem.rpartition("-seed")
        names.append(f"--strategy {name} --seed {number}")
    return "; ".join(names)
