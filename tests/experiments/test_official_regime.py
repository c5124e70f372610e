"""The official CTR code's regime as a recipe (issue 25): BertAdam with its schedule
applied twice, wide adapters, trainable LayerNorms and the best dev-loss epoch, through
``compare`` and the shipped configuration files."""

from pathlib import Path

import pytest
from _text_helpers import save_tiny_encoder, write_dsc

from avalanche_ctr.cli import _commands, _parser
from avalanche_ctr.experiments.config import read_config
from avalanche_ctr.experiments.errors import UsageError
from avalanche_ctr.experiments.runner import Settings, build_strategy, compare
from avalanche_ctr.experiments.strategies import get_strategy
from avalanche_ctr.run_folder import read_record
from avalanche_ctr.training import BertAdam, BertAdamSchedule

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def regime(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("regime")
    return Settings(
        benchmark="dsc",
        data_root=str(write_dsc(root / "dsc", n_train=96, n_test=32)),
        encoder=str(save_tiny_encoder(root / "encoder", tokenizer)),
        n_experiences=2,
        max_length=16,
        n_train=96,
        epochs=6,
        batch_size=16,
        lr=0.01,
        bottleneck=48,
        optimizer="bertadam",
        best_dev_epoch=True,
        dev_criterion="loss",
        options={"warmup": 0.1, "train_layernorm": True, "hat_lr": 0.01},
    )


@pytest.mark.parametrize("name", ["dsc", "asc"])
def test_the_shipped_recipes_set_the_official_regime(name):
    command = _commands(_parser())["compare"]
    values = read_config(EXAMPLES / f"ctr_official_regime_{name}.yaml", command)
    assert values["benchmark"] == name
    assert values["optimizer"] == "bertadam" and values["lr"] == 5e-5
    assert values["option_warmup"] == 0.1 and values["option_hat_lr"] == 5e-5
    assert values["bottleneck"] == 2000 and values["option_train_layernorm"] is True
    assert values["max_length"] == 128 and values["batch_size"] == 32
    assert values["best_dev_epoch"] is True and values["dev_criterion"] == "loss"
    assert values["epochs"] == {"dsc": 20, "asc": 10}[name]
    assert "n_train" not in values  # the full training files


def test_ctr_and_its_ablation_train_under_bertadam(regime, tmp_path, monkeypatch):
    strategy = build_strategy(regime, get_strategy("ctr"), plugins=[], evaluator=None)
    assert isinstance(strategy.optimizer, BertAdam)
    assert strategy.optimizer.defaults["warmup"] == 0.1
    encoder_norm = next(p for n, p in strategy.model.named_parameters() if "LayerNorm.weight" in n)
    assert id(encoder_norm) in strategy.optimizer.no_decay
    starts = []
    real = BertAdamSchedule.before_training_exp

    def counted(self, strategy, **kwargs):
        starts.append(type(strategy).__name__)
        real(self, strategy, **kwargs)

    monkeypatch.setattr(BertAdamSchedule, "before_training_exp", counted)
    records = compare(
        regime, ["ctr", "adapter_hat"], [0], out=tmp_path, progress=False, log=lambda _: None
    )
    assert starts == ["CTR"] * 4  # the run adds the schedule: each experience of both
    for record in records:
        assert min(record["acc_matrix"][1]) >= 0.7, record["acc_matrix"]
        identity = read_record(tmp_path / "runs" / f"{record['strategy']}-seed0.json")["identity"]
        assert identity["settings"]["optimizer"] == "bertadam"
        assert identity["settings"]["dev_criterion"] == "loss"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dev_criterion": "loss"}, "add --best-dev-epoch"),
        ({"optimizer": "sgd"}, "--optimizer 'sgd': use one of adam, bertadam"),
        ({"bottleneck": 0}, "--bottleneck must be at least 1"),
    ],
)
def test_regime_settings_are_checked(changes, message):
    with pytest.raises(UsageError, match=message):
        Settings(benchmark="dsc", **changes)
