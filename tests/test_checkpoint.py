"""Checkpoints through the Python API: a restored strategy continues exactly as the
saved one, a trained model loads for inference alone, and unusable files are refused
with an error that names the file and the problem."""

import copy
import pickle

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import tiny_ctr_model
from avalanche.core import SupervisedPlugin
from avalanche.models import MTSimpleMLP
from avalanche.training import Naive

from avalanche_ctr import checkpoint
from avalanche_ctr.benchmarks import SplitDigits
from avalanche_ctr.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from avalanche_ctr.distributed import DistributedTraining
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.experiments.measure import ProgressBar
from avalanche_ctr.exssnet import convert_to_supermask
from avalanche_ctr.training import CTR, ExSSNeT


def exssnet(hidden=64, seed=0, optimizer=None, backbone=None, **options):
    torch.manual_seed(seed)
    model = backbone or MTSimpleMLP(input_size=64, hidden_size=hidden)
    make = optimizer or (lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9))
    return ExSSNeT(
        model=model,
        optimizer=make(model.parameters()),
        **{"density": 0.2, "train_mb_size": 32, **options},
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


SAVED_AS = "was saved from a strategy built otherwise: "
BUILT_OTHERWISE = [
    ({"density": 0.3}, "SupermaskNet density 0.2 in the checkpoint, 0.3 here"),
    ({"exclusive": False}, "ExSSNeTPlugin exclusive True in the checkpoint, False here"),
    (
        {"mask_epochs": 2},
        "ExSSNeT train_epochs 2 in the checkpoint, 3 here; "
        "ExSSNeTPlugin mask_epochs 1 in the checkpoint, 2 here",
    ),
    (
        {"weight_epochs": 0},
        "ExSSNeT train_epochs 2 in the checkpoint, 1 here; "
        "ExSSNeTPlugin weight_epochs 1 in the checkpoint, 0 here",
    ),
    ({"kkt": False}, "ExSSNeTPlugin kkt True in the checkpoint, False here"),
    ({"train_mb_size": 16}, "ExSSNeT train_mb_size 32 in the checkpoint, 16 here"),
    (
        {"optimizer": lambda params: torch.optim.Adam(params, lr=0.1)},
        "optimizer torch.optim.sgd.SGD in the checkpoint, torch.optim.adam.Adam here",
    ),
    (
        {"optimizer": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)},
        "SGD lr 0.1 in the checkpoint, 0.05 here",
    ),
    (
        {"optimizer": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.5)},
        "SGD momentum 0.9 in the checkpoint, 0.5 here",
    ),
    (
        {"backbone": MultiHeadMLP(64, (64,))},
        "SupermaskNet backbone None in the checkpoint, {'model_type': 'multi_head_mlp', ",
    ),
]


@pytest.mark.parametrize("built, difference", BUILT_OTHERWISE, ids=lambda v: str(v)[:30])
def test_a_strategy_built_otherwise_is_refused_naming_the_difference(saved, built, difference):
    """The checkpoint's SGD(lr=0.1, momentum=0.9), density 0.2, exclusive, 1 + 1 epochs
    and batch 32 (which the same shapes would otherwise load silently) against each
    change; nothing of the strategy is touched before the refusal."""
    path = saved[0]
    strategy = exssnet(**built)
    before = copy.deepcopy(strategy.model.state_dict())
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(strategy, path)
    message = str(error.value)
    assert message.startswith(f"checkpoint {path} {SAVED_AS}{difference}"), message
    assert message.endswith(
        "Build the strategy as the saved one was (same options, model and optimizer) to resume it"
    )
    assert all(torch.equal(before[k], v) for k, v in strategy.model.state_dict().items())


def test_the_same_build_with_another_evaluation_setting_is_accepted(saved):
    """``task_inference`` may change between evaluations: not part of the build."""
    strategy = exssnet(task_inference="one_shot", input_statistics=False)
    assert load_checkpoint(strategy, saved[0]) == {"note": "two tasks"}
    assert strategy.model.trained_tasks == [0, 1]


def test_a_checkpoint_without_a_build_record_skips_the_check(saved, tmp_path):
    """Written before issue 32: loaded on the older checks (classes, shapes, plugins)."""
    payload = torch.load(saved[0], weights_only=True)
    del payload["build"]
    old = _resealed(payload, tmp_path / "old.pt")
    assert load_checkpoint(exssnet(), old) == {"note": "two tasks"}


def test_transient_plugins_are_not_part_of_a_checkpoint(saved, tmp_path):
    """Saved with DistributedTraining and a progress bar (a torchrun run's rank 0),
    loaded without them, and the reverse."""
    path = tmp_path / "with.pt"
    with_them = exssnet(plugins=[DistributedTraining(), ProgressBar("x", 5)])
    load_checkpoint(with_them, saved[0])
    save_checkpoint(with_them, path, meta={"note": "two tasks"})
    payload = torch.load(path, weights_only=True)
    assert not any("Distributed" in c or "ProgressBar" in c for c in payload["plugin_classes"])
    plain = exssnet()
    assert load_checkpoint(plain, path) == {"note": "two tasks"}
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            plain.model.state_dict().values(), with_them.model.state_dict().values(), strict=True
        )
    )


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


# ----------------------------------------------------------------------------- no code runs
class Payload:
    """Pickled, it creates ``marker`` when unpickled: what a hostile file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plugin_index(payload, name):
    return next(i for i, c in enumerate(payload["plugin_classes"]) if c.endswith(name))


FIELDS = [
    "format",
    "version",
    "model_class",
    "strategy_class",
    "plugin_classes",
    "build",
    "build/model",
    "model",
    "model/classifier.classifiers.0.classifier.weight",
    "requires_grad",
    "dynamic",
    "optimizer",
    "plugins",
    "plugins/ExSSNeTPlugin",
    "plugins/EvaluationPlugin",
    "extras",
    "rng/torch",
    "rng/numpy",
    "rng/python",
    "meta",
    "digest",
]


def _replace(payload, field, value):
    """``payload`` with the value at ``field`` (a path; a plugin by class name) replaced."""
    *parents, last = field.split("/")
    node = payload
    for key in parents:
        node = node[key]
    if parents == ["plugins"]:
        last = _plugin_index(payload, last)
    node[last] = value


def test_every_field_of_a_saved_checkpoint_is_covered(saved):
    payload = torch.load(saved[0], weights_only=True)
    assert {f.split("/")[0] for f in FIELDS} == set(payload)


@pytest.mark.parametrize("field", FIELDS)
def test_a_crafted_pickle_in_any_field_is_refused_and_never_runs(saved, field, tmp_path):
    marker = tmp_path / "payload-ran"

    pickle.loads(pickle.dumps(Payload(marker)))  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    payload = torch.load(saved[0], weights_only=True)
    _replace(payload, field, Payload(marker))
    hostile = tmp_path / "hostile.pt"
    torch.save(payload, hostile)
    for load in (
        lambda: load_checkpoint(exssnet(), hostile),
        lambda: load_model(hostile, convert_to_supermask(MTSimpleMLP(64, 64), density=0.2)),
        lambda: checkpoint.verify_checkpoint(hostile),
    ):
        with pytest.raises(
            CheckpointError,
            match=rf"{hostile} holds something other than tensors and plain values "
            r"\(Unsupported global: GLOBAL io.open\); it was refused unread, since building it "
            r"could run code; delete it to start this run over",
        ):
            load()
        assert not marker.exists()


def _resealed(payload, path):
    """``payload`` saved with its digests recomputed, as a hostile writer could."""
    content = {k: v for k, v in payload.items() if k != "digest"}
    torch.save({**content, "digest": checkpoint._digests(content)}, path)
    return path


@pytest.mark.parametrize(
    "field, error",
    [
        ("rng/numpy", "the numpy random state is not an MT19937 state"),
        ("rng/python", "the python random state is not a dict"),
        ("plugins/EvaluationPlugin", "EvaluationPlugin state is not a dict of attributes"),
        ("plugins/ExSSNeTPlugin", "ExSSNeTPlugin state was not declared by the plugin"),
    ],
)
def test_pickled_bytes_in_a_state_field_are_refused_not_unpickled(saved, field, error, tmp_path):
    """Version 1 kept the random states as pickled bytes and the plugin states as a
    pickled blob; such values, even in a well-formed file, are rejected, not unpickled."""

    marker = tmp_path / "payload-ran"
    payload = torch.load(saved[0], weights_only=True)
    _replace(payload, field, pickle.dumps(Payload(marker)))
    hostile = _resealed(payload, tmp_path / "hostile.pt")
    with pytest.raises(CheckpointError, match=rf"{hostile}.*{error}"):
        load_checkpoint(exssnet(), hostile)
    assert not marker.exists()


def test_an_old_format_checkpoint_is_refused_unread(tmp_path):

    marker = tmp_path / "payload-ran"
    blob = pickle.dumps({"plugins": [Payload(marker)]})
    old = tmp_path / "old.pt"
    torch.save(
        {
            "format": checkpoint.FORMAT,
            "version": 1,
            "plugins": torch.frombuffer(bytearray(blob), dtype=torch.uint8),
            "rng": {"numpy": blob, "python": blob, "torch": torch.get_rng_state()},
        },
        old,
    )
    with pytest.raises(
        CheckpointError,
        match=rf"{old} has the old format \(version 1\), whose plugin and random states are "
        r"pickled; it is not read.*Delete it and run the command again",
    ):
        load_checkpoint(exssnet(), old)
    assert not marker.exists()


# ----------------------------------------------------------------------------- digests
def _tensor_records(path):
    """(name, offset of its bytes in the file, size) of every tensor record of a
    ``torch.save`` zip (stored uncompressed)."""
    import zipfile

    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size:
                start = info.header_offset + 30
                name_length = int.from_bytes(raw[info.header_offset + 26 : start - 2], "little")
                extra_length = int.from_bytes(raw[start - 2 : start], "little")
                yield info.filename, start + name_length + extra_length, info.file_size


def test_a_flipped_byte_in_a_tensor_gives_the_digest_error(saved, tmp_path):
    raw = bytearray(saved[0].read_bytes())
    _, offset, size = max(_tensor_records(saved[0]), key=lambda record: record[2])
    raw[offset + size // 2] ^= 0x01
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(raw))
    for load in (
        lambda: load_checkpoint(exssnet(), damaged),
        lambda: load_model(damaged, convert_to_supermask(MTSimpleMLP(64, 64), density=0.2)),
        lambda: checkpoint.verify_checkpoint(damaged),
    ):
        with pytest.raises(
            CheckpointError,
            match=rf"checkpoint {damaged} does not match its digest: tensor /\S+ changed since "
            r"it was written \(disk damage or an edit\); delete it to start this run over",
        ):
            load()


def test_an_edited_value_gives_the_digest_error(saved, tmp_path):
    payload = torch.load(saved[0], weights_only=True)
    payload["meta"]["note"] = "three tasks"
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    with pytest.raises(
        CheckpointError,
        match=rf"{edited} does not match its digest: its settings, records or plugin states "
        "changed",
    ):
        load_checkpoint(exssnet(), edited)


def test_verify_checkpoint_summarises_an_intact_file(saved):
    summary = checkpoint.verify_checkpoint(saved[0])
    assert summary["strategy"] == "avalanche_ctr.exssnet.strategy.ExSSNeT"
    assert summary["meta"] == {"note": "two tasks"}
    assert summary["tensors"] == len(torch.load(saved[0], weights_only=True)["digest"]["tensors"])
    assert summary["tensors"] > 10


# ----------------------------------------------------------------------------- plugin state
class Counting(SupervisedPlugin):
    """A user's plugin that counts experiences and declares that state."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def after_training_exp(self, strategy, **kwargs):
        self.seen.append(strategy.experience.current_experience)

    def state_dict(self):
        return {"seen": list(self.seen)}

    def load_state_dict(self, state):
        self.seen = list(state["seen"])


class Undeclared(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.seen = []


def naive_with(plugin, seed=0):
    torch.manual_seed(seed)
    model = MTSimpleMLP(input_size=64, hidden_size=16)
    return Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        evaluator=quiet_evaluator(),
        plugins=[plugin],
    )


def test_a_plugin_declaring_its_state_gets_it_back(tmp_path):
    strategy = naive_with(Counting())
    for experience in SplitDigits(5).train_stream[:2]:
        strategy.train(experience)
    save_checkpoint(strategy, tmp_path / "run.pt")
    resumed = naive_with(Counting(), seed=1)
    load_checkpoint(resumed, tmp_path / "run.pt")
    assert resumed.plugins[0].seen == [0, 1]
    assert resumed.clock.train_exp_counter == 2  # Avalanche's clock, through compat


def test_a_plugin_with_undeclared_state_is_refused_at_save(tmp_path):
    strategy = naive_with(Undeclared())
    with pytest.raises(
        CheckpointError,
        match=r"cannot checkpoint plugin test_checkpoint.Undeclared: it declares no state. "
        r"Give it state_dict\(\)",
    ):
        save_checkpoint(strategy, tmp_path / "run.pt")
    assert not (tmp_path / "run.pt").exists()


def test_a_declared_state_that_is_not_plain_is_refused_at_save(tmp_path):
    plugin = Counting()
    plugin.state_dict = lambda: {"seen": {1, 2}}
    with pytest.raises(
        CheckpointError,
        match=r"Counting: .*state_dict\(\)\['seen'\] is a set, not a tensor or a plain value",
    ):
        save_checkpoint(naive_with(plugin), tmp_path / "run.pt")


def scheduled_naive(seed=0):
    from avalanche.training.plugins import EarlyStoppingPlugin, LRSchedulerPlugin

    torch.manual_seed(seed)
    model = MTSimpleMLP(input_size=64, hidden_size=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Naive(
        model=model,
        optimizer=optimizer,
        train_epochs=2,
        eval_every=1,
        evaluator=quiet_evaluator(),
        plugins=[
            LRSchedulerPlugin(
                torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5),
                reset_scheduler=False,
                reset_lr=False,
            ),
            EarlyStoppingPlugin(patience=5, val_stream_name="test_stream"),
        ],
    )


def test_avalanche_lr_scheduler_and_early_stopping_resume_exactly(tmp_path):
    benchmark = SplitDigits(5, seed=0)

    def train(strategy, experiences):
        for i in experiences:
            strategy.train(
                benchmark.train_stream[i], eval_streams=[benchmark.test_stream[i : i + 1]]
            )

    whole = scheduled_naive()
    train(whole, [0, 1])
    save_checkpoint(whole, tmp_path / "run.pt")
    train(whole, [2])
    resumed = scheduled_naive(seed=1)
    load_checkpoint(resumed, tmp_path / "run.pt")
    scheduler, stopping = resumed.plugins[:2]
    assert scheduler.scheduler.last_epoch == 4 and stopping.best_val is not None
    train(resumed, [2])
    for ours, theirs in zip(
        resumed.model.state_dict().values(), whole.model.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs)
    assert resumed.optimizer.param_groups[0]["lr"] == whole.optimizer.param_groups[0]["lr"]
