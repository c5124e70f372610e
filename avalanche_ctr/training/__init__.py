"""Avalanche strategies and plugins of avalanche-ctr."""

from avalanche_ctr.ctr.plugin import CTRPlugin
from avalanche_ctr.ctr.strategy import CTR
from avalanche_ctr.exssnet.plugin import ExSSNeTPlugin
from avalanche_ctr.exssnet.strategy import ExSSNeT, SupSup

__all__ = ["ExSSNeT", "SupSup", "ExSSNeTPlugin", "CTR", "CTRPlugin"]
