"""Data-parallel training (:mod:`avalanche_ctr.distributed`): two gloo processes on CPU
train ExSSNeT and CTR on two tasks each. After every experience the ranks hold
identical weights, masks and plugin state (Avalanche's ``check_equal_tensors`` /
``check_equal_objects``, which raise in the ranks otherwise); earlier tasks' outputs do
not change; and the final accuracies are those of a single process with the same
global mini-batch.

Tolerances. Every rank trains on its part of the global mini-batches a single process
draws, and the gradients are averaged weighted by samples.

* ExSSNeT (an MLP: no dropout, no BatchNorm, no other randomness in training) then
  computes the single process's gradients up to the order of floating-point sums (the
  all-reduce adds the ranks' partial sums; one process adds all samples at once), about
  1e-7 relative per step. Over these runs' few dozen Adam steps that stays far below
  ``EXSSNET_WEIGHT_TOLERANCE``, the masks (a top-k of the scores) come out the same, and
  a test prediction could only change if its logit margin were that small: the
  accuracies must be equal to the sample (within half a test sample).
* CTR draws Gumbel noise for its transfer-routing gates in every training forward pass
  (``binary_gate``), as many draws as samples, so from the second epoch on the
  random stream (and with it the data order) of rank 0, which draws for its half of the
  batch, is not that of a single process: the two runs are two draws of the same
  stochastic training, not the same computation. Their accuracies must agree within
  ``CTR_ACC_TOLERANCE`` (3 of the 20 test sentences of each task, averaged over the two
  tasks), the spread that different random streams give this tiny run; both must have
  learned (``LEARNED``).
"""

import os
import socket
from types import SimpleNamespace

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from _text_helpers import DOMAINS, LENGTH, task_data, tiny_ctr_model
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.training.determinism.rng_manager import RNGManager
from transformers import BertTokenizerFast

from avalanche_ctr.benchmarks import SplitDigits, text_benchmark
from avalanche_ctr.checkpoint import load_checkpoint, save_checkpoint
from avalanche_ctr.compat import RankSlicedLoader
from avalanche_ctr.distributed import (
    DistributedError,
    DistributedTraining,
    finish_distributed,
    init_distributed,
)
from avalanche_ctr.experiments.backbones import MultiHeadMLP
from avalanche_ctr.training import CTR, ExSSNeT

WORLD_SIZE = 2
BATCH = 16  # the global mini-batch: 8 samples per rank
N_TEXT_TRAIN = 65  # a last mini-batch of 1 sample: rank 1 holds a stand-in counted 0
EXSSNET_WEIGHT_TOLERANCE = 1e-4
CTR_ACC_TOLERANCE = 0.15
LEARNED = 0.6
METHODS = ("exssnet", "ctr")


def build(method: str, plugins: list, tokenizer_dir: str):
    """The strategy and its two-task stream, seeded as the runner seeds a run."""
    RNGManager.set_random_seeds(0)
    if method == "exssnet":
        benchmark = SplitDigits(5, seed=0)
        model = MultiHeadMLP(64, (32,))
        strategy = ExSSNeT(
            model=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
            density=0.2,
            mask_epochs=2,
            weight_epochs=1,
            input_statistics=True,  # summed over the ranks: part of the compared state
            train_mb_size=BATCH,
            eval_mb_size=256,
            plugins=plugins,
            evaluator=quiet_evaluator(),
        )
        return strategy, benchmark
    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir)
    names = list(DOMAINS)[:2]
    train = [task_data(d, N_TEXT_TRAIN, seed=i) for i, d in enumerate(names)]
    test = [task_data(d, 40, seed=100 + i) for i, d in enumerate(names)]
    benchmark = text_benchmark(train, test, tokenizer=tokenizer, max_length=LENGTH)
    model = tiny_ctr_model(tokenizer, dropout=0.0)
    RNGManager.set_random_seeds(0)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.03),
        train_mb_size=BATCH,
        train_epochs=8,
        eval_mb_size=64,
        plugins=plugins,
        evaluator=quiet_evaluator(),
    )
    return strategy, benchmark


def plugin_state(method: str, strategy) -> dict:
    """What the method computes besides its tensors: KKT's choice, the trained tasks,
    HAT's scale."""
    model = strategy.model
    if method == "exssnet":
        kkt = strategy.exssnet_plugin.last_kkt
        return {
            "trained": model.trained_tasks,
            "kkt": None if kkt is None else (kkt.source, kkt.accuracies, kkt.chance),
        }
    return {"trained": model.trained_tasks, "s": model.s}


def flat_state(model) -> torch.Tensor:
    return torch.cat([t.detach().float().reshape(-1) for t in model.state_dict().values()])


def exssnet_masks(model, n_tasks: int) -> list[torch.Tensor]:
    return [torch.cat([m.reshape(-1).float() for m in model.task_masks(t)]) for t in range(n_tasks)]


def accuracies(strategy, benchmark) -> list[float]:
    metrics = strategy.eval(benchmark.test_stream[:2])
    return [
        metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Task{t:03d}/Exp{t:03d}"] for t in range(2)
    ]


def train(method: str, plugins: list, tokenizer_dir: str, check=None, save_to=None) -> dict:
    """Train two tasks; return the weights, masks, task-0 logits after each experience and
    the final accuracies. ``save_to``: where the main process saves a checkpoint after
    the first experience."""
    strategy, benchmark = build(method, plugins, tokenizer_dir)
    x0, _ = experience_tensors(benchmark.test_stream[0])
    result = {"logits": [], "state": [], "masks": []}
    for i in range(2):
        strategy.train(benchmark.train_stream[i])
        if i == 0 and save_to is not None and DistributedHelper.is_main_process:
            save_checkpoint(strategy, save_to)
        model = strategy.model
        state = flat_state(model)
        masks = (
            exssnet_masks(model, i + 1)
            if method == "exssnet"
            else [m.cumulative for p in model.plugins for _, m in p.named_masks]
        )
        if check is not None:
            check(state, masks, plugin_state(method, strategy))
        result["state"].append(state)
        result["masks"].append(torch.cat([m.reshape(-1) for m in masks]))
        result["logits"].append(task_logits(model, x0, 0))
    result["accuracy"] = accuracies(strategy, benchmark)
    result["n_test"] = [len(benchmark.test_stream[t].dataset) for t in range(2)]
    return result


def resume_second(plugins: list, path) -> dict:
    """ExSSNeT resumed from ``path`` (saved after the first experience) and trained on
    the second: its weights, both tasks' masks and the accuracies."""
    strategy, benchmark = build("exssnet", plugins, "")
    load_checkpoint(strategy, path)
    strategy.train(benchmark.train_stream[1])
    return {
        "state": flat_state(strategy.model),
        "masks": torch.cat(exssnet_masks(strategy.model, 2)),
        "accuracy": accuracies(strategy, benchmark),
    }


def _rank_main(rank: int, port: int, out: str, tokenizer_dir: str) -> None:
    """One rank, as torchrun would start it. Besides the two methods' runs (ExSSNeT's
    saved after its first experience, for a single process to resume: 2 -> 1), it
    resumes the single process's checkpoint (1 -> 2)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    torch.set_num_threads(1)
    assert init_distributed("cpu")

    def check(state, masks, objects) -> None:
        DistributedHelper.check_equal_tensors(state)
        for mask in masks:
            DistributedHelper.check_equal_tensors(mask)
        DistributedHelper.check_equal_objects(objects)

    try:
        results = {
            m: train(m, [DistributedTraining()], tokenizer_dir, check, save_to=saved(out, m, 2))
            for m in METHODS
        }
        results["1 -> 2"] = resume_second([DistributedTraining()], saved(out, "exssnet", 1))
        if rank == 0:
            torch.save(results, os.path.join(out, "ranks.pt"))
    finally:
        finish_distributed()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def saved(folder, method: str, processes: int) -> str | None:
    """Where the run of ``method`` on ``processes`` processes saves its checkpoint (only
    ExSSNeT's is resumed)."""
    return os.path.join(folder, f"{processes}.pt") if method == "exssnet" else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from _text_helpers import make_tokenizer

    folder = tmp_path_factory.mktemp("distributed")
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir()
    make_tokenizer(tokenizer_dir)
    single = {m: train(m, [], str(tokenizer_dir), save_to=saved(folder, m, 1)) for m in METHODS}
    torch.multiprocessing.spawn(
        _rank_main, args=(free_port(), str(folder), str(tokenizer_dir)), nprocs=WORLD_SIZE
    )
    ranks = torch.load(folder / "ranks.pt")
    single["2 -> 1"] = resume_second([], saved(folder, "exssnet", 2))
    return ranks, single


@pytest.mark.parametrize("method", METHODS)
def test_earlier_task_outputs_do_not_change(runs, method):
    ranks, _ = runs
    before, after = ranks[method]["logits"]
    assert torch.equal(before, after)


def test_exssnet_on_two_ranks_is_one_process_with_the_same_global_batch(runs):
    ranks, single = runs
    two, one = ranks["exssnet"], single["exssnet"]
    for i in range(2):
        difference = (two["state"][i] - one["state"][i]).abs().max()
        assert difference <= EXSSNET_WEIGHT_TOLERANCE, difference
        assert torch.equal(two["masks"][i], one["masks"][i])
    for acc_two, acc_one, n in zip(two["accuracy"], one["accuracy"], one["n_test"], strict=True):
        assert abs(acc_two - acc_one) <= 0.5 / n, (two["accuracy"], one["accuracy"])
    assert min(one["accuracy"]) > LEARNED


def test_ctr_on_two_ranks_learns_as_one_process_with_the_same_global_batch(runs):
    ranks, single = runs
    two, one = ranks["ctr"]["accuracy"], single["ctr"]["accuracy"]
    assert abs(sum(two) / 2 - sum(one) / 2) <= CTR_ACC_TOLERANCE, (two, one)
    assert sum(two) / 2 > LEARNED and sum(one) / 2 > LEARNED, (two, one)


def test_a_gradient_changing_plugin_before_it_is_refused(monkeypatch):
    class Masking(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            pass

    plugin = DistributedTraining()
    strategy = SimpleNamespace(plugins=[Masking(), plugin])
    monkeypatch.setattr(type(DistributedHelper), "is_distributed", property(lambda _: True))
    with pytest.raises(DistributedError, match="Masking changes gradients .* put Distributed"):
        plugin.before_training(strategy)


def test_init_outside_torchrun_is_a_single_process(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert init_distributed("cpu") is False


def test_init_refuses_a_gpu_index_or_missing_gpus(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="give --device cuda"):
        init_distributed("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DistributedError, match="without a GPU|has 0 GPU.*use --device cpu"):
        init_distributed("cuda")


def test_rank_parts_make_up_the_single_process_batches():
    """Three ranks: each mini-batch's parts, in rank order, are the single process's
    mini-batch; a last mini-batch of one sample leaves two ranks a stand-in counted 0."""
    dataset = SplitDigits(5, seed=0).train_stream[0].dataset
    loader = TaskBalancedDataLoader(dataset, batch_size=len(dataset) - 1, shuffle=True)
    torch.manual_seed(1)
    single = [x for x, *_ in loader]
    parts, counts = [], []
    for rank in range(3):
        sliced = RankSlicedLoader(loader, rank, 3)
        torch.manual_seed(1)
        parts.append([x for x, *_ in sliced])
        counts.append(sliced.counts)
        assert len(sliced) == len(loader) == 2
    assert len(dataset) == 254  # mini-batches of 253 = 85 + 84 + 84 samples and of 1
    assert counts == [[85, 1], [84, 0], [84, 0]]
    for i, batch in enumerate(single):
        joined = torch.cat([parts[rank][i][: counts[rank][i]] for rank in range(3)])
        assert torch.equal(joined, batch)


@pytest.mark.parametrize("direction", ["1 -> 2", "2 -> 1"])
def test_a_run_resumes_on_another_number_of_processes(runs, direction):
    """A checkpoint written by one process resumes on two, and one written by two
    resumes on one (DistributedTraining is not part of a checkpoint). The resumed run
    ends as the uninterrupted single process does within the tolerance of a
    two-process run (the order of the floating-point sums, module docstring; documented
    in docs/checkpoints.md): weights within ``EXSSNET_WEIGHT_TOLERANCE``, the same masks,
    accuracies equal to the sample."""
    ranks, single = runs
    resumed = ranks[direction] if direction == "1 -> 2" else single[direction]
    whole = single["exssnet"]
    difference = (resumed["state"] - whole["state"][1]).abs().max()
    assert difference <= EXSSNET_WEIGHT_TOLERANCE, difference
    assert torch.equal(resumed["masks"], whole["masks"][1])
    for acc, reference, n in zip(
        resumed["accuracy"], whole["accuracy"], whole["n_test"], strict=True
    ):
        assert abs(acc - reference) <= 0.5 / n, (resumed["accuracy"], whole["accuracy"])
