"""Mask mechanics shared by the methods of this package.

* bit-packing of boolean masks (1 bit per weight), used to keep finished
  tasks' supermasks compactly (ExSSNeT, Sec. 3);
* partial freezing of parameters (gradient masking plus restoration), used by
  ExSSNeT's exclusive weight training and CTR's task masks, and ``W ⊙ M`` of a
  boolean mask (:func:`apply_mask`), both by selection so that no NaN or infinity
  outside a mask reaches what the mask keeps;
* the top-k supermask with a straight-through estimator (edge-popup,
  Ramanujan et al., CVPR 2020, Sec. 3; SupSup, Wortsman et al., NeurIPS 2020,
  Sec. 3.1).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "pack_mask",
    "unpack_mask",
    "topk_mask",
    "TOPK_RULES",
    "TopKStraightThrough",
    "n_kept",
    "apply_mask",
    "PartialFreeze",
]

_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)


def pack_mask(mask: Tensor) -> Tensor:
    """Pack a boolean mask of any shape into ``ceil(numel / 8)`` bytes.

    :param mask: a boolean (or 0/1) tensor.
    :return: a flat ``uint8`` tensor, most significant bit first.
    """
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = _SHIFTS.to(flat.device)
    return (flat.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_mask`: a boolean tensor of ``shape``."""
    numel = 1
    for dim in shape:
        numel *= dim
    shifts = _SHIFTS.to(packed.device)
    bits = (packed.view(-1, 1) >> shifts) & 1
    return bits.reshape(-1)[:numel].view(shape).bool()


def n_kept(numel: int, density: float) -> int:
    """Number of weights a layer keeps at ``density`` (at least one)."""
    return max(1, int(round(density * numel)))


TOPK_RULES: tuple[str, ...] = ("layer", "unit", "layer_floor")
"""How a mask spends its ``k`` weights (:func:`topk_mask`): the top ``k`` of the whole
tensor (edge-popup), the top ``k`` of every row, or the top ``k`` of the whole tensor
with at least ``floor`` in every row."""


def topk_mask(scores: Tensor, k: int, *, rule: str = "layer", floor: int = 0) -> Tensor:
    """Boolean mask of the ``k`` entries of largest ``|scores|`` (ties broken by index).

    :param rule: ``"layer"``: the top ``k`` overall; ``"unit"``: the top ``k`` of every
        row (every slice along the first dimension, e.g. every output unit's fan-in);
        ``"layer_floor"``: the top ``floor`` of every row, then the top of the rest
        overall, ``k`` in all (needs ``floor * rows <= k``).
    :param floor: entries every row keeps under ``"layer_floor"``.
    """
    magnitude = scores.detach().abs()
    rows = magnitude.reshape(magnitude.shape[0], -1)
    if rule == "unit":
        return _row_topk(rows, k).view_as(scores)
    if rule not in TOPK_RULES:
        raise ValueError(f"unknown top-k rule {rule!r}; use one of {', '.join(TOPK_RULES)}")
    flat = magnitude.reshape(-1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if rule == "layer_floor" and floor > 0:
        if floor * rows.shape[0] > k:
            raise ValueError(
                f"a floor of {floor} weights in each of {rows.shape[0]} units needs k >= "
                f"{floor * rows.shape[0]}, got k = {k}; lower the floor or raise the density"
            )
        mask = _row_topk(rows, floor).reshape(-1)
        k -= floor * rows.shape[0]
        flat = flat.masked_fill(mask, -1.0)  # magnitudes are >= 0: the floor is not chosen twice
    if k > 0:
        mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.view_as(scores)


def apply_mask(values: Tensor, mask: Tensor) -> Tensor:
    """``values ⊙ mask`` for a boolean ``mask`` (broadcastable), by selection: 0 outside
    the mask whatever ``values`` holds there. A product would not be: ``NaN · 0`` and
    ``inf · 0`` are NaN."""
    return torch.where(mask, values, values.new_zeros(()))


def _row_topk(rows: Tensor, k: int) -> Tensor:
    mask = torch.zeros_like(rows, dtype=torch.bool)
    mask.scatter_(1, torch.topk(rows, k, dim=1, sorted=False).indices, True)
    return mask


class TopKStraightThrough(torch.autograd.Function):
    """The supermask of a layer: ``1`` on the top-k ``|scores|``, ``0`` elsewhere.

    Forward selects the ``k`` largest scores by magnitude under ``rule`` (and
    ``floor``, see :func:`topk_mask`); backward passes the gradient straight
    through to the scores (edge-popup, Sec. 3; SupSup, Sec. 3.1). As in edge-popup
    the magnitude is taken inside, so the gradient that reaches a score is
    multiplied by its sign.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, k: int, rule: str = "layer", floor: int = 0) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(scores)
        return topk_mask(scores, k, rule=rule, floor=floor).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (scores,) = ctx.saved_tensors
        return grad_output * torch.sign(scores), None, None, None


class PartialFreeze:
    """Keep the entries of some parameters outside their ``free`` masks fixed.

    ``mask_gradients`` (after backward) zeroes their gradients;
    ``restore`` (after the optimizer step) puts back their values, since
    momentum, SGD's weight decay and AdamW's decoupled decay move entries
    whose gradient is zero. Together they hold for any optimizer.

    Both select entries (``masked_fill_``, ``torch.where``) instead of multiplying
    by a 0/1 mask: ``NaN · 0`` and ``inf · 0`` are NaN, so a product would let a
    non-finite gradient or update of the training task into the entries it must
    not change. A frozen entry is left exactly as it was whatever the free
    entries hold.

    :param pairs: ``(parameter, free)`` with ``free`` a boolean tensor
        broadcastable to the parameter: ``True`` where it may change.
    """

    def __init__(self, pairs: list[tuple[Tensor, Tensor]]) -> None:
        self.params = [param for param, _ in pairs]
        self.frozen = [(~free).expand_as(param) for param, free in pairs]
        self._values = [param.detach().clone() for param in self.params]

    def mask_gradients(self) -> None:
        for param, frozen in zip(self.params, self.frozen, strict=True):
            if param.grad is not None:
                param.grad.masked_fill_(frozen, 0.0)

    @torch.no_grad()
    def restore(self) -> None:
        for param, frozen, values in zip(self.params, self.frozen, self._values, strict=True):
            param.copy_(torch.where(frozen, values, param))
