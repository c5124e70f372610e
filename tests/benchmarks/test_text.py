"""Tests for :mod:`avalanche_ctr.benchmarks.text` on tiny local files (no download)."""

import json
import re
from collections import Counter

import pytest
import torch
from avalanche.models import MultiHeadClassifier
from torch.utils.data import DataLoader
from transformers import BertTokenizerFast

from avalanche_ctr.benchmarks import (
    ASC,
    ASC_TASKS,
    DSC,
    DSC_DOMAINS,
    TWENTY_NEWS_TASKS,
    DSCDomainError,
    TwentyNews,
    dsc_domains,
    text_benchmark,
)
from avalanche_ctr.benchmarks.text import TWENTY_NEWS_GROUPS
from avalanche_ctr.errors import BenchmarkDataError, DataFileError

WORDS = (
    "the a is was and it this i not very good bad great awful love hate "
    "battery screen food service price game toy product works broke"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# The task orders of the CTR code's first sequence, as listed in /work/shared/data/README.md.
README_DSC_ORDER = [
    "Tools_and_Home_Improvement",
    "Pet_Supplies",
    "Office_Products",
    "Kindle_Store",
    "Movies_and_TV",
    "Video_Games",
    "Musical_Instruments",
    "Sports_and_Outdoors",
    "Patio_Lawn_and_Garden",
    "Toys_and_Games",
]
README_ASC_ORDER = [
    "XuSemEval14_laptop",
    "XuSemEval14_rest",
    "Bing9domains_HitachiRouter",
    "Bing9domains_CanonS100",
    "Bing9domains_ipod",
    "Bing5domains_ApexAD2600Progressive",
    "Bing9domains_Nokia6600",
    "Bing9domains_DiaperChamp",
    "Bing9domains_CanonPowerShotSD500",
    "Bing5domains_CreativeLabsNomadJukeboxZenXtra40GB",
    "Bing9domains_Norton",
    "Bing9domains_MicroMP3",
    "Bing3domains_Speaker",
    "Bing9domains_LinksysRouter",
    "Bing5domains_Nokia6610",
    "Bing5domains_NikonCoolpix4300",
    "Bing5domains_CanonG3",
    "Bing3domains_Computer",
    "Bing3domains_Router",
]
L = 16
SPLIT_SIZES = {"train": 20, "dev": 4, "test": 6}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))


def _sentence(i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 5))


@pytest.fixture(scope="module")
def dsc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsc")
    for d, domain in enumerate(DSC_DOMAINS):
        for split, n in SPLIT_SIZES.items():
            lines = [f"{_sentence(d + i)} & quot ;\t{1 if i % 2 else -1}" for i in range(n)]
            (root / f"{domain}_{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def _asc_path(root, task):
    prefix, product = task.split("_", 1)
    if prefix.startswith("XuSemEval"):
        return root / "XuSemEval" / "asc" / "14" / product
    return root / prefix.replace("domains", "Domains") / "asc" / product


@pytest.fixture(scope="module")
def asc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("asc")
    for t, task in enumerate(ASC_TASKS):
        polarities = ["positive", "negative", "neutral"] if "XuSemEval" in task else ["+", "-"]
        folder = _asc_path(root, task)
        folder.mkdir(parents=True)
        for split, n in SPLIT_SIZES.items():
            data = {
                f"{i}_0": {
                    "term": WORDS[(t + i) % len(WORDS)],
                    "sentence": _sentence(t + i),
                    "polarity": polarities[i % len(polarities)],
                    "id": f"{i}_0",
                }
                for i in range(n)
            }
            (folder / f"{split}.json").write_text(json.dumps(data))
    return root


def _stack(experience):
    items = [experience.dataset[i] for i in range(len(experience.dataset))]
    return torch.stack([item[0] for item in items]), [int(item[1]) for item in items]


def test_default_orders_match_readme():
    assert list(DSC_DOMAINS) == README_DSC_ORDER
    assert list(ASC_TASKS) == README_ASC_ORDER


def test_dsc_structure(dsc_root, tokenizer):
    domains = ["Pet_Supplies", "Kindle_Store", "Video_Games"]
    bm = DSC(dsc_root, domains=domains, tokenizer=tokenizer, max_length=L)

    assert bm.task_names == domains
    assert len(bm.train_stream) == len(bm.test_stream) == 3
    assert not hasattr(bm, "dev_stream")
    for i, (train, test) in enumerate(zip(bm.train_stream, bm.test_stream, strict=True)):
        assert train.task_label == test.task_label == i
        assert len(train.dataset) == SPLIT_SIZES["train"]
        assert len(test.dataset) == SPLIT_SIZES["test"]
        x, y = _stack(train)
        assert x.shape == (SPLIT_SIZES["train"], 3, L) and x.dtype == torch.long
        assert sorted(set(y)) == [0, 1]
        assert y[0] == 0 and y[1] == 1  # -1 -> 0, 1 -> 1
        assert torch.all(x[:, 0, 0] == tokenizer.cls_token_id)
        assert torch.all(x[:, 2] == 0)  # single sentences: one segment
        assert torch.equal(x[:, 1], (x[:, 0] != tokenizer.pad_token_id).long())
        _, _, t = train.dataset[0]
        assert t == i


def test_tokenizer_by_folder_or_name_as_transformers_users_expect(dsc_root, tokenizer, tmp_path):
    folder = tmp_path / "tokenizer"
    tokenizer.save_pretrained(folder)
    domains = ["Pet_Supplies"]
    by_object = DSC(dsc_root, domains=domains, tokenizer=tokenizer, max_length=L)
    by_folder = DSC(dsc_root, domains=domains, tokenizer=str(folder), max_length=L)
    assert torch.equal(_stack(by_folder.train_stream[0])[0], _stack(by_object.train_stream[0])[0])
    with pytest.raises(OSError, match="no-such-tokenizer"):
        text_benchmark(
            [(["a"], [0])], [(["a"], [0])], tokenizer=str(tmp_path / "no-such-tokenizer")
        )
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        text_benchmark([(["a"], [0])], [(["a"], [0])], tokenizer=42)


def test_text_benchmark_task_labels_may_repeat(tokenizer):
    data = [(["good", "bad"], [1, 0])] * 3
    bm = text_benchmark(data, data, tokenizer=tokenizer, max_length=8, task_labels=[0, 1, 0])
    assert [exp.task_label for exp in bm.train_stream] == [0, 1, 0]
    with pytest.raises(ValueError, match="one task label >= 0 per task"):
        text_benchmark(data, data, tokenizer=tokenizer, task_labels=[0, 1])


def test_dsc_default_domains_and_dev(dsc_root, tokenizer):
    bm = DSC(dsc_root, tokenizer=tokenizer, max_length=L, dev=True)

    assert bm.task_names == README_DSC_ORDER
    assert [exp.task_label for exp in bm.dev_stream] == list(range(10))
    assert [len(exp.dataset) for exp in bm.dev_stream] == [SPLIT_SIZES["dev"]] * 10


def _write_dsc_domain(root, domain, splits=("train", "dev", "test")):
    for split in splits:
        lines = [f"{_sentence(i)}\t{1 if i % 2 else -1}" for i in range(SPLIT_SIZES[split])]
        (root / f"{domain}_{split}.tsv").write_text("\n".join(lines) + "\n")


def test_dsc_reads_any_domain_with_files_in_the_root(tmp_path, tokenizer):
    # two of the paper's domains, two of the full Amazon collection, one without a test file
    for domain in ("Toys_and_Games", "Beauty", "Pet_Supplies", "Automotive"):
        _write_dsc_domain(tmp_path, domain)
    _write_dsc_domain(tmp_path, "Baby", splits=("train",))
    _write_dsc_domain(tmp_path, "Cell_Phones", splits=("train", "test"))
    (tmp_path / "notes_train.tsv").mkdir()  # a folder is no file
    # the paper's domains first, in its order, then the others alphabetically
    assert dsc_domains(tmp_path) == [
        "Pet_Supplies",
        "Toys_and_Games",
        "Automotive",
        "Beauty",
        "Cell_Phones",
    ]
    assert "Cell_Phones" not in dsc_domains(tmp_path, dev=True)
    domains = ["Beauty", "Pet_Supplies", "Automotive"]
    bm = DSC(tmp_path, domains=domains, tokenizer=tokenizer, max_length=L, dev=True)
    assert bm.task_names == domains
    assert [len(exp.dataset) for exp in bm.train_stream] == [SPLIT_SIZES["train"]] * 3
    assert [len(exp.dataset) for exp in bm.dev_stream] == [SPLIT_SIZES["dev"]] * 3
    every = DSC(tmp_path, domains=dsc_domains(tmp_path), tokenizer=tokenizer, max_length=L)
    assert len(every.train_stream) == 5
    with pytest.raises(FileNotFoundError, match="Baby_test.tsv.*expected"):  # only some files
        DSC(tmp_path, domains=["Baby"], tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="Tools_and_Home_Improvement_train.tsv"):
        DSC(tmp_path, tokenizer=tokenizer)  # the default stays the paper's 10 domains


def test_a_domain_without_files_names_them_and_the_available_domains(tmp_path, tokenizer):
    _write_dsc_domain(tmp_path, "Beauty")
    _write_dsc_domain(tmp_path, "Kindle_Store")
    with pytest.raises(DSCDomainError) as raised:
        DSC(tmp_path, domains=["Beauty", "Books"], tokenizer=tokenizer, dev=True)
    message = str(raised.value)
    assert "unknown DSC domain ['Books']" in message
    assert "missing Books_train.tsv, Books_test.tsv, Books_dev.tsv" in message
    assert "domains with files there: Kindle_Store, Beauty." in message
    assert isinstance(raised.value, FileNotFoundError) and isinstance(raised.value, ValueError)
    with pytest.raises(ValueError, match="duplicate DSC domain"):
        DSC(tmp_path, domains=["Beauty", "Beauty"], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="at least one DSC domain.*Kindle_Store, Beauty"):
        DSC(tmp_path, domains=[], tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="nowhere.*expected a folder holding <Domain>"):
        dsc_domains(tmp_path / "nowhere")


def test_asc_structure_and_pairs(asc_root, tokenizer):
    tasks = ["XuSemEval14_rest", "Bing9domains_HitachiRouter"]
    bm = ASC(asc_root, tasks=tasks, tokenizer=tokenizer, max_length=L)

    assert bm.task_names == tasks
    assert [exp.task_label for exp in bm.train_stream] == [0, 1]
    assert [exp.task_label for exp in bm.test_stream] == [0, 1]
    targets = [sorted({int(y) for y in exp.dataset.targets}) for exp in bm.train_stream]
    assert targets == [[0, 1, 2], [0, 1]]

    x, y = _stack(bm.train_stream[0])
    assert x.shape == (SPLIT_SIZES["train"], 3, L) and x.dtype == torch.long
    assert y[:3] == [1, 0, 2]  # positive, negative, neutral
    # (term, sentence): [CLS] term [SEP] sentence [SEP]; the term is a single word here.
    first = x[0]
    assert first[0, 0] == tokenizer.cls_token_id and first[0, 2] == tokenizer.sep_token_id
    assert first[2, :3].tolist() == [0, 0, 0]
    n_tokens = int(first[1].sum())
    assert first[2, 3:n_tokens].tolist() == [1] * (n_tokens - 3)
    assert first[2, n_tokens:].sum() == 0
    assert torch.all(x[:, 2].sum(dim=1) > 0)

    _, y_bing = _stack(bm.train_stream[1])
    assert y_bing[:2] == [1, 0]  # "+" -> 1, "-" -> 0


def test_asc_default_tasks(asc_root, tokenizer):
    bm = ASC(asc_root, tokenizer=tokenizer, max_length=L)

    assert bm.task_names == README_ASC_ORDER
    assert [exp.task_label for exp in bm.train_stream] == list(range(19))


def test_multihead_classifier_adapts(asc_root, tokenizer):
    tasks = ["XuSemEval14_laptop", "Bing3domains_Router"]
    bm = ASC(asc_root, tasks=tasks, tokenizer=tokenizer, max_length=L)
    model = MultiHeadClassifier(in_features=4)
    for exp in bm.train_stream:
        model.adaptation(exp)

    assert {k: head.classifier.out_features for k, head in model.classifiers.items()} == {
        "0": 3,
        "1": 2,
    }
    x, y, t = next(iter(DataLoader(bm.train_stream[1].dataset, batch_size=5)))
    assert x.shape == (5, 3, L) and x.dtype == torch.long
    assert y.shape == t.shape == (5,) and torch.all(t == 1)


@pytest.mark.parametrize("which", ["dsc", "asc"])
def test_n_train_subsample(which, dsc_root, asc_root, tokenizer):
    if which == "dsc":
        build = DSC
        kwargs = {"root": dsc_root, "domains": ["Office_Products", "Toys_and_Games"]}
    else:
        build = ASC
        kwargs = {"root": asc_root, "tasks": ["XuSemEval14_laptop", "Bing5domains_CanonG3"]}

    a = build(**kwargs, n_train=6, seed=1, tokenizer=tokenizer, max_length=L)
    b = build(**kwargs, n_train=6, seed=1, tokenizer=tokenizer, max_length=L)
    c = build(**kwargs, n_train=6, seed=2, tokenizer=tokenizer, max_length=L)
    full = build(**kwargs, n_train=1000, tokenizer=tokenizer, max_length=L)

    assert [len(exp.dataset) for exp in a.train_stream] == [6, 6]
    assert [len(exp.dataset) for exp in a.test_stream] == [SPLIT_SIZES["test"]] * 2
    assert [len(exp.dataset) for exp in full.train_stream] == [SPLIT_SIZES["train"]] * 2
    differs = False
    for exp_a, exp_b, exp_c in zip(a.train_stream, b.train_stream, c.train_stream, strict=True):
        (xa, ya), (xb, yb), (xc, _) = _stack(exp_a), _stack(exp_b), _stack(exp_c)
        assert torch.equal(xa, xb) and ya == yb
        differs |= not torch.equal(xa, xc)
        n_classes = len(set(ya))
        assert all(ya.count(k) == 6 // n_classes for k in range(n_classes))  # stratified
    assert differs


def test_n_test_keeps_a_stratified_subsample_of_test_and_dev(dsc_root, tokenizer):
    kwargs = {"domains": ["Office_Products", "Toys_and_Games"], "tokenizer": tokenizer}
    bm = DSC(dsc_root, **kwargs, n_test=4, dev=True, seed=1, max_length=L)
    again = DSC(dsc_root, **kwargs, n_test=4, dev=True, seed=1, max_length=L)
    assert [len(exp.dataset) for exp in bm.test_stream] == [4, 4]
    assert [len(exp.dataset) for exp in bm.dev_stream] == [4, 4]
    assert [len(exp.dataset) for exp in bm.train_stream] == [SPLIT_SIZES["train"]] * 2
    for exp, same in zip(bm.test_stream, again.test_stream, strict=True):
        (x, y), (x_again, _) = _stack(exp), _stack(same)
        assert torch.equal(x, x_again) and sorted(y) == [0, 0, 1, 1]  # both labels kept
    with pytest.raises(ValueError, match="n_test must be a positive int"):
        DSC(dsc_root, **kwargs, n_test=0)


def test_text_benchmark_generic(tokenizer):
    train = [
        (["good battery", ("screen", "the screen is bad"), "awful"], [1, 0, 0]),
        (["great game", "broke"], [0, 1]),
    ]
    test = [(["good"], [1]), (["bad toy"], [1])]
    bm = text_benchmark(train, test, tokenizer=tokenizer, max_length=8)

    assert bm.task_names == ["task0", "task1"]
    assert [len(exp.dataset) for exp in bm.train_stream] == [3, 2]
    x, y = _stack(bm.train_stream[0])
    assert x.shape == (3, 3, 8) and y == [1, 0, 0]
    assert x[0, 2].sum() == 0 and x[1, 2].sum() > 0 and x[2, 2].sum() == 0

    long_text = " ".join(WORDS)
    bm = text_benchmark(
        [([long_text], [0])], [([long_text], [0])], tokenizer=tokenizer, max_length=8
    )
    x, _ = _stack(bm.train_stream[0])
    assert x[0, 1].tolist() == [1] * 8 and x[0, 0, -1] == tokenizer.sep_token_id


def test_tokenizer_without_token_type_ids(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n")
    tok = BertTokenizerFast.from_pretrained(
        str(tmp_path), model_input_names=["input_ids", "attention_mask"]
    )
    assert "token_type_ids" not in tok("good", "bad")
    bm = text_benchmark([([("good", "bad")], [0])], [(["good"], [0])], tokenizer=tok, max_length=8)
    x, _ = _stack(bm.train_stream[0])
    assert x.shape == (1, 3, 8) and x[0, 2].sum() == 0 and x[0, 1].sum() > 0


def test_text_benchmark_errors(tokenizer):
    with pytest.raises(ValueError, match="texts but"):
        text_benchmark([(["a", "b"], [0])], [(["a"], [0])], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="test has"):
        text_benchmark([(["a"], [0])], [], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="task names"):
        text_benchmark([(["a"], [0])], [(["a"], [0])], tokenizer=tokenizer, task_names=["x", "y"])
    with pytest.raises(ValueError, match="non-negative"):
        text_benchmark([(["a"], [-1])], [(["a"], [0])], tokenizer=tokenizer)


def test_missing_root(tmp_path, tokenizer):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*expected a folder holding <Domain>"):
        DSC(missing, tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="nowhere.*XuSemEval/asc/14"):
        ASC(missing, tokenizer=tokenizer)


def test_missing_task_file(tmp_path, tokenizer):
    (tmp_path / "Pet_Supplies_train.tsv").write_text("good\t1\nbad\t-1\n")
    with pytest.raises(FileNotFoundError, match="Pet_Supplies_test.tsv.*expected"):
        DSC(tmp_path, domains=["Pet_Supplies"], tokenizer=tokenizer)
    (tmp_path / "Pet_Supplies_test.tsv").write_text("bad\t-1\ngood\t1\n")
    assert len(DSC(tmp_path, domains=["Pet_Supplies"], tokenizer=tokenizer).train_stream) == 1
    with pytest.raises(FileNotFoundError, match="Pet_Supplies_dev.tsv"):
        DSC(tmp_path, domains=["Pet_Supplies"], tokenizer=tokenizer, dev=True)
    with pytest.raises(FileNotFoundError, match=r"Bing3Domains/asc/Router/train\.json.*expected"):
        ASC(tmp_path, tasks=["Bing3domains_Router"], tokenizer=tokenizer)


def test_unknown_names(dsc_root, asc_root, tokenizer):
    with pytest.raises(ValueError, match="unknown DSC domain.*Tools_and_Home_Improvement"):
        DSC(dsc_root, domains=["Books"], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="unknown ASC task.*Bing3domains_Router"):
        ASC(asc_root, tasks=["Bing3Domains_Router"], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="n_train"):
        DSC(dsc_root, n_train=0, tokenizer=tokenizer)


def test_a_task_whose_training_split_lacks_a_class_is_refused(tmp_path, tokenizer):
    (tmp_path / "Pet_Supplies_train.tsv").write_text("good\t1\nbad\t-1\ngreat\t1\n")
    (tmp_path / "Pet_Supplies_test.tsv").write_text("bad\t-1\ngood\t1\n")
    assert len(DSC(tmp_path, domains=["Pet_Supplies"], tokenizer=tokenizer).train_stream) == 1
    with pytest.raises(DataFileError) as error:  # one example kept: one class
        DSC(tmp_path, domains=["Pet_Supplies"], tokenizer=tokenizer, n_train=1)
    assert re.fullmatch(
        r"DSC task 'Pet_Supplies': its test split has class '-?1', which none of its training "
        r"examples \(of the 1 kept by n_train\) has, so those test examples could never be "
        r"predicted; add training examples of it, or raise n_train, or leave the task out",
        str(error.value),
    )


def test_a_malformed_file_is_a_data_error_and_still_a_value_error(tmp_path, tokenizer):
    (tmp_path / "Pet_Supplies_train.tsv").write_text("good\t1\nbad\t-1\n\nworse -1\n")
    (tmp_path / "Pet_Supplies_test.tsv").write_text("bad\t-1\ngood\t1\n")
    with pytest.raises(DataFileError, match=r"Pet_Supplies_train.tsv:4: expected") as error:
        DSC(tmp_path, domains=["Pet_Supplies"], tokenizer=tokenizer)
    assert isinstance(error.value, ValueError) and isinstance(error.value, BenchmarkDataError)


# --------------------------------------------------------------------------- 20News


@pytest.fixture(scope="module")
def news(tmp_path_factory):
    """The 20 newsgroup folders, 10 templated messages each, and a tokenizer of their words."""
    from _text_helpers import make_tokenizer, write_20news

    root = write_20news(tmp_path_factory.mktemp("20news"), n_per_group=10)
    return root, make_tokenizer(tmp_path_factory.mktemp("news_tokenizer"))


def _messages(tokenizer, folder) -> Counter:
    texts = [path.read_text(encoding="latin-1") for path in folder.iterdir()]
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=L)["input_ids"]
    return Counter(tuple(row) for row in ids)


def test_twenty_news_has_the_official_tasks_splits_and_labels(news):
    root, tokenizer = news
    assert TWENTY_NEWS_TASKS[:3] == ("newsgroup_3", "newsgroup_4", "newsgroup_6")
    assert TWENTY_NEWS_GROUPS["newsgroup_3"] == ("rec.motorcycles", "rec.sport.baseball")
    assert TWENTY_NEWS_GROUPS["newsgroup_9"] == ("alt.atheism", "soc.religion.christian")
    groups = [g for pair in TWENTY_NEWS_GROUPS.values() for g in pair]
    assert len(set(groups)) == 20
    benchmark = TwentyNews(root, tokenizer=tokenizer, max_length=L, dev=True)
    assert benchmark.task_names == list(TWENTY_NEWS_TASKS)
    streams = (benchmark.train_stream, benchmark.dev_stream, benchmark.test_stream)
    for index, name in enumerate(TWENTY_NEWS_TASKS):
        seen = [Counter(), Counter()]
        for stream, per_group in zip(streams, (8, 1, 1), strict=True):  # 80/10/10
            experience = stream[index]
            assert experience.task_label == index
            x, y = _stack(experience)
            assert sorted(y) == [0] * per_group + [1] * per_group
            for row, label in zip(x[:, 0].tolist(), y, strict=True):
                seen[label][tuple(row)] += 1
        for label, group in enumerate(TWENTY_NEWS_GROUPS[name]):  # a partition, labelled
            assert seen[label] == _messages(tokenizer, root / group)


def test_twenty_news_split_follows_the_seed(news):
    root, tokenizer = news
    kwargs = {"tasks": ["newsgroup_0"], "tokenizer": tokenizer, "max_length": L}
    first = [_stack(TwentyNews(root, seed=s, **kwargs).train_stream[0])[0] for s in (0, 0, 1)]
    assert torch.equal(first[0], first[1])
    assert first[0].shape == first[2].shape and not torch.equal(first[0], first[2])


def test_twenty_news_errors_name_the_fix(news, tmp_path):
    root, tokenizer = news
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "comp.graphics").symlink_to(root / "comp.graphics")
    kwargs = {"tokenizer": tokenizer, "max_length": L}
    with pytest.raises(FileNotFoundError, match=r"\['comp.os.ms-windows.misc'\] not found"):
        TwentyNews(partial, tasks=["newsgroup_0"], **kwargs)
    with pytest.raises(FileNotFoundError, match=r"no 20 Newsgroups data in .*download=True"):
        TwentyNews(tmp_path / "empty_home", **kwargs)
    with pytest.raises(ValueError, match=r"unknown 20News task \['newsgroup_10'\]"):
        TwentyNews(root, tasks=["newsgroup_10"], **kwargs)
    small = tmp_path / "small"
    for group in TWENTY_NEWS_GROUPS["newsgroup_0"]:
        (small / group).mkdir(parents=True)
        for k in range(5):
            (small / group / str(k)).write_text("the book was great")
    with pytest.raises(ValueError, match=r"comp.graphics has 5 message\(s\); .* at least 6"):
        TwentyNews(small, tasks=["newsgroup_0"], **kwargs)
