"""Avalanche strategies and plugins of avalanche-ctr."""

from avalanche_ctr.ctr.lifecycle import CTRPlugin
from avalanche_ctr.ctr.strategy import CTR
from avalanche_ctr.exssnet.lifecycle import ExSSNeTPlugin
from avalanche_ctr.exssnet.strategy import ExSSNeT, SupSup
from avalanche_ctr.hat.lifecycle import HATPlugin
from avalanche_ctr.hat.strategy import HAT
from avalanche_ctr.training.bert_adam import BertAdam, BertAdamSchedule
from avalanche_ctr.training.joint import MultiTaskJoint

__all__ = [
    "ExSSNeT",
    "SupSup",
    "ExSSNeTPlugin",
    "CTR",
    "CTRPlugin",
    "HAT",
    "HATPlugin",
    "MultiTaskJoint",
    "BertAdam",
    "BertAdamSchedule",
]
