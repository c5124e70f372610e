"""ExSSNeT's text model (Yadav & Bansal, ACL Findings 2023, Sec. 4, text experiments;
official ``models/text_model.py: CNNStatic``): a Kim-CNN (Kim, EMNLP 2014) over the
token states of a frozen pretrained encoder, with one output layer shared by every
task.

* :class:`FrozenTokenStates` -- the frozen encoder's hidden states (the last layer's,
  or those of a chosen layer) of the ``(batch, 3, length)`` text inputs, zero at
  padding, with a cache keyed by the
  tokens: the encoder is frozen and in evaluation mode, so a text's states are the
  same for every task, epoch and evaluation, and computing them once is enough;
* :class:`KimCNN` -- ``Conv1d`` with kernel sizes 3, 4 and 5 over those states,
  ReLU, max over time, concatenation and a ``Linear`` output layer.

Converted by :func:`~avalanche_ctr.exssnet.convert_to_supermask` (as the ExSSNeT and
SupSup strategies do), the convolutions and the output layer become supermask layers
(no bias, signed-constant weights) and the encoder, a
:class:`~avalanche_ctr.exssnet.FrozenModule`, is left as it is; a task's classifier is
then its mask over the shared output layer, as in the official model.

Departures from the official model: the convolutions have no bias (as every
supermask layer here); padding positions hold zeros rather than the encoder's states
of padding tokens, so a text's output does not depend on how much padding its batch
has; the official model pools over the full ``max_length``. ``layer`` (default: the
last, as the official model) reads an intermediate layer instead: all-MiniLM-L6-v2 is
trained for sentence similarity, and its last layer carries less of a review's
sentiment than its middle layers (``benchmarks/RESULTS.md``, "which layer").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avalanche_ctr.exssnet.supermask_net import FrozenModule
from avalanche_ctr.hub import HubModel
from avalanche_ctr.text_encoder import load_encoder, split_text_inputs

__all__ = ["FrozenTokenStates", "KimCNN", "check_layer"]


class FrozenTokenStates(FrozenModule):
    """A frozen encoder's token states, cached per text.

    Called on ``(batch, 3, length)`` integer inputs (``input_ids``,
    ``attention_mask``, ``token_type_ids``, as built by
    :func:`avalanche_ctr.benchmarks.text_benchmark`), it returns the hidden states
    ``(batch, length', hidden)`` of the last layer, or of layer ``layer``, zero at
    padding, ``length'`` being the batch's longest text
    (:func:`~avalanche_ctr.text_encoder.split_text_inputs`).

    **Cache.** A text's states are stored under the bytes of its real tokens (ids,
    token types and positions), on the device they were computed on, the first time
    the text is seen, until the stored states take ``cache_mb`` MiB; texts seen
    after that are computed every time (first come, first kept: a stream evaluated
    cyclically would keep evicting what an LRU cache is about to need). Each text
    takes ``tokens x hidden x 4`` bytes in float32: 128 tokens of all-MiniLM-L6-v2
    (384 units) are 192 KiB, so the default 2048 MiB holds about 10,900 such texts,
    e.g. DSC's ten domains at 500 training texts each and their test sets. The cache
    is not part of the state dict, is cleared when the inputs arrive on another
    device, and assumes the encoder does not change (it is frozen).

    :param encoder: a transformers encoder (``BertModel``, ...), called with
        ``input_ids``, ``attention_mask`` and ``token_type_ids``.
    :param layer: ``None`` (the last layer's states), or an index into the encoder's
        ``hidden_states``: 0 is the embedding layer's output, ``i`` the ``i``-th
        transformer layer's, negative indices count from the last.
    :param cache_mb: the cache's size in MiB (0: no cache).
    """

    def __init__(
        self, encoder: nn.Module, *, layer: int | None = None, cache_mb: float = 2048
    ) -> None:
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb must be 0 (no cache) or more, got {cache_mb}")
        super().__init__(encoder)
        n_layers = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
        self._layer = check_layer(layer, n_layers)
        self.cache_bytes = int(cache_mb * 2**20)
        self.cached_bytes = 0
        self.hits = 0
        self.misses = 0
        self._cache: dict[bytes, Tensor] = {}
        self._device: torch.device | None = None

    @property
    def layer(self) -> int | None:
        """The layer whose states it returns (``None``: the last); fixed, as the cache is."""
        return self._layer

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's hidden states."""
        return int(self.module.config.hidden_size)

    def clear_cache(self) -> None:
        """Forget every cached text."""
        self._cache.clear()
        self.cached_bytes = 0

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        ids, mask, types = split_text_inputs(x, "FrozenTokenStates")
        real = mask.bool()
        if not self.cache_bytes:
            return self._encode(ids, mask, types) * real.unsqueeze(-1)
        if self._device != ids.device:
            self.clear_cache()
            self._device = ids.device
        keys = _text_keys(ids, types, real)
        states = [self._cache.get(key) for key in keys]
        missing = [i for i, state in enumerate(states) if state is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            rows = torch.tensor(missing, device=ids.device)
            hidden = self._encode(ids[rows], mask[rows], types[rows])
            for row, i in enumerate(missing):
                states[i] = hidden[row, real[i]]
                self._keep(keys[i], states[i])
        first = states[0]
        out = first.new_zeros(len(states), ids.shape[1], first.shape[-1])
        for i, state in enumerate(states):
            out[i, real[i]] = state
        return out

    def _encode(self, ids: Tensor, mask: Tensor, types: Tensor) -> Tensor:
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if self._layer is None:
            return self.module(**inputs).last_hidden_state
        return self.module(**inputs, output_hidden_states=True).hidden_states[self._layer]

    def _keep(self, key: bytes, state: Tensor) -> None:
        size = state.numel() * state.element_size()
        if self.cached_bytes + size <= self.cache_bytes:
            self._cache[key] = state.clone()
            self.cached_bytes += size


def check_layer(layer: int | None, n_layers: int | None) -> int | None:
    """``layer`` if an encoder of ``n_layers`` transformer layers has it (see
    :class:`FrozenTokenStates`); :class:`TypeError` for a non-integer, :class:`ValueError`
    naming the valid range otherwise (``n_layers`` ``None``: the encoder's config does
    not say)."""
    if layer is None:
        return None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int or None (the last layer), got {layer!r}")
    if n_layers is None:
        raise ValueError(
            f"layer={layer} needs an encoder whose config gives num_hidden_layers; leave "
            f"layer unset to read the last layer's states"
        )
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ValueError(
            f"layer {layer} is out of range for an encoder with {n_layers} layers: use 0 (the "
            f"embeddings) to {n_layers} (the last layer), or -1 to -{n_layers + 1} from the end"
        )
    return layer


def _text_keys(ids: Tensor, types: Tensor, real: Tensor) -> list[bytes]:
    """One key per text: the bytes of its real tokens' ids, token types and positions
    (independent of the padding its batch leaves)."""
    ids, types, real = ids.cpu().numpy(), types.cpu().numpy(), real.cpu().numpy()
    keys = []
    for row_ids, row_types, row_real in zip(ids, types, real, strict=True):
        positions = row_real.nonzero()[0]
        keys.append(
            row_ids[positions].tobytes() + row_types[positions].tobytes() + positions.tobytes()
        )
    return keys


class KimCNN(nn.Module, HubModel, model_type="kim_cnn"):
    """A Kim-CNN over a frozen encoder's token states with one output layer shared by
    every task (ExSSNeT, Sec. 4; official ``CNNStatic``): for each kernel size
    ``k``, ``Conv1d(hidden, n_filters, k) → ReLU → max over time``; the pooled
    features of all sizes, concatenated, go to ``Linear(·, outputs)``.

    Give it to :class:`~avalanche_ctr.training.ExSSNeT` / ``SupSup``, which mask the
    convolutions and the output layer per task (the encoder stays frozen); a dense
    strategy would train the convolutions and the shared output layer.

    :param encoder: a transformers encoder, a model name or folder, or ``None`` (the
        packaged all-MiniLM-L6-v2); frozen here.
    :param outputs: output units (at least the classes of any task; more are
        superfluous units).
    :param n_filters: filters per kernel size.
    :param kernel_sizes: the convolutions' kernel sizes.
    :param layer: the encoder layer whose token states it reads
        (:class:`FrozenTokenStates`; default: the last).
    :param cache_mb: size of the token-state cache (:class:`FrozenTokenStates`).
    """

    def __init__(
        self,
        encoder: nn.Module | str | None = None,
        *,
        outputs: int = 2,
        n_filters: int = 100,
        kernel_sizes: tuple[int, ...] = (3, 4, 5),
        layer: int | None = None,
        cache_mb: float = 2048,
    ) -> None:
        super().__init__()
        if outputs < 1 or n_filters < 1:
            raise ValueError(f"outputs and n_filters must be positive, got {outputs}, {n_filters}")
        if not kernel_sizes or min(kernel_sizes) < 1:
            raise ValueError(f"kernel_sizes must be positive sizes, got {kernel_sizes}")
        self.token_states = FrozenTokenStates(load_encoder(encoder), layer=layer, cache_mb=cache_mb)
        hidden = self.token_states.hidden_size
        self.kernel_sizes = tuple(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, n_filters, k) for k in self.kernel_sizes)
        self.act = nn.ReLU()
        self.output = nn.Linear(n_filters * len(self.kernel_sizes), outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.token_states(x))

    def classify(self, states: Tensor) -> Tensor:
        """The outputs for token states ``(batch, length, hidden)``, zero at padding."""
        states = states.transpose(1, 2)  # (batch, hidden, length)
        short = max(self.kernel_sizes) - states.shape[-1]
        if short > 0:  # texts shorter than the widest kernel: zeros, as padding
            states = nn.functional.pad(states, (0, short))
        pooled = [self.act(conv(states)).amax(dim=-1) for conv in self.convs]
        return self.output(torch.cat(pooled, dim=1))
