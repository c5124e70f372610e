"""HAT (Serra et al., ICML 2018, "Overcoming Catastrophic Forgetting with Hard Attention
to the Task") for any Avalanche model with per-task heads.

Modules: :mod:`.masks` (HAT's task masks and the task bookkeeping of any model with
them, shared with CTR's task specific and knowledge sharing modules), :mod:`.hat_net`
(``convert_to_hat`` and ``HATNet``), :mod:`.lifecycle` (``HATPlugin``, the Avalanche
plugin that trains a model with HAT masks task by task, in any strategy),
:mod:`.strategy` (the ``HAT`` strategy) and :mod:`.diagnostics` (``HATDiagnostics``:
free and used units and mask movement as Avalanche metrics). See ``docs/hat.md``.
"""

from avalanche_ctr.hat.diagnostics import HATDiagnostics
from avalanche_ctr.hat.hat_net import HATLayer, HATNet, UnsupportedLayerError, convert_to_hat
from avalanche_ctr.hat.lifecycle import HATPlugin
from avalanche_ctr.hat.masks import HATMask, HATModel, anneal_s
from avalanche_ctr.hat.strategy import HAT

__all__ = [
    "HAT",
    "HATPlugin",
    "HATNet",
    "HATLayer",
    "HATMask",
    "HATModel",
    "HATDiagnostics",
    "UnsupportedLayerError",
    "convert_to_hat",
    "anneal_s",
]
