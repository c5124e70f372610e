import pytest
import torch
from _text_helpers import save_tiny_encoder, write_dsc

from avalanche_ctr.benchmarks.text import ASC_TASKS, DSC_DOMAINS
from avalanche_ctr.experiments import UsageError
from avalanche_ctr.experiments.benchmarks import text_tasks
from avalanche_ctr.experiments.runner import Settings


@pytest.fixture(scope="module")
def dsc_settings(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("ordered")
    return {
        "benchmark": "dsc",
        "data_root": str(write_dsc(root / "dsc", n_train=8, n_test=4)),
        "encoder": str(save_tiny_encoder(root / "encoder", tokenizer)),
        "max_length": 16,
        "n_train": 8,
    }


def first_inputs(benchmark) -> list[torch.Tensor]:
    return [torch.stack([x for x, *_ in e.dataset]) for e in benchmark.train_stream]


def test_a_task_order_builds_the_same_tasks_in_that_order(dsc_settings):
    order = [DSC_DOMAINS[3], DSC_DOMAINS[0], DSC_DOMAINS[7]]
    ordered = Settings(**dsc_settings, task_order=",".join(order))
    benchmark = ordered.spec.build(0, ordered)
    assert benchmark.task_names == order
    paper = Settings(**dsc_settings, n_experiences=8)
    reference = dict(zip(DSC_DOMAINS, first_inputs(paper.spec.build(0, paper)), strict=False))
    for name, inputs in zip(order, first_inputs(benchmark), strict=True):
        assert torch.equal(inputs, reference[name])  # same subsample, only the order moved


def test_a_random_order_is_a_permutation_that_the_run_seed_does_not_change(dsc_settings):
    shuffled = text_tasks("asc", "random:1", None)
    assert sorted(shuffled) == sorted(ASC_TASKS) and shuffled != list(ASC_TASKS)
    assert text_tasks("asc", "random:2", None) != shuffled
    settings = Settings(**dsc_settings, task_order="random:1", n_experiences=4)
    names = [settings.spec.build(seed, settings).task_names for seed in (0, 1)]
    assert names[0] == names[1] == text_tasks("dsc", "random:1", None)[:4]


@pytest.mark.parametrize(
    ("name", "order", "message"),
    [
        ("asc", "random:one", r"give random:S with a seed S >= 0"),
        ("asc", "random:-1", r"give random:S with a seed S >= 0"),
        ("asc", " , ", r"--task-order is empty"),
        ("dsc", "Pet_Supplies,Pet_Supplies", r"names \['Pet_Supplies'\] more than once"),
        ("asc", "XuSemEval14_rest,Bing9domains_Nope", r"unknown asc task\(s\) \['Bing9domains_No"),
        ("split_digits", "random:1", r"--task-order orders the tasks of the text benchmarks"),
    ],
)
def test_a_bad_task_order_names_the_problem(name, order, message):
    with pytest.raises(UsageError, match=message):
        Settings(benchmark=name, task_order=order)


def test_more_experiences_than_the_order_has_are_refused():
    with pytest.raises(UsageError, match=r"--n-experiences 3: the dsc order has 2 tasks"):
        Settings(benchmark="dsc", task_order="Pet_Supplies,Kindle_Store", n_experiences=3)


def test_twenty_news_runs_through_compare(tmp_path, tokenizer):
    import json

    from _text_helpers import write_20news

    from avalanche_ctr.benchmarks import TWENTY_NEWS_TASKS
    from avalanche_ctr.cli import main

    write_20news(tmp_path / "20news", n_per_group=10)  # 8 train, 1 dev, 1 test messages
    encoder = save_tiny_encoder(tmp_path / "encoder", tokenizer)
    strategies = ["ctr", "frozen", "exssnet"]
    out = tmp_path / "out"
    main(
        ["compare", "--benchmark", "20news", "--strategies", ",".join(strategies)]
        + ["--data-root", str(tmp_path), "--encoder", str(encoder), "--max-length", "16"]
        + ["--n-experiences", "2", "--epochs", "1", "--batch-size", "8", "--seeds", "0"]
        + ["--threads", "1", "--out", str(out), "--no-progress"]
    )
    recorded = json.loads((out / "runs.json").read_text())
    assert recorded["tasks"] == list(TWENTY_NEWS_TASKS[:2])
    assert [run["strategy"] for run in recorded["runs"]] == strategies
    for run in recorded["runs"]:
        matrix = run["acc_matrix"]  # every task after every experience
        assert len(matrix) == 2 and all(len(row) == 2 for row in matrix), run["strategy"]
        assert all(2 * acc in (0, 1, 2) for row in matrix for acc in row)  # 2 test messages
        assert matrix[1][0] == matrix[0][0], run["strategy"]  # task 0 kept as it was
