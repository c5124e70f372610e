"""ExSSNeT (Yadav & Bansal, ACL Findings 2023) and its special cases SupSup and SSNeT.

Modules follow the paper's parts: :mod:`.supermask` (supermask layers),
:mod:`.supermask_net` (``SupermaskNet``, model conversion, bit-packed task masks),
:mod:`.exclusive` (exclusive weight training), :mod:`.kkt` (KNN-based knowledge
transfer), :mod:`.task_inference` (SupSup's task inference without task labels, and
its Avalanche metric), :mod:`.diagnostics` (exclusive fraction, mask overlaps and
KKT choices as Avalanche metrics), :mod:`.lifecycle` (``ExSSNeTPlugin``, the Avalanche plugin
that runs the phases) and :mod:`.strategy` (Avalanche strategies).
"""

from avalanche_ctr.exssnet.diagnostics import ExSSNeTDiagnostics, mask_diagnostics
from avalanche_ctr.exssnet.exclusive import exclusive_update, free_weights
from avalanche_ctr.exssnet.kkt import (
    KKT_PRESETS,
    KKTChoice,
    KKTSettings,
    knn_accuracy,
    select_source_task,
)
from avalanche_ctr.exssnet.lifecycle import ExSSNeTPlugin
from avalanche_ctr.exssnet.strategy import ExSSNeT, SupSup
from avalanche_ctr.exssnet.supermask import (
    SupermaskConv1d,
    SupermaskConv2d,
    SupermaskLinear,
    TaskBatchNorm,
    UnsupportedLayerError,
    signed_constant_,
)
from avalanche_ctr.exssnet.supermask_net import FrozenModule, SupermaskNet, convert_to_supermask
from avalanche_ctr.exssnet.task_inference import (
    infer,
    infer_task,
    predict_without_task,
    task_inference_metrics,
)

__all__ = [
    "ExSSNeT",
    "SupSup",
    "ExSSNeTPlugin",
    "SupermaskNet",
    "convert_to_supermask",
    "FrozenModule",
    "UnsupportedLayerError",
    "SupermaskLinear",
    "SupermaskConv1d",
    "SupermaskConv2d",
    "TaskBatchNorm",
    "signed_constant_",
    "exclusive_update",
    "free_weights",
    "KKTChoice",
    "KKTSettings",
    "KKT_PRESETS",
    "knn_accuracy",
    "select_source_task",
    "infer",
    "infer_task",
    "predict_without_task",
    "task_inference_metrics",
    "ExSSNeTDiagnostics",
    "mask_diagnostics",
]
