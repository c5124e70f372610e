"""CTR's CL-plugin (CTR, Ke et al., NeurIPS 2021, Sec. 3.1, Fig. 1).

A CL-plugin sits in every transformer layer twice (inserted by
:func:`avalanche_ctr.text_encoder.plug_layers`): after the output
projection (and dropout) of the attention sublayer and of the feed-forward
sublayer, before the residual add and LayerNorm. For task ``t``:

``KSM(h) = TransferRouting_t(TK-Layer(h))``,
``CL-plugin(h) = h + TSM_t(h + KSM(h))``

as in the official code, where the TSM output is added to its input by a skip
connection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avalanche_ctr.ctr.capsules import TaskCapsuleLayer
from avalanche_ctr.ctr.routing import TransferRouting
from avalanche_ctr.ctr.task_masks import TaskSpecificModule
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
    """

    bottleneck: int = 128
    capsule_dim: int = 3
    capsule_hidden: int = 32
    n_transfer: int = 3
    channels: int = 32
    knowledge_sharing: bool = True


class CLPlugin(nn.Module):
    """One CL-plugin: Knowledge Sharing Module + Task Specific Module.

    :param hidden_size: width of the transformer layer.
    :param config: plugin sizes.
    """

    def __init__(self, hidden_size: int, config: CLPluginConfig) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.config = config
        self.task_capsules = TaskCapsuleLayer(
            hidden_size, config.capsule_hidden, config.capsule_dim
        )
        self.routings = nn.ModuleList()
        self.tsm = TaskSpecificModule(hidden_size, config.bottleneck)
        self.last_gates: Tensor | None = None

    def add_task(self) -> list[nn.Parameter]:
        """Install the new task's capsule, routing and mask embeddings; return their
        parameters (the task-owned ones)."""
        embeddings = self.tsm.add_task()
        if not self.config.knowledge_sharing:
            return embeddings
        device = self.tsm.fc1.weight.device
        capsule = self.task_capsules.add_task(device)
        c = self.config
        routing = TransferRouting(
            len(self.routings) + 1, c.capsule_dim, c.n_transfer, self.hidden_size, c.channels
        ).to(device)
        self.routings.append(routing)
        return [*capsule.parameters(), *routing.parameters(), *embeddings]

    def forward(self, h: Tensor, context: TaskContext) -> Tensor:
        task = context.task
        if task is None:  # a task never trained claims no unit: the plugin is the identity
            return h
        if not self.config.knowledge_sharing:
            return h + self.tsm(h, task, context.s)
        keep = context.keep
        if keep is None:
            keep = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        capsules = self.task_capsules(h, task + 1)
        transfer, self.last_gates = self.routings[task](capsules, keep)
        return h + self.tsm(h + transfer, task, context.s)
