"""CTRModel: a frozen BERT-family encoder with CTR's CL-plugins and per-task heads
(CTR, Ke et al., NeurIPS 2021, Sec. 3)."""

from __future__ import annotations

import hashlib
import itertools
import math

import torch
import torch.distributed as dist
from avalanche.models import MultiHeadClassifier
from torch import Tensor, nn

from avalanche_ctr.compat import PaddedMultiTaskModule
from avalanche_ctr.ctr.cl_plugin import CLPlugin, CLPluginConfig
from avalanche_ctr.hat.masks import HATMask, HATModel
from avalanche_ctr.hub import HubModel
from avalanche_ctr.masking import PartialFreeze
from avalanche_ctr.text_encoder import (
    TaskContext,
    check_pooling,
    load_encoder,
    plug_layers,
    pool_hidden,
    split_text_inputs,
)

__all__ = ["CTRModel", "KSM_INITS", "KSM_KINDS"]

KSM_INITS = ("zero", "random")
"""Initialisations of the KSM's projection (:class:`CTRModel` ``ksm_init``)."""

KSM_KINDS = ("protected", "official")
"""Knowledge sharing modules (:class:`CTRModel` ``ksm``)."""


class CTRModel(HATModel, PaddedMultiTaskModule, HubModel, model_type="ctr"):
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
    :param s_max: HAT's largest mask scale, reached at the end of every training epoch
        (the test-time masks are binary, see :mod:`~avalanche_ctr.hat.masks`).
    :param pooling: ``"mean"`` (masked mean of the last hidden states) or
        ``"cls"`` (the first token's last hidden state).
    :param knowledge_sharing: ``False`` gives the paper's "CTR without KSM"
        ablation: each CL-plugin is then only the TSM, an adapter with HAT masks.
    :param ksm_seed: seed of the KSM's own random numbers (its initial parameters and
        the training gates' Gumbel noise); default ``torch.initial_seed()``. The KSM
        draws nothing from PyTorch's global generator, so a model with
        ``knowledge_sharing=False`` built and trained after the same ``torch.manual_seed``
        gets the same TSM initialisation, heads, dropout and batch order.
    :param ksm_init: ``"zero"`` starts the KSM's shared projection to the layer width at
        zero (the first task starts as adapter + HAT); ``"random"`` at PyTorch's default,
        as the official code (the KSM's output then matters from the first step).
    :param mask_init_mean: mean of every HAT mask's initial embeddings ``N(mean, 1)``
        (HAT: 0). Each task starts with a fraction ``Φ(mean)`` of every layer's units on
        and, over a short task, keeps about that much (``docs/ctr.md``): below 0, tasks
        claim less and capacity lasts for more tasks.
    :param gate_bias: initial margin of every KSM gate's "use" logit over its "skip"
        logit. At 0 (PyTorch's initialisation, the default) a gate is on for about half of
        the training samples, by its Gumbel noise, and at evaluation takes the sign of an
        untrained logit; at ``b > 0`` a source starts on with probability about
        ``σ(b)`` in training and on at evaluation, and training may switch it off.
    :param ksm: ``"protected"`` (default): the shared routing is HAT-protected and a
        task's capsule and ``W_{t·}`` freeze once a later task reads them, so no task
        changes another's outputs. ``"official"``: the official code's plastic KSM
        (issue 25, ``docs/ctr.md``): every task's capsule and routing weights exist from
        the start, training task ``t`` retrains the capsules of all tasks ``≤ t``, one
        gate and one attention layer are shared, and nothing protects the shared routing
        and projection, so earlier tasks may forget.
    :param n_tasks: the number of tasks of the stream; required by ``ksm="official"``,
        which allocates them up front (training more tasks raises an error).
    :param official_batch_mixing: with ``ksm="official"``, reproduce the official code's
        ``view``/``repeat`` calls that make a sample's transfer output depend on the other
        samples of its batch. Only for measuring that leak (``benchmarks/ctr_leak_test.py``).
    :param train_layernorm: the encoder's LayerNorms train with every task, shared and
        unprotected, as in the official code (its regime, issue 25); earlier tasks may then
        forget. Default ``False``: the encoder is frozen whole.
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
        ksm_seed: int | None = None,
        ksm_init: str = "zero",
        mask_init_mean: float = 0.0,
        gate_bias: float = 0.0,
        ksm: str = "protected",
        n_tasks: int | None = None,
        official_batch_mixing: bool = False,
        train_layernorm: bool = False,
    ) -> None:
        super().__init__()
        check_pooling(pooling)
        _check_ksm(ksm, n_tasks, official_batch_mixing, knowledge_sharing)
        self.ksm = ksm
        self.n_tasks = n_tasks
        self.train_layernorm = train_layernorm
        if ksm_init not in KSM_INITS:
            raise ValueError(f"ksm_init must be one of {', '.join(KSM_INITS)}, got {ksm_init!r}")
        if not math.isfinite(mask_init_mean):
            raise ValueError(f"mask_init_mean must be a finite number, got {mask_init_mean}")
        if not math.isfinite(gate_bias):
            raise ValueError(f"gate_bias must be a finite number, got {gate_bias}")
        seed = torch.initial_seed() if ksm_seed is None else int(ksm_seed)
        self.register_buffer("ksm_seed", torch.tensor(seed % 2**62, dtype=torch.long))
        self.register_buffer("training_sessions", torch.zeros((), dtype=torch.long))
        self._generator: torch.Generator | None = None
        self.encoder = load_encoder(encoder)
        self.encoder.requires_grad_(False)
        config = CLPluginConfig(
            bottleneck=bottleneck,
            capsule_dim=capsule_dim,
            capsule_hidden=capsule_hidden,
            n_transfer=n_transfer_capsules,
            channels=routing_channels,
            knowledge_sharing=knowledge_sharing,
            zero_projection=ksm_init == "zero",
            mask_init_mean=mask_init_mean,
            gate_bias=gate_bias,
            official_ksm=ksm == "official",
            n_tasks=n_tasks if ksm == "official" else None,
            batch_mixing=official_batch_mixing,
        )
        self.context = TaskContext(s=s_max)
        count = itertools.count()
        plug_layers(
            self.encoder,
            lambda width: CLPlugin(width, config, ksm_seed=self._seed("init", next(count))),
            self.context,
        )
        self._plugins = tuple(m for m in self.encoder.modules() if isinstance(m, CLPlugin))
        hidden = self.encoder.config.hidden_size
        self.classifier = MultiHeadClassifier(hidden)
        self.s_max = float(s_max)
        self.s = float(s_max)
        self.pooling = pooling
        self._register_task_state()

    # ------------------------------------------------------------------ tasks
    @property
    def plugins(self) -> list[CLPlugin]:
        """The CL-plugins, two per layer in order (found once, when they are plugged in:
        walking every module costs milliseconds, and a training step asks several times)."""
        return list(self._plugins)

    def start_task(self, task: int) -> None:
        """Begin training ``task``: install its capsule, routing parts and mask embeddings
        in every plugin, or, for a task trained before, continue with its own; then fix
        which TSM and KSM units the other tasks use (HAT's ``a^{<t}``, see
        :meth:`~avalanche_ctr.hat.masks.HATMask.begin_task`)."""
        new = task not in self.trained_tasks
        if new and self.n_tasks is not None and len(self.task_labels) >= self.n_tasks:
            raise ValueError(
                f"this CTRModel(ksm='official') was built for n_tasks={self.n_tasks} and has "
                f"trained tasks {self.trained_tasks}; task {task} would be one more: build it "
                "with n_tasks set to the stream's number of tasks"
            )
        super().start_task(task)
        self.training_sessions += 1
        self._generator = None

    def _seed(self, *parts: object) -> int:
        """A seed of the KSM's own random stream for ``parts`` (e.g. a task index)."""
        text = ",".join(str(p) for p in (int(self.ksm_seed), *parts))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")

    def _install_task(self, task: int) -> list[nn.Parameter]:
        index = self._append_task_label(task)
        return [
            param
            for number, plugin in enumerate(self.plugins)
            for param in plugin.add_task(ksm_seed=self._seed("task", index, number))
        ]

    def finish_task(self) -> None:
        """Fold the training task's masks into the cumulative masks and freeze it."""
        super().finish_task()
        self._generator = None

    def set_trainable(self) -> None:
        """Only the training task's parameters, the shared TSM and KSM layers (protected
        by the HAT gradient masks), the task's head and, with ``train_layernorm``, the
        encoder's LayerNorms (unprotected) are trainable.

        A task trained again keeps its capsule and ``W_{t·}`` frozen once a later task
        exists: the later task's routing reads them."""
        task = self.training_task
        if task is None:
            raise RuntimeError("no task is in training; call start_task first")
        index = self.training_index
        last = index == len(self.task_labels) - 1
        self.requires_grad_(False)
        for plugin in self.plugins:
            plugin.set_trainable(index, owns_sources=last)
        if self.train_layernorm:
            for module in self.encoder.modules():
                if isinstance(module, nn.LayerNorm):
                    module.requires_grad_(True)
        self.classifier.classifiers[str(task)].requires_grad_(True)

    # ----------------------------------------------------------- HAT helpers
    def masks(self) -> list[HATMask]:
        """Every HAT mask of the model (TSM and KSM units of every CL-plugin)."""
        return [mask for plugin in self.plugins for _, mask in plugin.named_masks]

    @property
    def heads(self) -> list[MultiHeadClassifier]:
        return [self.classifier]

    def protection(self) -> PartialFreeze:
        """Freeze of every shared TSM and KSM weight that other tasks use (HAT Eq. 2,
        exact)."""
        return PartialFreeze([pair for plugin in self.plugins for pair in plugin.free_entries()])

    def _training_generator(self, device: torch.device) -> torch.Generator:
        """The generator of the training gates' Gumbel noise: seeded anew for every
        training session (:meth:`start_task`) from ``ksm_seed`` (and, under torchrun, the
        rank, so that the ranks' samples draw different noise), so a run resumed from a
        checkpoint between experiences draws what an uninterrupted run draws."""
        if self._generator is None or self._generator.device != device:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            parts = ("gates", int(self.training_sessions), *((rank,) if rank else ()))
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self._seed(*parts))
        return self._generator

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
    def eval_state(self) -> list:
        """The last routing gates of every plugin (evaluation overwrites them;
        :class:`~avalanche_ctr.tasks.TaskIncrementalPlugin` puts them back)."""
        return [plugin.last_gates for plugin in self.plugins]

    def load_eval_state(self, state: list) -> None:
        for plugin, gates in zip(self.plugins, state, strict=True):
            plugin.last_gates = gates

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:
        """Logits of task ``task_label`` for ``x``.

        A task never trained has no units claimed in any CL-plugin, so every plugin
        passes its input through unchanged and the task's head reads the frozen
        encoder's output."""
        labels = self.task_labels
        task_label = int(task_label)
        if str(task_label) not in self.classifier.classifiers:
            raise ValueError(
                f"task {task_label} was never trained by this model and has no head (trained "
                f"tasks: {self.trained_tasks}); evaluate it with strategy.eval(...), which "
                "gives an untrained task a temporary head, or train it first"
            )
        input_ids, attention_mask, token_type_ids = split_text_inputs(x, "CTRModel")
        self.context.task = labels.index(task_label) if task_label in labels else None
        self.context.s = self.s if self.training else None
        # checked once per forward, not in every CL-plugin: no padding, no padding masks
        self.context.keep = None if bool(attention_mask.all()) else attention_mask.bool()
        self.context.generator = (
            self._training_generator(input_ids.device) if self.training else None
        )
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.classifier(pool_hidden(hidden, attention_mask, self.pooling), task_label)


def _check_ksm(ksm: str, n_tasks: int | None, mixing: bool, knowledge_sharing: bool) -> None:
    """``ValueError`` naming the fix when the KSM options do not fit together."""
    if ksm not in KSM_KINDS:
        raise ValueError(f"ksm must be one of {', '.join(KSM_KINDS)}, got {ksm!r}")
    if ksm == "official":
        if not knowledge_sharing:
            raise ValueError("ksm='official' needs knowledge_sharing=True (it is a KSM)")
        if n_tasks is None or n_tasks < 1:
            raise ValueError(
                "ksm='official' allocates every task up front: give n_tasks, the stream's "
                f"number of tasks (got {n_tasks})"
            )
    elif n_tasks is not None or mixing:
        raise ValueError(
            "n_tasks and official_batch_mixing belong to ksm='official'; leave them out or "
            "pass ksm='official'"
        )
