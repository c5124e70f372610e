"""CTR (Ke et al., NeurIPS 2021): CL-plugins with a Knowledge Sharing Module and a
Task Specific Module inside every layer of a frozen BERT-family encoder.

Modules follow the paper's parts: :mod:`.capsules` (task capsule layer),
:mod:`.routing` (the Knowledge Sharing Module: task capsules, transfer capsule
layer and transfer routing, shared by the tasks and protected by HAT masks),
:mod:`.task_masks` (Task Specific Module with HAT masks, whose mechanics are
:mod:`avalanche_ctr.hat.masks`), :mod:`.cl_plugin`
(the CL-plugin), :mod:`.ctr_model` (``CTRModel``: the encoder with its
CL-plugins and heads), :mod:`.lifecycle` (``CTRPlugin``, the Avalanche plugin that
trains it task by task), :mod:`.strategy` (the ``CTR`` strategy) and
:mod:`.diagnostics` (``CTRDiagnostics``, Avalanche metrics of free capacity, mask
movement, transfer size and gate use). The encoder
mechanics CTR shares with its baselines are in :mod:`avalanche_ctr.text_encoder`.
"""

from avalanche_ctr.ctr.capsules import TaskCapsuleLayer, squash
from avalanche_ctr.ctr.cl_plugin import CLPlugin, CLPluginConfig
from avalanche_ctr.ctr.ctr_model import CTRModel
from avalanche_ctr.ctr.diagnostics import CTRDiagnostics
from avalanche_ctr.ctr.lifecycle import CTRPlugin, warmup_linear
from avalanche_ctr.ctr.routing import KnowledgeSharingModule, binary_gate
from avalanche_ctr.ctr.strategy import CTR
from avalanche_ctr.ctr.task_masks import TaskSpecificModule
from avalanche_ctr.hat.masks import HATMask, anneal_s

__all__ = [
    "CTR",
    "CTRPlugin",
    "CTRModel",
    "CTRDiagnostics",
    "CLPlugin",
    "CLPluginConfig",
    "TaskCapsuleLayer",
    "KnowledgeSharingModule",
    "TaskSpecificModule",
    "HATMask",
    "squash",
    "binary_gate",
    "anneal_s",
    "warmup_linear",
]
