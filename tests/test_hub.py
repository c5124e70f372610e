"""Model folders (save_pretrained / from_pretrained / export): a loaded model gives the
saved model's outputs bit for bit on every learned task and goes on learning; its card
says what it learned; foreign folders are refused by name."""

import json

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator
from _text_helpers import save_tiny_encoder, tiny_bert, tiny_ctr_model, write_dsc
from avalanche.models import MTSimpleMLP
from safetensors.torch import load_file

from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.checkpoint import load_model
from avalanche_ctr.cli import main
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.hub import FORMAT_VERSION, HubModel, ModelFolderError
from avalanche_ctr.models import CTRModel, KimCNN, SupermaskNet, convert_to_supermask
from avalanche_ctr.training import CTR, ExSSNeT


def outputs(model, stream, tasks):
    model.eval()
    with torch.no_grad():
        return [model(experience_tensors(stream[t])[0], t) for t in tasks]


def exssnet(model, **kwargs):
    return ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        density=0.2,
        mask_epochs=1,
        weight_epochs=1,
        train_mb_size=64,
        eval_mb_size=512,
        evaluator=quiet_evaluator(),
        **kwargs,
    )


@pytest.fixture(scope="module")
def digits():
    return SplitDigits(5, seed=0)


@pytest.fixture(scope="module")
def exssnet_folder(digits, tmp_path_factory):
    """ExSSNeT over a registry backbone after two of three tasks, saved."""
    torch.manual_seed(0)
    strategy = exssnet(MultiHeadMLP(64, (32,)))
    for experience in digits.train_stream[:2]:
        strategy.train(experience)
    folder = tmp_path_factory.mktemp("exssnet") / "model"
    strategy.model.save_pretrained(folder, model_card_kwargs={"strategy": "exssnet"})
    return strategy.model, folder


def test_exssnet_folder_loads_bit_identical_and_goes_on_learning(exssnet_folder, digits):
    saved, folder = exssnet_folder
    stream = digits.test_stream
    before = outputs(saved, stream, [0, 1])
    loaded = SupermaskNet.from_pretrained(folder)
    assert loaded is not saved and loaded.trained_tasks == [0, 1]
    for old, new in zip(before, outputs(loaded, stream, [0, 1]), strict=True):
        assert torch.equal(old, new)
    assert loaded.known_train_tasks_labels == saved.known_train_tasks_labels == {0, 1}
    mixed_x, mixed_t = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 0, 1, 1, 0])
    assert torch.equal(loaded(mixed_x, mixed_t), saved(mixed_x, mixed_t))
    strategy = exssnet(loaded)
    strategy.train(digits.train_stream[2])
    assert loaded.trained_tasks == [0, 1, 2]
    for old, new in zip(before, outputs(loaded, stream, [0, 1]), strict=True):
        assert torch.equal(old, new)
    accuracy = strategy.eval(digits.test_stream[2:])[
        "Top1_Acc_Exp/eval_phase/test_stream/Task002/Exp002"
    ]
    assert accuracy > 0.8


def test_folder_holds_packed_masks_and_a_json_config_without_pickle(exssnet_folder):
    saved, folder = exssnet_folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    state = load_file(folder / "model.safetensors")
    packed = state["task_mask_1"]
    assert packed.dtype == torch.uint8 and packed.numel() == (saved.n_maskable + 7) // 8
    assert torch.equal(packed, saved.task_mask_1)
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "avalanche-ctr"
    assert config["format_version"] == FORMAT_VERSION
    assert config["model_type"] == "supermask"
    assert config["arguments"]["density"] == 0.2
    assert config["arguments"]["backbone"] == {
        "model_type": "multi_head_mlp",
        "arguments": {"input_size": 64, "hidden_sizes": [32], "head_units": None},
    }


def test_model_card_gives_method_tasks_classes_density_and_loading(exssnet_folder):
    saved, folder = exssnet_folder
    card = (folder / "README.md").read_text()
    assert "library_name: avalanche-ctr" in card
    assert "Exclusive Supermask Subnetwork Training for Continual Learning" in card
    assert "Each task's supermask keeps 20% of the weights." in card
    measured = [sum(int(m.sum()) for m in saved.task_masks(t)) / saved.n_maskable for t in (0, 1)]
    assert "Measured per task: " + ", ".join(f"{100 * k:.2f}%" for k in measured) in card
    for t in (0, 1):
        classes = ", ".join(str(c) for c in saved.task_classes(t))
        assert f"| {t + 1} | {t} |  | {classes} |" in card
    assert 'SupermaskNet.from_pretrained("path/to/this/folder")' in card


def test_a_model_in_the_middle_of_a_task_is_not_saved(tmp_path):
    model = convert_to_supermask(MultiHeadMLP(64, (8,)), density=0.5)
    model.start_task(0)
    with pytest.raises(ModelFolderError, match="task 0 is still in training"):
        model.save_pretrained(tmp_path)


def test_any_folder_loads_through_the_base_class(exssnet_folder):
    _, folder = exssnet_folder
    assert type(HubModel.from_pretrained(folder)) is SupermaskNet
    with pytest.raises(ModelFolderError, match="holds a SupermaskNet .* not a CTRModel"):
        CTRModel.from_pretrained(folder)


def test_user_backbone_is_passed_to_from_pretrained(digits, tmp_path):
    torch.manual_seed(0)
    strategy = exssnet(MTSimpleMLP(input_size=64, hidden_size=32))
    strategy.train(digits.train_stream[0])
    strategy.model.save_pretrained(tmp_path)
    assert "backbone=..." in (tmp_path / "README.md").read_text()
    with pytest.raises(ModelFolderError, match=r"pass it, built as before training"):
        SupermaskNet.from_pretrained(tmp_path)
    loaded = SupermaskNet.from_pretrained(
        tmp_path, backbone=MTSimpleMLP(input_size=64, hidden_size=32)
    )
    stream = digits.test_stream
    assert torch.equal(outputs(strategy.model, stream, [0])[0], outputs(loaded, stream, [0])[0])


def test_ctr_folder_loads_bit_identical_and_goes_on_learning(tokenizer, sentiment_stream, tmp_path):
    torch.manual_seed(0)
    model = tiny_ctr_model(tokenizer)

    def ctr(m):
        return CTR(
            model=m,
            optimizer=torch.optim.Adam(m.parameters(), lr=0.01),
            train_mb_size=32,
            train_epochs=2,
            eval_mb_size=64,
            evaluator=quiet_evaluator(),
        )

    strategy = ctr(model)
    for experience in sentiment_stream.train_stream[:2]:
        strategy.train(experience)
    model.save_pretrained(tmp_path, model_card_kwargs={"strategy": "ctr"})
    stream = sentiment_stream.test_stream
    before = outputs(model, stream, [0, 1])
    loaded = CTRModel.from_pretrained(tmp_path)
    assert loaded.trained_tasks == [0, 1]
    for old, new in zip(before, outputs(loaded, stream, [0, 1]), strict=True):
        assert torch.equal(old, new)
    ctr(loaded).train(sentiment_stream.train_stream[2])
    assert loaded.trained_tasks == [0, 1, 2]
    for old, new in zip(before, outputs(loaded, stream, [0, 1]), strict=True):
        assert torch.equal(old, new)
    card = (tmp_path / "README.md").read_text()
    assert "Achieving Forgetting Prevention and Knowledge Transfer" in card
    assert "| 1 | 0 |  | 0, 1 |" in card and "| 2 | 1 |  | 0, 1 |" in card


def test_folder_of_another_library_or_version_is_refused(exssnet_folder, tmp_path):
    _, folder = exssnet_folder
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(
        ModelFolderError, match="saved by another library .*'bert'.* not by avalanche-ctr"
    ):
        HubModel.from_pretrained(bert)
    newer = tmp_path / "newer"
    newer.mkdir()
    config = json.loads((folder / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**config, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(
        ModelFolderError,
        match=f"version {FORMAT_VERSION + 1}; this avalanche-ctr reads version {FORMAT_VERSION}",
    ):
        HubModel.from_pretrained(newer)
    with pytest.raises(ModelFolderError, match="has no config.json"):
        HubModel.from_pretrained(tmp_path)
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config["arguments"]["backbone"]["arguments"]["hidden_sizes"] = [33]
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelFolderError, match="does not fit the SupermaskNet its config describes"
    ):
        HubModel.from_pretrained(edited)


def test_repo_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(
        ModelFolderError, match="cannot download 'someone/no-such-model' from the Hugging Face Hub"
    ):
        HubModel.from_pretrained("someone/no-such-model", cache_dir=tmp_path)


def test_text_supermask_model_rebuilds_its_encoder_from_the_folder(
    tokenizer, sentiment_stream, tmp_path
):
    torch.manual_seed(0)
    model = convert_to_supermask(KimCNN(tiny_bert(tokenizer), n_filters=8), density=0.3)
    strategy = exssnet(model)
    strategy.train(sentiment_stream.train_stream[0])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    encoder = config["arguments"]["backbone"]["arguments"]["encoder"]["transformers_config"]
    assert encoder["config"]["hidden_size"] == 64 and encoder["config"]["model_type"] == "bert"
    loaded = SupermaskNet.from_pretrained(tmp_path)
    assert loaded.net.token_states.module is not model.net.token_states.module
    stream = sentiment_stream.test_stream
    assert torch.equal(outputs(model, stream, [0])[0], outputs(loaded, stream, [0])[0])


def test_export_writes_the_folder_of_a_finished_run(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    main(
        [
            "run",
            "--strategy",
            "supsup",
            "--epochs",
            "1",
            "--hidden-size",
            "16",
            "--n-experiences",
            "2",
            "--out",
            str(run),
            "--no-progress",
        ]
    )
    records = run / "runs"
    (records / "supsup-seed1.json").write_bytes((records / "supsup-seed0.json").read_bytes())
    with pytest.raises(SystemExit, match="holds 2 runs .*choose one with --strategy and --seed"):
        main(["export", str(run), str(out)])
    with pytest.raises(SystemExit, match="holds no finished run for --strategy ctr"):
        main(["export", str(run), str(out), "--strategy", "ctr"])
    main(["export", str(run), str(out), "--seed", "0"])
    record = json.loads((records / "supsup-seed0.json").read_text())["record"]
    card = (out / "README.md").read_text()
    assert "Supermasks in Superposition" in card and "Trained on `split_digits`, seed 0." in card
    for t in range(2):
        own, final = record["acc_matrix"][t][t], record["acc_matrix"][-1][t]
        assert f" {100 * own:.2f} | {100 * final:.2f} |" in card
    loaded = HubModel.from_pretrained(out)
    assert isinstance(loaded, SupermaskNet) and loaded.trained_tasks == [0, 1]
    from_checkpoint = load_model(
        run / "checkpoints" / "supsup-seed0.pt",
        convert_to_supermask(MultiHeadMLP(64, (16, 16)), density=0.1),
    )
    x = torch.rand(7, 1, 8, 8)
    for t in range(2):
        assert torch.equal(loaded(x, t), from_checkpoint(x, t))


def test_export_of_a_text_run_names_its_tasks_and_keeps_the_tokenizer(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    from avalanche_ctr.benchmarks import DSC_DOMAINS

    data = write_dsc(tmp_path / "dsc", n_train=16, n_test=8)
    encoder = save_tiny_encoder(tmp_path / "encoder", tokenizer)
    run, out = tmp_path / "run", tmp_path / "out"
    main(
        [
            "run",
            "--strategy",
            "ctr",
            "--benchmark",
            "dsc",
            "--data-root",
            str(data),
            "--encoder",
            str(encoder),
            "--max-length",
            "16",
            "--n-train",
            "16",
            "--n-experiences",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            str(run),
            "--no-progress",
        ]
    )
    main(["export", str(run), str(out)])
    card = (out / "README.md").read_text()
    for t in range(2):
        assert f"| {t + 1} | {t} | {DSC_DOMAINS[t]} | 0, 1 |" in card
    assert "AutoTokenizer.from_pretrained" in card
    text = "the book was great"
    assert (
        AutoTokenizer.from_pretrained(str(out))(text)["input_ids"] == tokenizer(text)["input_ids"]
    )
    loaded = CTRModel.from_pretrained(out)
    from_checkpoint = load_model(run / "checkpoints" / "ctr-seed0.pt", CTRModel(str(encoder)))
    batch = tokenizer([text, "my pan was awful"], padding="max_length", max_length=16)
    keys = ("input_ids", "attention_mask", "token_type_ids")
    x = torch.stack([torch.tensor(batch[k]) for k in keys], dim=1)
    for t in range(2):
        assert torch.equal(loaded(x, t), from_checkpoint(x, t))


def test_hat_folder_loads_bit_identical_and_goes_on_learning(digits, tmp_path):
    from avalanche_ctr.hat import HAT, HATNet

    def hat(model):
        return HAT(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
            train_mb_size=32,
            train_epochs=2,
            eval_mb_size=512,
            evaluator=quiet_evaluator(),
        )

    torch.manual_seed(0)
    strategy = hat(MultiHeadMLP(64, (32, 32)))
    for experience in digits.train_stream[:2]:
        strategy.train(experience)
    strategy.model.save_pretrained(tmp_path)
    assert "Serra et al." in (tmp_path / "README.md").read_text()
    loaded = HATNet.from_pretrained(tmp_path)
    stream = digits.test_stream
    before = outputs(strategy.model, stream, [0, 1])
    assert all(
        torch.equal(a, b) for a, b in zip(before, outputs(loaded, stream, [0, 1]), strict=True)
    )
    hat(loaded).train(digits.train_stream[2])
    assert all(
        torch.equal(a, b) for a, b in zip(before, outputs(loaded, stream, [0, 1]), strict=True)
    )
    (logits,) = outputs(loaded, stream, [2])
    accuracy = (logits.argmax(1) == experience_tensors(stream[2])[1]).float().mean()
    assert accuracy > 0.8, accuracy
