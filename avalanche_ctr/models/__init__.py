"""Models of avalanche-ctr."""

from avalanche_ctr.ctr.ctr_model import CTRModel
from avalanche_ctr.exssnet.supermask_net import SupermaskNet, convert_to_supermask
from avalanche_ctr.models.adapter_bert import Adapter, AdapterBERT
from avalanche_ctr.models.kim_cnn import FrozenTokenStates, KimCNN

__all__ = [
    "CTRModel",
    "SupermaskNet",
    "convert_to_supermask",
    "AdapterBERT",
    "Adapter",
    "KimCNN",
    "FrozenTokenStates",
]
