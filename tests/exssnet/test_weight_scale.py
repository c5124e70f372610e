"""The signed constant's ``weight_scale``: it multiplies every supermask layer's weights
exactly by its factor, a saved model reloads with the same weights and outputs, and bad
values are refused naming the fix."""

import math

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator
from torch import nn

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments.backbones import MaskedOutputMLP
from avalanche_ctr.exssnet import SupermaskLinear, SupermaskNet, convert_to_supermask
from avalanche_ctr.exssnet.supermask import (
    density_weight_scale,
    low_density_weight_scale,
    signed_constant_,
    weight_scale_factor,
)
from avalanche_ctr.training import ExSSNeT, SupSup


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))


def converted(weight_scale, density=0.2, make=small_cnn) -> SupermaskNet:
    torch.manual_seed(0)
    return convert_to_supermask(make(), density=density, weight_scale=weight_scale)


def test_density_rule_is_density_to_the_minus_quarter():
    assert density_weight_scale(0.02) == 0.02**-0.25
    assert density_weight_scale(1.0) == 1.0
    assert density_weight_scale(0.05, power=0.0) == 1.0
    assert density_weight_scale(0.25, power=0.5) == 2.0
    assert weight_scale_factor("none", 0.02) == 1.0
    assert weight_scale_factor("density", 0.02) == 0.02**-0.25
    assert weight_scale_factor(3, 0.02) == 3.0


@pytest.mark.parametrize(("weight_scale", "factor"), [("density", 0.2**-0.25), (2.5, 2.5)])
def test_scale_multiplies_every_layer_exactly(weight_scale, factor):
    plain, scaled = converted("none"), converted(weight_scale)
    assert scaled.weight_scale == weight_scale and plain.weight_scale == "none"
    for one, other in zip(plain.supermask_layers, scaled.supermask_layers, strict=True):
        assert (one.weight_scale, other.weight_scale) == (1.0, factor)
        assert torch.equal(one.weight * factor, other.weight)
        fan_in = one.weight[0].numel()
        assert torch.allclose(one.weight.abs(), torch.tensor(math.sqrt(2 / fan_in)))


def test_scaled_signed_constant_draws_the_same_signs():
    torch.manual_seed(1)
    one = signed_constant_(torch.empty(5, 7))
    torch.manual_seed(1)
    other = signed_constant_(torch.empty(5, 7), 3.0)
    assert torch.equal(one * 3.0, other)


def test_saved_model_reloads_with_its_scale_weights_and_outputs(tmp_path):
    digits = SplitDigits(5, seed=0)
    torch.manual_seed(0)
    model = MaskedOutputMLP(64, (16,), outputs=10)
    strategy = SupSup(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.2,
        weight_scale="density",
        train_mb_size=64,
        evaluator=quiet_evaluator(),
    )
    strategy.train(digits.train_stream[0])
    saved = strategy.model
    saved.save_pretrained(tmp_path)
    loaded = SupermaskNet.from_pretrained(tmp_path)
    assert loaded.weight_scale == "density"
    for one, other in zip(saved.supermask_layers, loaded.supermask_layers, strict=True):
        assert other.weight_scale == one.weight_scale == 0.2**-0.25
        assert torch.equal(one.weight, other.weight)
    x, _ = experience_tensors(digits.test_stream[0])
    saved.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(saved(x, 0), loaded(x, 0))


def test_folder_without_a_scale_rebuilds_at_factor_one():
    """A model folder saved before ``weight_scale`` existed had factor 1."""
    arguments = {"density": 0.1, "max_cached_tasks": 4, "backbone": None}
    net = SupermaskNet.hub_build(arguments, backbone=small_cnn())
    assert net.weight_scale == "none"
    assert [layer.weight_scale for layer in net.supermask_layers] == [1.0, 1.0]


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "dens", None])
def test_bad_scales_are_refused_naming_the_values(bad):
    with pytest.raises(
        ValueError, match="weight_scale must be 'none'.*'density'.*'low_density'.*positive"
    ):
        converted(bad)


def test_layer_takes_the_factor_not_the_rule():
    with pytest.raises(ValueError, match="weight_scale_factor"):
        SupermaskLinear(4, 3, 0.5, weight_scale="density")


@pytest.mark.parametrize(("density", "power"), [(0.0, 0.25), (1.5, 0.25), (0.1, -1.0)])
def test_density_rule_refuses_bad_arguments(density, power):
    with pytest.raises(ValueError, match="density must be|power must be"):
        density_weight_scale(density, power)


def test_low_density_rule_is_one_from_the_threshold_up():
    for density in (0.1, 0.3, 1.0):
        assert low_density_weight_scale(density) == 1.0
        assert weight_scale_factor("low_density", density) == 1.0
    # below 0.1: density^(-1/4) relative to 0.1's
    assert low_density_weight_scale(0.02) == pytest.approx(0.2**-0.25, rel=1e-12)
    assert low_density_weight_scale(0.05) == pytest.approx(0.5**-0.25, rel=1e-12)
    assert low_density_weight_scale(0.05, threshold=0.05) == 1.0
    assert low_density_weight_scale(0.02, power=0.5) == pytest.approx(5**0.5, rel=1e-12)
    assert weight_scale_factor("low_density", 0.02) == low_density_weight_scale(0.02)


@pytest.mark.parametrize("threshold", [0.0, 1.5, True])
def test_low_density_rule_refuses_a_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold must be in"):
        low_density_weight_scale(0.05, threshold=threshold)


@pytest.mark.parametrize(("density", "factor"), [(0.3, 1.0), (0.1, 1.0), (0.02, 0.2**-0.25)])
def test_supsup_defaults_to_the_low_density_rule_and_exssnet_to_none(density, factor):
    def layers(strategy_class):
        torch.manual_seed(0)
        model = MaskedOutputMLP(64, (16,), outputs=10)
        strategy = strategy_class(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
            density=density,
            evaluator=quiet_evaluator(),
        )
        return strategy.model

    supsup, exssnet = layers(SupSup), layers(ExSSNeT)
    assert (supsup.weight_scale, exssnet.weight_scale) == ("low_density", "none")
    for one, other in zip(supsup.supermask_layers, exssnet.supermask_layers, strict=True):
        assert one.weight_scale == pytest.approx(factor, rel=1e-12)
        assert other.weight_scale == 1.0
        assert torch.equal(other.weight * one.weight_scale, one.weight)
