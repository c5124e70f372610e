"""Every strategy of the command line learns SplitDigits or a tiny text stream, PackNet
keeps its earlier tasks, and a strategy registered with one record runs through
``compare`` and the command line."""

import dataclasses
import json

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.experiments import (
    Option,
    Settings,
    StrategyContext,
    StrategyRecord,
    UsageError,
    compare,
    register,
    unregister,
)
from avalanche_ctr.experiments.strategies import default_strategies, get_strategy
from avalanche_ctr.models import FrozenTokenStates
from avalanche_ctr.text_encoder import load_encoder


def build(name: str, epochs: int = 2, output_layer: str = "heads", **options):
    settings = Settings(
        benchmark="split_digits",
        epochs=epochs,
        hidden_size=64,
        output_layer=output_layer,
        options=options,
    )
    record = get_strategy(name)
    context = StrategyContext(
        settings=settings,
        options=settings.strategy_options(record),
        backbone=lambda: settings.spec.backbone(settings),
        encoder=None,
        common={
            "criterion": torch.nn.CrossEntropyLoss(),
            "train_mb_size": 32,
            "eval_mb_size": 512,
            "device": "cpu",
            "plugins": [],
            "evaluator": quiet_evaluator(),
        },
    )
    return record.build(context, record)


@pytest.mark.parametrize("name", default_strategies("image"))
def test_every_image_strategy_learns_two_tasks(name):
    benchmark = SplitDigits(5, seed=0)
    strategy = build(name)
    for experience in benchmark.train_stream[:2]:
        strategy.train(experience)
    results = strategy.eval(benchmark.test_stream[:2])
    accuracy = results["Top1_Acc_Exp/eval_phase/test_stream/Task001/Exp001"]
    assert accuracy >= 0.75, (name, accuracy)  # chance: 0.5


@pytest.mark.parametrize(
    ("name", "options", "kkt", "phases"),
    [
        ("exssnet", {}, True, (2, 2)),  # ceil(4 / 2) mask epochs, the rest weight epochs
        ("exssnet", {"kkt": False, "weight_epochs": 3}, False, (4, 3)),  # the official split
        ("ssnet", {"weight_epochs": 0}, True, (4, 0)),
        ("supsup", {}, False, (4, 0)),
        ("supsup", {"kkt": True}, True, (4, 0)),
    ],
)
def test_supermask_options_set_kkt_and_the_epoch_split(name, options, kkt, phases):
    strategy = build(name, epochs=4, **options)
    plugin = strategy.exssnet_plugin
    assert plugin.kkt is kkt
    assert (plugin.mask_epochs, plugin.weight_epochs) == phases
    assert strategy.train_epochs == sum(phases)


@pytest.mark.parametrize("name", ["exssnet", "supsup"])
def test_kkt_and_output_topk_options_reach_the_supermask_strategies(name):
    options = {"kkt_preset": "official", "kkt_k": 50, "output_topk": "layer_floor"}
    strategy = build(name, output_layer="masked", output_floor=2, **options)
    settings = strategy.exssnet_plugin.kkt_settings
    assert (settings.samples, settings.k, settings.features, settings.init) == (
        1280,
        50,
        "pre_activation",
        "copy_scores",
    )
    output = strategy.model.supermask_layers[-1]
    assert (output.topk_rule, output.floor) == ("layer_floor", 2)


@pytest.mark.parametrize(
    ("name", "weight_scale", "rule", "factor"),
    [
        ("supsup", "density", "density", 0.1**-0.25),
        ("exssnet", 2.5, 2.5, 2.5),
        ("ssnet", None, "none", 1.0),
        ("supsup", None, "low_density", 1.0),  # SupSup's default: 1 at density 0.1
        ("exssnet", "low_density", "low_density", 1.0),
    ],
)
def test_weight_scale_option_reaches_every_supermask_layer(name, weight_scale, rule, factor):
    options = {} if weight_scale is None else {"weight_scale": weight_scale}
    strategy = build(name, output_layer="masked", **options)
    assert strategy.model.weight_scale == rule
    assert [layer.weight_scale for layer in strategy.model.supermask_layers] == [factor] * 3


@pytest.mark.parametrize(
    ("name", "options", "lift"),
    [
        ("exssnet", {}, "steps"),  # ExSSNeT's and SSNeT's default
        ("ssnet", {}, "steps"),
        ("supsup", {"kkt": True}, 1.0),  # SupSup's: the preset's
        ("exssnet", {"kkt_lift": 10.0}, 10.0),
        ("supsup", {"kkt": True, "kkt_lift": "steps"}, "steps"),
    ],
)
def test_kkt_lift_option_and_its_defaults_reach_the_plugin(name, options, lift):
    strategy = build(name, **options)
    assert strategy.exssnet_plugin.kkt_settings.lift == lift


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--weight-scale", "big"),
        ("--weight-scale", "0"),
        ("--weight-scale", "-2"),
        ("--kkt", "maybe"),
        ("--weight-epochs", "-1"),
        ("--output-topk", "rows"),
        ("--kkt-preset", "paper"),
        ("--kkt-samples", "0"),
        ("--kkt-lift", "stairs"),
        ("--kkt-lift", "0"),
    ],
)
def test_bad_supermask_options_are_refused_naming_the_flag(flag, value, tmp_path, capsys):
    from avalanche_ctr.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["compare", flag, value, "--strategies", "exssnet", "--out", str(tmp_path)])
    said = f"{capsys.readouterr().err} {exit_.value.code}"  # argparse's or the usage error
    assert flag in said and value in said


def test_packnet_keeps_earlier_tasks_exactly():
    benchmark = SplitDigits(5, seed=0)
    strategy = build("packnet", epochs=3)
    x, _ = experience_tensors(benchmark.test_stream[0])
    strategy.train(benchmark.train_stream[0])
    first = task_logits(strategy.model, x, torch.zeros(len(x), dtype=torch.long))
    strategy.train(benchmark.train_stream[1])
    after = task_logits(strategy.model, x, torch.zeros(len(x), dtype=torch.long))
    assert torch.equal(first, after)


def test_packnet_needs_more_epochs_than_its_fine_tuning():
    with pytest.raises(ValueError, match="needs --epochs >= 2"):
        build("packnet", epochs=1)


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory, tokenizer):
    from _text_helpers import save_tiny_encoder, write_dsc

    root = tmp_path_factory.mktemp("text")
    settings = Settings(
        benchmark="dsc",
        data_root=str(write_dsc(root / "dsc", n_train=96, n_test=32)),
        encoder=str(save_tiny_encoder(root / "encoder", tokenizer)),
        max_length=16,
        n_train=96,
        epochs=10,
        batch_size=16,
        lr=0.01,
        bottleneck=32,
    )
    return settings, settings.spec.build(0, settings)


def build_text(name: str, settings: Settings):
    record = get_strategy(name)
    context = StrategyContext(
        settings=settings,
        options=settings.strategy_options(record),
        backbone=None,
        encoder=lambda: load_encoder(settings.encoder),
        common={
            "criterion": torch.nn.CrossEntropyLoss(),
            "train_mb_size": settings.batch_size,
            "eval_mb_size": 64,
            "device": "cpu",
            "plugins": [],
            "evaluator": quiet_evaluator(),
        },
    )
    return record.build(context, record)


# mtl trains only once it has every task (tests/experiments/test_headroom_baselines.py)
@pytest.mark.parametrize("name", [n for n in default_strategies("text") if n != "mtl"])
def test_every_text_strategy_learns_a_tiny_stream(name, tiny_text):
    settings, benchmark = tiny_text
    torch.manual_seed(0)
    strategy = build_text(name, settings)
    for experience in benchmark.train_stream[:2]:
        strategy.train(experience)
    results = strategy.eval(benchmark.test_stream[:2])
    accuracy = results["Top1_Acc_Exp/eval_phase/test_stream/Task001/Exp001"]
    assert accuracy >= 0.7, (name, accuracy)  # chance: 0.5


def test_text_model_options_reach_the_models(tiny_text):
    settings, _ = tiny_text
    layered = dataclasses.replace(settings, options={"encoder_layer": 1})
    model = build_text("exssnet", layered).model
    assert [m.layer for m in model.modules() if isinstance(m, FrozenTokenStates)] == [1]
    shifted = dataclasses.replace(settings, options={"mask_init_mean": -1.0})
    for name in ("ctr", "adapter_hat"):
        masks = build_text(name, shifted).model.masks()
        assert masks and all(mask.init_mean == -1.0 for mask in masks)
    gated = build_text("ctr", dataclasses.replace(settings, options={"gate_bias": 4.0})).model
    assert gated.plugins and all(p.ksm.gate_bias == 4.0 for p in gated.plugins)
    with pytest.raises(UsageError, match="--encoder-layer: layer 9 is out of range"):
        dataclasses.replace(settings, options={"encoder_layer": 9})  # before any run starts
    with pytest.raises(UsageError, match="--encoder-layer chooses the text encoder layer"):
        Settings(benchmark="split_digits", options={"encoder_layer": 2})


def _toy(ctx: StrategyContext, record) -> object:
    from avalanche.training import Naive

    model = ctx.model()
    return Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=ctx.options["toy_lr"]),
        train_epochs=ctx.settings.epochs,
        **ctx.common,
    )


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be positive, got {value}")
    return value


@pytest.fixture
def toy():
    record = register(
        StrategyRecord(
            "toy",
            "SGD fine-tuning (a test's toy)",
            frozenset({"image"}),
            _toy,
            (Option("toy_lr", 0.1, "the toy's SGD learning rate", check=_positive),),
        )
    )
    yield record
    unregister("toy")


def test_a_strategy_registered_with_one_record_runs_through_compare(toy, tmp_path):
    settings = Settings(benchmark="split_digits", epochs=2, hidden_size=32)
    (record,) = compare(settings, ["toy"], [0], out=tmp_path, progress=False, log=lambda _: None)
    assert record["acc_matrix"][-1][-1] >= 0.8  # it learns (and, as Naive, forgets)
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert runs["settings"]["toy_lr"] == 0.1
    assert "| toy | 1 |" in (tmp_path / "results.md").read_text()


def test_a_registered_strategy_gets_its_flag_on_the_command_line(toy, tmp_path, capsys):
    from avalanche_ctr.cli import main

    argv = ["compare", "--strategies", "toy", "--seeds", "0", "--epochs", "1"]
    main([*argv, "--hidden-size", "16", "--toy-lr", "0.05", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "runs.json").read_text())["settings"]["toy_lr"] == 0.05
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "--toy-lr" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--toy-lr: must be positive"):
        main([*argv, "--toy-lr", "-1", "--out", str(tmp_path / "bad"), "--no-progress"])


def test_registering_a_taken_name_is_refused(toy):
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register(toy)
