"""Adapter-BERT baselines of the CTR paper (Ke et al., NeurIPS 2021, Sec. 4): a frozen
BERT-family encoder with plain adapters shared by all tasks, or none, and per-task heads.

``AdapterBERT(encoder)`` puts ONE adapter (Houlsby et al., ICML 2019) in each of
the two places per transformer layer where :class:`~avalanche_ctr.models.CTRModel`
puts its CL-plugins: after the output projection and dropout of the attention
and of the feed-forward sublayer, before the residual add and LayerNorm. The
adapter is ``h + GELU(fc2(GELU(fc1(h))))``, the shape of CTR's task specific
module without HAT masks, and is shared by every task. ``adapters=False`` gives
the frozen encoder with per-task heads only. ``per_task_adapters=True`` gives every task
adapters of its own (:class:`TaskAdapters`), created when the task is first trained: one
independent model per task over the same frozen encoder, the ONE baseline of the CTR
paper (issue 25).

Unlike :class:`~avalanche_ctr.models.CTRModel` the model has no lifecycle of its
own: it is trained with any Avalanche strategy (``Naive``, ``EWC``, ...) that
passes task labels, growing one head per task through
:class:`~avalanche.models.MultiHeadClassifier`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.models import DynamicModule, MultiHeadClassifier
from torch import Tensor, nn

from avalanche_ctr.compat import PaddedMultiTaskModule
from avalanche_ctr.hub import HubModel
from avalanche_ctr.text_encoder import (
    TaskContext,
    check_pooling,
    load_encoder,
    plug_layers,
    pool_hidden,
    split_text_inputs,
)

__all__ = ["Adapter", "AdapterBERT", "TaskAdapters"]


class Adapter(nn.Module):
    """A bottleneck adapter ``h + GELU(fc2(GELU(fc1(h))))`` (``d → b → d``), with no
    task masks; called as ``adapter(h, context)`` like a CTR CL-plugin (the context is
    ignored).

    :param hidden_size: width ``d`` of the transformer layer.
    :param bottleneck: number of bottleneck units ``b``.
    """

    def __init__(self, hidden_size: int, bottleneck: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, bottleneck)
        self.fc2 = nn.Linear(bottleneck, hidden_size)

    def forward(self, h: Tensor, context: TaskContext | None = None) -> Tensor:
        return h + F.gelu(self.fc2(F.gelu(self.fc1(h))))


class TaskAdapters(DynamicModule):
    """One :class:`Adapter` per task label, each created when its task is first trained
    (Avalanche's model adaptation) and called for its own task only (``context.task``
    holds the task label); a task without adapters passes its input through.

    Training a task therefore gives no gradient to any other task's adapters, so an
    optimizer that skips parameters without gradients (Adam, SGD) leaves them exactly
    as they were.

    :param hidden_size: width ``d`` of the transformer layer.
    :param bottleneck: number of bottleneck units ``b``.
    """

    def __init__(self, hidden_size: int, bottleneck: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.bottleneck = bottleneck
        self.adapters = nn.ModuleDict()
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def add_task(self, task: int) -> None:
        """Create task ``task``'s adapter unless it exists."""
        if str(task) not in self.adapters:
            adapter = Adapter(self.hidden_size, self.bottleneck)
            self.adapters[str(task)] = adapter.to(self._device_probe.device)

    def adaptation(self, experience) -> None:
        """Adapters for the experience's tasks, when it is trained (not when evaluated)."""
        if self.training:
            for task in set(experience.task_labels):
                self.add_task(int(task))

    def grow_for_state(self, state: dict[str, Tensor], prefix: str = "") -> None:
        """Create the adapters that a state dict of this model trained further holds."""
        start = f"{prefix}adapters."
        for key in state:
            if key.startswith(start):
                self.add_task(int(key[len(start) :].split(".")[0]))

    def forward(self, h: Tensor, context: TaskContext) -> Tensor:
        adapter = self.adapters[str(context.task)] if str(context.task) in self.adapters else None
        return h if adapter is None else adapter(h)


class AdapterBERT(PaddedMultiTaskModule, HubModel, model_type="adapter_bert"):
    """A frozen BERT-family encoder, optionally with one adapter shared by all tasks
    in each of two places per layer, and per-task heads on the pooled output.

    Inputs are ``(batch, 3, length)`` integer tensors stacking ``input_ids``,
    ``attention_mask`` and ``token_type_ids`` (as built by
    :func:`avalanche_ctr.benchmarks.text_benchmark`), as for
    :class:`~avalanche_ctr.models.CTRModel`.

    The encoder is frozen (``requires_grad=False``); the adapters and the heads are
    trainable. Give the strategy an optimizer over the trainable parameters only
    (``[p for p in model.parameters() if p.requires_grad]``): Avalanche then adds each
    new head to its single parameter group.

    :param encoder: a transformers ``BertModel`` (or any encoder whose
        ``encoder.layer[i]`` has BERT's ``attention.output`` and ``output``
        sublayers), a hub name or local path, or ``None`` for the packaged
        all-MiniLM-L6-v2.
    :param bottleneck: adapter bottleneck units.
    :param adapters: ``False`` leaves the encoder as it is (frozen encoder + heads).
    :param per_task_adapters: every task gets adapters of its own (:class:`TaskAdapters`)
        instead of sharing one set (the ONE baseline).
    :param pooling: ``"mean"`` (masked mean of the last hidden states) or
        ``"cls"`` (the first token's last hidden state).
    """

    def __init__(
        self,
        encoder: str | nn.Module | None = None,
        *,
        bottleneck: int = 128,
        adapters: bool = True,
        per_task_adapters: bool = False,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        check_pooling(pooling)
        if per_task_adapters and not adapters:
            raise ValueError("per_task_adapters=True needs adapters=True")
        self.encoder = load_encoder(encoder)
        self.encoder.requires_grad_(False)
        hidden = self.encoder.config.hidden_size
        self.context = TaskContext()
        if per_task_adapters:
            plug_layers(self.encoder, lambda width: TaskAdapters(width, bottleneck), self.context)
        elif adapters:
            plug_layers(self.encoder, lambda width: Adapter(width, bottleneck), self.context)
        self.classifier = MultiHeadClassifier(hidden)
        self.pooling = pooling

    @property
    def adapters(self) -> list[Adapter]:
        """The adapters, two per layer in order (empty with ``adapters=False``)."""
        return [m for m in self.modules() if isinstance(m, Adapter)]

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        input_ids, attention_mask, token_type_ids = split_text_inputs(x, "AdapterBERT")
        self.context.task = int(task_label)
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.classifier(pool_hidden(hidden, attention_mask, self.pooling), task_label)
