import math

import pytest
import torch

from avalanche_ctr.masking import (
    PartialFreeze,
    TopKStraightThrough,
    apply_mask,
    n_kept,
    pack_mask,
    topk_mask,
    unpack_mask,
)


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (13, 5), (4, 3, 3, 3)])
def test_pack_roundtrip_and_size(shape):
    mask = torch.rand(shape) > 0.5
    packed = pack_mask(mask)
    numel = math.prod(shape)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(numel / 8)
    assert torch.equal(unpack_mask(packed, shape), mask)


def test_topk_keeps_exactly_k_largest_magnitudes():
    scores = torch.tensor([[0.1, -3.0, 0.5], [2.0, -0.2, 0.0]])
    mask = topk_mask(scores, 2)
    assert mask.sum() == 2
    assert mask[0, 1] and mask[1, 0]


def test_topk_per_row_keeps_k_of_every_row():
    scores = torch.tensor([[0.1, -3.0, 0.5], [0.01, -0.2, 0.0]])
    assert topk_mask(scores, 2).tolist() == [[False, True, True], [False, False, False]]
    per_row = topk_mask(scores, 1, rule="unit")
    assert per_row.tolist() == [[False, True, False], [False, True, False]]
    grad_scores = scores.clone().requires_grad_(True)
    TopKStraightThrough.apply(grad_scores, 1, "unit").sum().backward()
    assert grad_scores.grad.tolist() == [[1.0, -1.0, 1.0], [1.0, -1.0, 0.0]]


@pytest.mark.parametrize(("rule", "floor"), [("layer", 0), ("unit", 0), ("layer_floor", 2)])
def test_every_topk_rule_keeps_exactly_k(rule, floor):
    scores = torch.randn(10, 30, generator=torch.Generator().manual_seed(0))
    scores[3:] *= 100  # units 0-2 hold the smallest scores: a layer-wide top-k skips them
    mask = topk_mask(scores, 3 if rule == "unit" else 40, rule=rule, floor=floor)
    per_unit = mask.sum(dim=1)
    if rule == "unit":
        assert per_unit.tolist() == [3] * 10
    else:
        assert int(mask.sum()) == 40
    if rule == "layer":
        assert per_unit[:3].tolist() == [0, 0, 0]
    if rule == "layer_floor":
        assert per_unit[:3].tolist() == [2, 2, 2] and int(per_unit.min()) == 2
        # the floor is each unit's top 2; the other 20 are the largest scores outside it
        floor_mask = topk_mask(scores, 2, rule="unit")
        rest, left_out = mask & ~floor_mask, ~mask
        assert (mask & floor_mask).equal(floor_mask) and int(rest.sum()) == 20
        assert scores.abs()[rest].min() > scores.abs()[left_out].max()


def test_a_floor_the_budget_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="needs k >= 20, got k = 15; lower the floor"):
        topk_mask(torch.randn(10, 5), 15, rule="layer_floor", floor=2)
    with pytest.raises(ValueError, match="unknown top-k rule 'rows'"):
        topk_mask(torch.randn(10, 5), 15, rule="rows")


def test_n_kept_rounds_and_keeps_at_least_one():
    assert n_kept(1000, 0.05) == 50
    assert n_kept(10, 0.01) == 1


def test_straight_through_gradient_passes_to_scores_with_sign():
    scores = torch.tensor([1.0, -2.0, 0.1, 0.3], requires_grad=True)
    mask = TopKStraightThrough.apply(scores, 2)
    assert mask.tolist() == [1.0, 1.0, 0.0, 0.0]
    (mask * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert scores.grad.tolist() == [1.0, -2.0, 3.0, 4.0]


NAN, INF = float("nan"), float("inf")


def test_partial_freeze_keeps_frozen_entries_exactly_through_nan_and_inf():
    param = torch.nn.Parameter(torch.tensor([[1.0, -2.0, 3.0], [-0.5, 0.25, 4.0]]))
    start = param.detach().clone()
    free = torch.tensor([[True, False, True], [False, True, False]])
    freeze = PartialFreeze([(param, free)])
    param.grad = torch.tensor([[NAN, NAN, INF], [-INF, 1.0, NAN]])
    freeze.mask_gradients()
    assert torch.equal(param.grad[~free], torch.zeros(3))  # no NaN · 0 left behind
    assert param.grad[0, 0].isnan() and param.grad[0, 2] == INF and param.grad[1, 1] == 1.0
    with torch.no_grad():  # an update that puts NaN and inf everywhere
        param.copy_(torch.tensor([[NAN, INF, -INF], [NAN, 7.0, INF]]))
    freeze.restore()
    assert torch.equal(param.detach()[~free], start[~free])
    assert param[0, 0].isnan() and param[0, 2] == -INF and param[1, 1] == 7.0  # free: as updated


def test_partial_freeze_with_a_row_mask_holds_against_an_optimizer_fed_nan():
    layer = torch.nn.Linear(3, 4)
    start = layer.weight.detach().clone()
    free_rows = torch.tensor([True, False, False, True])[:, None]  # broadcast over the inputs
    freeze = PartialFreeze([(layer.weight, free_rows)])
    optimizer = torch.optim.SGD([layer.weight], lr=0.1, momentum=0.9, weight_decay=0.1)
    for x in (torch.ones(2, 3), torch.full((2, 3), NAN)):
        optimizer.zero_grad()
        layer(x).sum().backward()
        freeze.mask_gradients()
        optimizer.step()
        freeze.restore()
    assert torch.equal(layer.weight.detach()[1:3], start[1:3])
    assert layer.weight[[0, 3]].isnan().all()


def test_apply_mask_gives_zero_outside_the_mask_whatever_the_values():
    values = torch.tensor([NAN, INF, -INF, 2.0])
    mask = torch.tensor([False, False, True, True])
    assert apply_mask(values, mask).tolist() == [0.0, 0.0, -INF, 2.0]
    assert (values * mask).isnan()[:2].all()  # what a product would give
