"""Models of avalanche-ctr."""

from avalanche_ctr.ctr.ctr_model import CTRModel
from avalanche_ctr.exssnet.supermask_net import SupermaskNet, convert_to_supermask
from avalanche_ctr.hat.hat_net import HATNet, convert_to_hat
from avalanche_ctr.models.adapter_bert import Adapter, AdapterBERT
from avalanche_ctr.models.kim_cnn import FrozenTokenStates, KimCNN

__all__ = [
    "CTRModel",
    "SupermaskNet",
    "convert_to_supermask",
    "HATNet",
    "convert_to_hat",
    "AdapterBERT",
    "Adapter",
    "KimCNN",
    "FrozenTokenStates",
]
