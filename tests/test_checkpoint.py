"""Checkpoints through the Python API: a restored strategy continues exactly as the
saved one, a trained model loads for inference alone, and unusable files are refused
with an error that names the file and the problem."""

import copy

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import tiny_ctr_model
from avalanche.models import MTSimpleMLP
from avalanche.training import Naive

from avalanche_ctr import checkpoint
from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from avalanche_ctr.exssnet import convert_to_supermask
from avalanche_ctr.training import CTR, ExSSNeT


def exssnet(hidden=64, seed=0):
    torch.manual_seed(seed)
    model = MTSimpleMLP(input_size=64, hidden_size=hidden)
    return ExSSNeT(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        density=0.2,
        train_mb_size=32,
        evaluator=quiet_evaluator(),
    )


def all_logits(model, benchmark, n):
    return [
        task_logits(model, experience_tensors(benchmark.test_stream[t])[0], t) for t in range(n)
    ]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """ExSSNeT trained on 2 SplitDigits tasks and saved, then trained on 3 more."""
    path = tmp_path_factory.mktemp("ckpt") / "exssnet.pt"
    benchmark = SplitDigits(5, seed=0)
    strategy = exssnet()
    for experience in benchmark.train_stream[:2]:
        strategy.train(experience)
    save_checkpoint(strategy, path, meta={"note": "two tasks"})
    logits_at_save = all_logits(strategy.model, benchmark, 2)
    for experience in benchmark.train_stream[2:]:
        strategy.train(experience)
    return path, benchmark, logits_at_save, all_logits(strategy.model, benchmark, 5)


def test_restored_strategy_continues_exactly_as_the_saved_one(saved):
    path, benchmark, _, final = saved
    strategy = exssnet(seed=123)  # other initial weights: all must come from the file
    assert load_checkpoint(strategy, path) == {"note": "two tasks"}
    assert strategy.model.trained_tasks == [0, 1]
    for experience in benchmark.train_stream[2:]:
        strategy.train(experience)
    for ours, theirs in zip(all_logits(strategy.model, benchmark, 5), final, strict=True):
        assert torch.equal(ours, theirs)


def test_a_trained_model_loads_for_inference_alone(saved):
    path, benchmark, at_save, _ = saved
    model = load_model(path, convert_to_supermask(MTSimpleMLP(64, 64), density=0.2))
    assert not model.training
    for ours, theirs in zip(all_logits(model, benchmark, 2), at_save, strict=True):
        assert torch.equal(ours, theirs)
    with pytest.raises(ValueError, match="task 2 was never trained"):
        task_logits(model, torch.rand(2, 1, 8, 8), 2)


def test_truncated_checkpoint_is_refused(saved, tmp_path):
    path = saved[0]
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{cut}.*truncated or corrupt"):
        load_checkpoint(exssnet(), cut)


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(noise, torch.nn.Linear(2, 2))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an avalanche-ctr checkpoint"):
        load_model(foreign, torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt", torch.nn.Linear(2, 2))


def test_checkpoint_from_another_strategy_is_refused(tmp_path):
    model = MTSimpleMLP(input_size=64, hidden_size=16)
    naive = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        evaluator=quiet_evaluator(),
    )
    naive.train(SplitDigits(5).train_stream[0])
    save_checkpoint(naive, tmp_path / "naive.pt")
    with pytest.raises(CheckpointError, match=r"written by strategy .*Naive, not .*ExSSNeT"):
        load_checkpoint(exssnet(), tmp_path / "naive.pt")


def test_model_shape_mismatch_is_refused(saved):
    path = saved[0]
    with pytest.raises(
        CheckpointError, match=rf"{path} does not fit this model.*size mismatch.*same architecture"
    ):
        load_checkpoint(exssnet(hidden=32), path)


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(saved, tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    path.write_bytes(saved[0].read_bytes())

    def dies_half_way(payload, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(checkpoint.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(exssnet(), path)
    monkeypatch.undo()
    assert path.read_bytes() == saved[0].read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no partial file left


def test_ctr_model_loads_from_a_checkpoint_with_its_tasks(tokenizer, sentiment_stream, tmp_path):
    model = tiny_ctr_model(tokenizer)
    fresh = copy.deepcopy(model)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=16,
        train_epochs=2,
        evaluator=quiet_evaluator(),
    )
    for experience in sentiment_stream.train_stream[:2]:
        strategy.train(experience)
    save_checkpoint(strategy, tmp_path / "ctr.pt")
    loaded = load_model(tmp_path / "ctr.pt", fresh)
    assert loaded.trained_tasks == [0, 1]
    assert [len(p.ksm.task_capsules.capsules) for p in loaded.plugins] == [2] * 4
    for task in range(2):
        x, _ = experience_tensors(sentiment_stream.test_stream[task])
        assert torch.equal(task_logits(loaded, x, task), task_logits(model, x, task))


def test_heads_with_more_classes_than_two_load(tmp_path):
    """Avalanche grows a new head's weights to the task's classes but leaves the
    ``active_units`` buffer of an unmasked head at its initial 2 entries."""
    benchmark = SplitDigits(2, seed=0)  # 5 classes per task
    torch.manual_seed(0)
    model = MTSimpleMLP(input_size=64, hidden_size=32)
    fresh = copy.deepcopy(model)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_mb_size=64,
        evaluator=quiet_evaluator(),
    )
    strategy.train(benchmark.train_stream[0])
    save_checkpoint(strategy, tmp_path / "naive.pt")
    assert model.classifier.classifiers["0"].classifier.out_features == 5
    x, _ = experience_tensors(benchmark.test_stream[0])
    loaded = load_model(tmp_path / "naive.pt", fresh)
    assert torch.equal(task_logits(loaded, x, 0), task_logits(model, x, 0))
