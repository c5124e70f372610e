"""CTR's CL-plugin (CTR, Ke et al., NeurIPS 2021, Sec. 3.1, Fig. 1).

A CL-plugin sits in every transformer layer twice (inserted by
:func:`avalanche_ctr.text_encoder.plug_layers`): after the output projection (and
dropout) of the attention sublayer and of the feed-forward sublayer, before the
residual add and LayerNorm. For task ``t``:

``KSM_t(h) = Routing_t(TK-Layer(h))`` (the shared transfer routing of
:mod:`~avalanche_ctr.ctr.routing`, with task ``t``'s masks, gate and attention),
``CL-plugin(h) = h + TSM_t(h + KSM(h))``

as in the official code, where the TSM output is added to its input by a skip
connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avalanche_ctr.ctr.routing import KnowledgeSharingModule
from avalanche_ctr.ctr.task_masks import TaskSpecificModule
from avalanche_ctr.hat.masks import HATMask
from avalanche_ctr.text_encoder import TaskContext

__all__ = ["CLPluginConfig", "CLPlugin"]


@dataclass(frozen=True)
class CLPluginConfig:
    """Sizes of a CL-plugin.

    :param bottleneck: units of the TSM bottleneck (the paper's adapter size).
    :param capsule_dim: dimension of a task capsule.
    :param capsule_hidden: hidden width of a task capsule's 2-layer network.
    :param n_transfer: number of transfer capsules.
    :param channels: channels of each routing similarity convolution.
    :param knowledge_sharing: ``False`` drops the KSM (the paper's "CTR without
        KSM" ablation, i.e. adapters with HAT masks).
    :param zero_projection: the KSM's projection to the layer width starts at zero
        (else at random, as the official code).
    :param mask_init_mean: mean of every HAT mask's initial embeddings (HAT: 0).
    :param gate_bias: initial margin of every KSM gate's "use" logit (0: at chance).
    :param official_ksm: the official code's plastic KSM
        (:class:`~avalanche_ctr.ctr.routing.KnowledgeSharingModule` ``official``).
    :param n_tasks: with ``official_ksm``, the number of tasks, allocated up front.
    :param batch_mixing: with ``official_ksm``, the official sample mixing.
    """

    bottleneck: int = 128
    capsule_dim: int = 3
    capsule_hidden: int = 32
    n_transfer: int = 3
    channels: int = 32
    knowledge_sharing: bool = True
    zero_projection: bool = True
    mask_init_mean: float = 0.0
    gate_bias: float = 0.0
    official_ksm: bool = False
    n_tasks: int | None = None
    batch_mixing: bool = False


class CLPlugin(nn.Module):
    """One CL-plugin: Knowledge Sharing Module + Task Specific Module.

    The KSM's parameters are drawn from a generator of their own seeded by
    ``ksm_seed`` (here and in :meth:`add_task`), not from PyTorch's global one: a
    model with a KSM and one without then draw the same global random numbers, so
    their TSMs, heads and batch orders match (paired comparisons).

    :param hidden_size: width of the transformer layer.
    :param config: plugin sizes.
    :param ksm_seed: seed of the KSM's initial parameters.
    """

    def __init__(self, hidden_size: int, config: CLPluginConfig, ksm_seed: int = 0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.config = config
        self.tsm = TaskSpecificModule(hidden_size, config.bottleneck, config.mask_init_mean)
        self.ksm: KnowledgeSharingModule | None = None
        if config.knowledge_sharing:
            with _own_random_stream(ksm_seed):
                self.ksm = KnowledgeSharingModule(
                    hidden_size,
                    config.capsule_hidden,
                    config.capsule_dim,
                    config.n_transfer,
                    config.channels,
                    zero_projection=config.zero_projection,
                    mask_init_mean=config.mask_init_mean,
                    gate_bias=config.gate_bias,
                    official=config.official_ksm,
                    n_tasks=config.n_tasks,
                    batch_mixing=config.batch_mixing,
                )
        self.last_gates: Tensor | None = None

    @property
    def named_masks(self) -> list[tuple[str, HATMask]]:
        """Every HAT mask of the plugin, named: the TSM's ``Bottleneck`` and ``Hidden``
        units, and with a protected KSM its ``KSM.Current``, ``KSM.Similarity`` and
        ``KSM.Projection`` units (the official KSM's projection mask is outside HAT's
        accounting)."""
        named = [("Bottleneck", self.tsm.mask1), ("Hidden", self.tsm.mask2)]
        if self.ksm is not None and not self.ksm.official:
            names = ("KSM.Current", "KSM.Similarity", "KSM.Projection")
            named += list(zip(names, self.ksm.masks, strict=True))
        return named

    def add_task(self, ksm_seed: int = 0) -> list[nn.Parameter]:
        """Install the new task's mask embeddings and, with a KSM, its capsule and routing
        parts (drawn from their own stream seeded by ``ksm_seed``); return their
        parameters (the task-owned ones)."""
        embeddings = self.tsm.add_task()
        if self.ksm is None:
            return embeddings
        with _own_random_stream(ksm_seed):
            return [*self.ksm.add_task(), *embeddings]

    def set_trainable(self, task: int, *, owns_sources: bool) -> None:
        """Task ``task``'s parameters and the shared layers (protected by
        :meth:`free_entries`) become trainable; see
        :meth:`~avalanche_ctr.ctr.routing.KnowledgeSharingModule.set_trainable`."""
        if self.ksm is not None:
            self.ksm.set_trainable(task, owns_sources=owns_sources)
        self.tsm.fc1.requires_grad_(True)
        self.tsm.fc2.requires_grad_(True)
        for mask in self.tsm.masks:
            mask.embeddings[task].requires_grad_(True)

    def free_entries(self) -> list[tuple[Tensor, Tensor]]:
        """The entries of the shared weights that no other task uses (HAT Eq. 2, exact)."""
        pairs = self.tsm.free_entries()
        if self.ksm is not None:
            pairs += self.ksm.free_entries()
        return pairs

    def forward(self, h: Tensor, context: TaskContext) -> Tensor:
        task = context.task
        if task is None:  # a task never trained claims no unit: the plugin is the identity
            return h
        if self.ksm is None:
            return h + self.tsm(h, task, context.s)
        transfer, self.last_gates = self.ksm(h, context.keep, task, context.s, context.generator)
        return h + self.tsm(h + transfer, task, context.s)


@contextmanager
def _own_random_stream(seed: int) -> Iterator[None]:
    """PyTorch's global CPU generator seeded with ``seed`` inside the block and put back
    afterwards, as if the block drew nothing (parameters are drawn on the CPU and then
    moved, so the CUDA generators are never used)."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.random.default_generator.manual_seed(seed)
        yield
