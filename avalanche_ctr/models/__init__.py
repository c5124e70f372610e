"""Models of avalanche-ctr."""

from avalanche_ctr.exssnet.model import SupermaskNet, convert_to_supermask

__all__ = ["SupermaskNet", "convert_to_supermask"]
