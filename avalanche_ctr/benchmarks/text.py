"""Task-incremental text benchmarks of the CTR paper (Ke et al., NeurIPS 2021).

* :func:`text_benchmark` -- the generic builder: one task per list of texts
  (single sentences or sentence pairs) and integer labels, tokenized with a
  HuggingFace tokenizer into one ``(3, max_length)`` LongTensor per sample.
* :func:`DSC` -- document sentiment classification, one task per Amazon
  product domain (2 classes each): the paper's 10 domains by default, or any
  domain whose files are in the data folder (:func:`dsc_domains` lists them).
* :func:`ASC` -- aspect sentiment classification, 19 tasks (SemEval-14
  laptop/restaurant with 3 classes, 17 Bing products with 2 classes), with the
  (aspect term, sentence) pair as input.
* :func:`TwentyNews` -- topic classification on 20 Newsgroups, 10 tasks of 2
  newsgroups each, split into tasks as the official CTR code does.

``DSC(download=True)`` and ``ASC(download=True)`` fetch the files they need from the
repository they were published in, verified against the packaged manifest
(:mod:`avalanche_ctr.benchmarks.download`), into ``root`` (default: Avalanche's
``default_dataset_location("dsc")`` / ``("asc")``); ``TwentyNews(download=True)``
lets scikit-learn fetch its copy of 20 Newsgroups.

Every sample's input ``x`` stacks ``input_ids``, ``attention_mask`` and
``token_type_ids`` (in this order) into a single int64 tensor of shape
``(3, max_length)``, so Avalanche's default collate and ``strategy.mb_x`` work
unchanged: a mini-batch is ``(B, 3, max_length)`` and ``x[:, 0]``,
``x[:, 1]``, ``x[:, 2]`` are the three BERT inputs.

The benchmarks are built with Avalanche's
:func:`~avalanche.benchmarks.tensors_benchmark`; experience ``i`` of every
stream has task label ``i`` and targets ``0..C_i-1``, so
:class:`~avalanche.models.MultiHeadClassifier` grows one head per task with the
right number of classes. The task names are kept on the returned benchmark as
``benchmark.task_names`` (``benchmark.task_names[i]`` names experience ``i``).
"""

from __future__ import annotations

import io
import json
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from avalanche.benchmarks import GenericCLScenario, tensors_benchmark
from sklearn.model_selection import train_test_split

from avalanche_ctr.errors import DataFileError
from avalanche_ctr.text_encoder import load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "ASC",
    "ASC_LABELS",
    "ASC_TASKS",
    "DSC",
    "DSC_DOMAINS",
    "DSCDomainError",
    "TWENTY_NEWS_GROUPS",
    "TWENTY_NEWS_TASKS",
    "TwentyNews",
    "dsc_domains",
    "text_benchmark",
]

TextInput = str | tuple[str, str]
"""One input text: a single sentence, or a ``(first, second)`` sentence pair."""

TaskData = tuple[Sequence[TextInput], Sequence[int]]
"""The texts of one task and their integer labels ``0..C-1``."""

DSC_DOMAINS: tuple[str, ...] = (
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
)
"""The 10 DSC product domains, in the order of the CTR code's first task sequence."""

ASC_TASKS: tuple[str, ...] = (
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
)
"""The 19 ASC tasks, in the order of the CTR code's first task sequence."""

TWENTY_NEWS_GROUPS: dict[str, tuple[str, str]] = {
    f"newsgroup_{task}": pair
    for task, pair in enumerate(
        (
            ("comp.graphics", "comp.os.ms-windows.misc"),
            ("comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware"),
            ("comp.windows.x", "rec.autos"),
            ("rec.motorcycles", "rec.sport.baseball"),
            ("rec.sport.hockey", "sci.crypt"),
            ("sci.electronics", "sci.med"),
            ("sci.space", "misc.forsale"),
            ("talk.politics.misc", "talk.politics.guns"),
            ("talk.politics.mideast", "talk.religion.misc"),
            ("alt.atheism", "soc.religion.christian"),
        )
    )
}
"""The 20News tasks of the official CTR code (PyContinual's ``dataloaders/newsgroup``):
task ``newsgroup_k`` holds the newsgroups ``2k`` and ``2k+1`` of its class list, as
classes 0 and 1."""

TWENTY_NEWS_TASKS: tuple[str, ...] = tuple(
    f"newsgroup_{task}" for task in (3, 4, 6, 7, 0, 1, 8, 5, 9, 2)
)
"""The 10 20News tasks, in the order of the CTR code's first task sequence
(``newsgroup_random_10``, line 1)."""

ASC_LABELS: dict[str, int] = {"negative": 0, "-": 0, "positive": 1, "+": 1, "neutral": 2}
"""Polarity -> class id for ASC: SemEval tasks use 0..2, Bing tasks (``+``/``-``) use 0..1."""

_ASC_CLASS_NAMES = {0: "negative (-)", 1: "positive (+)", 2: "neutral"}
_DSC_LABELS = {"-1": 0, "1": 1}
_DSC_LAYOUT = (
    "expected a folder holding <Domain>_{train,dev,test}.tsv files, one review per line as "
    "'sentence<TAB>label' with label -1 or 1 (e.g. <root>/Pet_Supplies_train.tsv)"
)
_ASC_LAYOUT = (
    "expected <root>/XuSemEval/asc/14/{laptop,rest}/{train,dev,test}.json and "
    "<root>/Bing{3,5,9}Domains/asc/<Product>/{train,dev,test}.json, each a JSON object "
    '{id: {"term", "sentence", "polarity", "id"}}'
)


# --------------------------------------------------------------------------- generic builder


def _tokenize(
    texts: Sequence[TextInput], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> torch.Tensor:
    """Batch-tokenize texts into an int64 tensor of shape ``(N, 3, max_length)``."""
    out = torch.zeros((len(texts), 3, max_length), dtype=torch.long)
    singles = [i for i, text in enumerate(texts) if isinstance(text, str)]
    pairs = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    kwargs = {
        "padding": "max_length",
        "truncation": True,
        "max_length": max_length,
        "return_tensors": "pt",
    }
    for indices, is_pair in ((singles, False), (pairs, True)):
        if not indices:
            continue
        if is_pair:
            for i in indices:
                if len(texts[i]) != 2:
                    raise ValueError(
                        f"a text must be a str or a (first, second) pair; got {texts[i]!r}"
                    )
            enc = tokenizer(
                [str(texts[i][0]) for i in indices],
                [str(texts[i][1]) for i in indices],
                **kwargs,
            )
        else:
            enc = tokenizer([texts[i] for i in indices], **kwargs)
        index = torch.as_tensor(indices, dtype=torch.long)
        out[index, 0] = enc["input_ids"].long()
        out[index, 1] = enc["attention_mask"].long()
        token_type_ids = enc.get("token_type_ids")
        if token_type_ids is not None:
            out[index, 2] = token_type_ids.long()
    return out


def _task_tensors(
    task: TaskData,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    where: str,
) -> list[torch.Tensor]:
    texts, labels = task
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{where}: {len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise ValueError(f"{where}: the task has no examples")
    y = torch.as_tensor(labels, dtype=torch.long)
    if y.ndim != 1 or int(y.min()) < 0:
        raise ValueError(f"{where}: labels must be non-negative ints 0..C-1")
    return [_tokenize(texts, tokenizer, max_length), y]


def text_benchmark(
    train: Sequence[TaskData],
    test: Sequence[TaskData],
    *,
    tokenizer: PreTrainedTokenizerBase | str,
    max_length: int = 128,
    task_names: Sequence[str] | None = None,
    dev: Sequence[TaskData] | None = None,
    task_labels: Sequence[int] | None = None,
) -> GenericCLScenario:
    """Build a task-incremental text benchmark, one experience per task.

    Each text (a ``str``, or a ``(first, second)`` pair tokenized as
    ``tokenizer(first, second)``) is tokenized with
    ``padding="max_length", truncation=True, max_length=max_length``, one batch
    per task and split. A sample's input is one int64 tensor of shape
    ``(3, max_length)``: ``input_ids``, ``attention_mask`` and
    ``token_type_ids`` (all zeros when the tokenizer gives none).

    :param train: Per task, ``(texts, labels)`` with labels in ``0..C-1``.
    :param test: Per task, ``(texts, labels)``; same number of tasks as
        ``train``.
    :param tokenizer: A HuggingFace tokenizer (a fast one tokenizes much
        faster), or the name or folder of one (``AutoTokenizer.from_pretrained``).
    :param max_length: Sequence length every input is padded or truncated to.
    :param task_names: One name per task (default ``task0``, ``task1``, ...),
        stored as ``benchmark.task_names``.
    :param dev: Optional per-task validation data; when given, the benchmark
        has a ``dev_stream`` with the same task labels.
    :param task_labels: The task label of each experience (default ``0, 1, ...``);
        a label may repeat, e.g. ``[0, 1, 0]`` to continue task 0 with more data.
    :return: An Avalanche benchmark (built by
        :func:`~avalanche.benchmarks.tensors_benchmark`) whose experience ``i``
        has task label ``task_labels[i]`` in every stream, with ``task_names``
        attached.
    :raises ValueError: On mismatched numbers of tasks, texts and labels, an
        empty task, negative labels, or a bad ``max_length``.
    """
    n_tasks = len(train)
    if n_tasks == 0:
        raise ValueError("text_benchmark needs at least one task")
    if len(test) != n_tasks:
        raise ValueError(f"train has {n_tasks} tasks but test has {len(test)}")
    if dev is not None and len(dev) != n_tasks:
        raise ValueError(f"train has {n_tasks} tasks but dev has {len(dev)}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2; got {max_length!r}")
    names = [f"task{i}" for i in range(n_tasks)] if task_names is None else list(task_names)
    if len(names) != n_tasks:
        raise ValueError(f"{len(names)} task names for {n_tasks} tasks")
    labels = list(range(n_tasks)) if task_labels is None else [int(t) for t in task_labels]
    if len(labels) != n_tasks or min(labels) < 0:
        raise ValueError(f"need one task label >= 0 per task, got {task_labels} for {n_tasks}")
    tokenizer = load_tokenizer(tokenizer)

    def tensors(split: Sequence[TaskData], split_name: str) -> list[list[torch.Tensor]]:
        return [
            _task_tensors(task, tokenizer, max_length, f"{split_name} task {i} ({names[i]})")
            for i, task in enumerate(split)
        ]

    benchmark = tensors_benchmark(
        train_tensors=tensors(train, "train"),
        test_tensors=tensors(test, "test"),
        other_streams_tensors=None if dev is None else {"dev": tensors(dev, "dev")},
        task_labels=labels,
    )
    benchmark.task_names = names
    return benchmark


# --------------------------------------------------------------------------- helpers


def _check_names(given: Sequence[str] | None, valid: tuple[str, ...], what: str) -> list[str]:
    if given is None:
        return list(valid)
    if isinstance(given, str):
        given = [given]
    names = list(given)
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid names are: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate {what} in {names}")
    if not names:
        raise ValueError(f"at least one {what} is needed; valid names are: {', '.join(valid)}")
    return names


def _check_root(root: str | os.PathLike[str], what: str, layout: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} root {str(path)!r} is not a directory; {layout}")
    return path


def _check_file(path: Path, what: str, layout: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} not found; {layout}")
    return path


def _subsample(
    texts: list[TextInput], labels: list[int], n: int | None, seed: int
) -> tuple[list[TextInput], list[int]]:
    """Keep ``n`` examples, stratified by label when possible, else uniformly at random."""
    if n is None or n >= len(labels):
        return texts, labels
    indices = np.arange(len(labels))
    try:
        keep, _ = train_test_split(indices, train_size=n, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify, or n smaller than the class count
        keep = np.random.default_rng(seed).choice(len(labels), size=n, replace=False)
    keep = np.sort(keep)
    return [texts[i] for i in keep], [labels[i] for i in keep]


def _check_count(value: int | None, name: str = "n_train") -> None:
    """Raise unless ``value`` (``n_train``, ``n_test``) is a positive int or ``None``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int or None; got {value!r}")


def _check_classes(
    kind: str,
    name: str,
    train: list[int],
    others: dict[str, list[int]],
    class_names: dict[int, str],
    n_train: int | None,
) -> None:
    """Refuse a task whose training split cannot teach every class it is tested on: a
    single class in training, or a test (dev) label the training split lacks. Such a
    task's test samples of that class could never be predicted."""
    seen = set(train)
    kept = f" (of the {n_train} kept by n_train)" if n_train is not None else ""
    more = "add training examples of it" + (", or raise n_train" if n_train else "")
    for split, labels in others.items():
        missing = sorted(set(labels) - seen)
        if missing:
            label = class_names.get(missing[0], str(missing[0]))
            raise DataFileError(
                f"{kind} task {name!r}: its {split} split has class {label!r}, which none of "
                f"its training examples{kept} has, so those {split} examples could never be "
                f"predicted; {more}, or leave the task out"
            )
    if len(seen) < 2:
        label = class_names.get(train[0], str(train[0])) if train else "none"
        raise DataFileError(
            f"{kind} task {name!r}: every training example{kept} has class {label!r}; a task "
            f"needs at least two classes in training: add training examples of the other "
            f"class{', or raise n_train' if n_train else ''}, or leave the task out"
        )


def _build(
    loader: Callable[[str, str], tuple[list[TextInput], list[int]]],
    names: list[str],
    *,
    kind: str,
    class_names: dict[int, str] | Callable[[str], dict[int, str]],
    n_train: int | None,
    n_test: int | None,
    seed: int,
    dev: bool,
    tokenizer: PreTrainedTokenizerBase | str,
    max_length: int,
) -> GenericCLScenario:
    """The benchmark of ``names``, each task read by ``loader(name, split)``; a task whose
    training split misses a class is refused, naming the class by ``class_names`` (one
    map for every task, or a task's map by its name)."""
    train, test, dev_data = [], [], []
    for name in names:
        texts, labels = loader(name, "train")
        train.append(_subsample(texts, labels, n_train, seed))
        test.append(_subsample(*loader(name, "test"), n_test, seed))
        if dev:
            dev_data.append(_subsample(*loader(name, "dev"), n_test, seed))
        others = {"test": test[-1][1], **({"dev": dev_data[-1][1]} if dev else {})}
        subsampled = n_train if n_train is not None and n_train < len(labels) else None
        names_of = class_names(name) if callable(class_names) else class_names
        _check_classes(kind, name, train[-1][1], others, names_of, subsampled)
    return text_benchmark(
        train,
        test,
        tokenizer=tokenizer,
        max_length=max_length,
        task_names=names,
        dev=dev_data if dev else None,
    )


def _build_from_files(
    kind: str,
    layout: str,
    root: str | os.PathLike[str],
    names: list[str],
    path_of: Callable[[Path, str, str], Path],
    read: Callable[[Path], tuple[list[TextInput], list[int]]],
    class_names: dict[int, str],
    *,
    n_train: int | None,
    n_test: int | None = None,
    seed: int,
    dev: bool,
    tokenizer: PreTrainedTokenizerBase | str,
    max_length: int,
) -> GenericCLScenario:
    """Check every file of ``names`` exists (before any tokenization), then read them,
    check every task's classes (:func:`_check_classes`) and build."""
    _check_count(n_train)
    _check_count(n_test, "n_test")
    base = _check_root(root, kind, layout)
    splits = ("train", "test", "dev") if dev else ("train", "test")
    for name in names:
        for split in splits:
            _check_file(path_of(base, name, split), kind, layout)
    return _build(
        lambda name, split: read(path_of(base, name, split)),
        names,
        kind=kind,
        class_names=class_names,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        dev=dev,
        tokenizer=tokenizer,
        max_length=max_length,
    )


def _dataset_folder(
    name: str,
    what: str,
    layout: str,
    root: str | os.PathLike[str] | None,
    download: bool,
    files: Sequence[str],
) -> Path:
    """The folder of dataset ``name``: ``root``, else Avalanche's default location. With
    ``download``, first fetch those of ``files`` (paths relative to the folder) that the
    packaged manifest lists and the folder lacks, verified
    (:func:`~avalanche_ctr.benchmarks.download.download_text_data`)."""
    from avalanche_ctr.benchmarks import download as downloads

    folder = downloads.default_root(name) if root is None else Path(root).expanduser()
    if download:
        listed = {entry.path for entry in downloads.text_manifest().datasets[name]}
        downloads.download_text_data(name, folder, files=[f for f in files if f in listed])
    elif root is None and not folder.is_dir():
        raise FileNotFoundError(
            f"no {what} data in {str(folder)!r}, Avalanche's default dataset location: pass "
            f"download=True (or run `avalanche-ctr download {name}`) to fetch the verified "
            f"files there, or root= the folder that holds them; {layout}"
        )
    return folder


# --------------------------------------------------------------------------- DSC


class DSCDomainError(FileNotFoundError, ValueError):
    """A requested DSC domain has no file in the data folder (a missing file and an
    unknown domain name at once, hence both bases)."""


def _dsc_splits(dev: bool) -> tuple[str, ...]:
    return ("train", "test", "dev") if dev else ("train", "test")


def dsc_domains(root: str | os.PathLike[str], *, dev: bool = False) -> list[str]:
    """The DSC domains whose files are in ``root``: every ``<Domain>`` with both
    ``<Domain>_train.tsv`` and ``<Domain>_test.tsv`` (and ``<Domain>_dev.tsv`` with
    ``dev=True``). The paper's domains come first, in the order of :data:`DSC_DOMAINS`,
    then the others in alphabetical order, so ``DSC(root, domains=dsc_domains(root))``
    extends the paper's task sequence.

    :param root: The ``dsc`` folder holding the ``.tsv`` files.
    :param dev: Only list domains that also have a dev file.
    :raises FileNotFoundError: If ``root`` is not a directory.
    """
    base = _check_root(root, "DSC", _DSC_LAYOUT)
    suffix = "_train.tsv"
    found = {path.name[: -len(suffix)] for path in base.glob(f"*{suffix}") if path.is_file()}
    usable = {
        domain
        for domain in found
        if all((base / f"{domain}_{split}.tsv").is_file() for split in _dsc_splits(dev))
    }
    return [d for d in DSC_DOMAINS if d in usable] + sorted(usable - set(DSC_DOMAINS))


def _check_dsc_domains(base: Path, given: Sequence[str] | None, dev: bool) -> list[str]:
    """The requested domains (default: the paper's), refusing duplicates, an empty list
    and a domain none of whose files is in ``base``. A domain missing only some of its
    files is left to the per-file check, which names the missing file."""
    if given is None:
        return list(DSC_DOMAINS)
    names = [given] if isinstance(given, str) else list(given)
    if not names:
        raise ValueError(
            f"at least one DSC domain is needed; domains with files in {str(base)!r}: "
            f"{', '.join(dsc_domains(base, dev=dev)) or 'none'}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate DSC domain in {names}; name each domain once")
    splits = _dsc_splits(dev)
    absent = [n for n in names if not any((base / f"{n}_{s}.tsv").is_file() for s in splits)]
    if absent:
        missing = ", ".join(f"{name}_{split}.tsv" for name in absent for split in splits)
        raise DSCDomainError(
            f"unknown DSC domain {absent}: none of its files is in {str(base)!r} (missing "
            f"{missing}); domains with files there: "
            f"{', '.join(dsc_domains(base, dev=dev)) or 'none'}. Pick domains among them or "
            f"add the files: {_DSC_LAYOUT}"
        )
    return names


def _read_text(path: Path) -> str:
    """The text of a UTF-8 data file; :class:`DataFileError` naming the line of the first
    byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataFileError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); save the file as "
            "UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _read_dsc(path: Path) -> tuple[list[TextInput], list[int]]:
    texts: list[TextInput] = []
    labels: list[int] = []
    for line_no, line in enumerate(io.StringIO(_read_text(path), newline=None), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        sentence, sep, label = line.rpartition("\t")
        if not sep or label.strip() not in _DSC_LABELS:
            raise DataFileError(
                f"{path}:{line_no}: expected 'sentence<TAB>label' with label -1 or 1, got "
                f"{line[:60]!r}; fix or delete the line"
            )
        texts.append(sentence)
        labels.append(_DSC_LABELS[label.strip()])
    if not texts:
        raise DataFileError(f"{path} holds no review; {_DSC_LAYOUT}")
    return texts, labels


def DSC(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    domains: Sequence[str] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    tokenizer: PreTrainedTokenizerBase | str,
    max_length: int = 128,
    seed: int = 0,
    dev: bool = False,
) -> GenericCLScenario:
    """Document sentiment classification (DSC), one task per Amazon product domain.

    Reads ``<root>/<Domain>_{train,test}.tsv`` (and ``_dev.tsv`` with
    ``dev=True``), one review per line as ``sentence<TAB>label``; labels
    ``-1``/``1`` become classes ``0``/``1``. The sentences are used exactly as
    stored: they are pre-tokenized text whose HTML entities are written as
    separate tokens (``& quot ;``, ``& # 34 ;``); they are not unescaped, as in
    the CTR code.

    :param root: The ``dsc`` folder holding the ``.tsv`` files (default: Avalanche's
        ``default_dataset_location("dsc")``).
    :param download: First fetch the files of ``domains`` that ``root`` lacks (train,
        dev and test, for the domains the packaged manifest lists: the paper's 10), each
        verified by its sha256 (:func:`~avalanche_ctr.benchmarks.download.
        download_text_data`); files there already are verified too. Without it the
        files are read as they are.
    :param domains: Domains to use, in task order: any domain whose files are in
        ``root`` (:func:`dsc_domains` lists them, e.g. the full Amazon collection's
        24); default :data:`DSC_DOMAINS` (the CTR paper's order, 10 domains).
    :param n_train: If given, keep at most this many training examples per
        task: a seeded subsample, stratified by label (uniformly random when
        stratifying is impossible). Test (and dev) sets are kept whole unless
        ``n_test`` is given.
    :param n_test: If given, keep at most this many test (and dev) examples per task,
        a seeded stratified subsample as for ``n_train`` (the files are sorted by label,
        so a prefix would not do).
    :param tokenizer: HuggingFace tokenizer, or its name or folder (see
        :func:`text_benchmark`).
    :param max_length: Sequence length of the tokenized inputs.
    :param seed: Seed of the ``n_train`` subsample.
    :param dev: Also read the dev files and expose them as ``dev_stream``.
    :return: The benchmark of :func:`text_benchmark`, task names = domains.
    :raises DSCDomainError: If a requested domain has no file in ``root`` (the
        message names the missing files and the domains that have files).
    :raises FileNotFoundError: If ``root`` or a needed ``.tsv`` file is missing.
    :raises DataFileError: On an empty, malformed or non-UTF-8 file (naming the file
        and line), or a domain whose training split lacks a class of its test (dev)
        split or has a single class (naming the domain and the class).
    :raises ~avalanche_ctr.benchmarks.download.DownloadError: With ``download``, if a
        file cannot be fetched (the message names the missing files and the manual fix);
        :class:`~avalanche_ctr.benchmarks.download.ChecksumError` if a file is not the
        manifest's.
    :raises ValueError: On a duplicate or empty ``domains`` or a bad ``n_train``.
    """
    wanted = DSC_DOMAINS if domains is None else [domains] if isinstance(domains, str) else domains
    folder = _dataset_folder(
        "dsc",
        "DSC",
        _DSC_LAYOUT,
        root,
        download,
        [f"{domain}_{split}.tsv" for domain in wanted for split in ("train", "dev", "test")],
    )
    base = _check_root(folder, "DSC", _DSC_LAYOUT)
    return _build_from_files(
        "DSC",
        _DSC_LAYOUT,
        base,
        _check_dsc_domains(base, domains, dev),
        lambda base, name, split: base / f"{name}_{split}.tsv",
        _read_dsc,
        {label: text for text, label in _DSC_LABELS.items()},
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        dev=dev,
        tokenizer=tokenizer,
        max_length=max_length,
    )


# --------------------------------------------------------------------------- ASC


def _asc_dir(base: Path, name: str) -> Path:
    """Map a task name to its folder.

    ``XuSemEval14_laptop`` -> ``XuSemEval/asc/14/laptop``;
    ``Bing9domains_X`` -> ``Bing9Domains/asc/X``.
    """
    prefix, _, product = name.partition("_")
    if prefix.startswith("XuSemEval"):
        return base / "XuSemEval" / "asc" / prefix.removeprefix("XuSemEval") / product
    return base / prefix.replace("domains", "Domains") / "asc" / product


def _read_asc(path: Path) -> tuple[list[TextInput], list[int]]:
    expected = 'expected a JSON object {id: {"term", "sentence", "polarity"}}'
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise DataFileError(
            f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg}); {expected}: "
            "the file is damaged or truncated, copy it again"
        ) from None
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: {expected}, got a JSON {type(data).__name__}")
    if not data:
        raise DataFileError(f"{path} holds no example; {expected}")
    texts: list[TextInput] = []
    labels: list[int] = []
    for key, item in data.items():
        try:
            term, sentence, polarity = item["term"], item["sentence"], item["polarity"]
        except (KeyError, TypeError):
            raise DataFileError(
                f"{path}: entry {key!r} lacks term/sentence/polarity; {expected}"
            ) from None
        if not (isinstance(term, str) and isinstance(sentence, str)):
            raise DataFileError(f"{path}: entry {key!r} has a term or sentence that is not text")
        if polarity not in ASC_LABELS:
            raise DataFileError(
                f"{path}: entry {key!r} has polarity {polarity!r}; known: {sorted(ASC_LABELS)}"
            )
        texts.append((term, sentence))
        labels.append(ASC_LABELS[polarity])
    return texts, labels


def ASC(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    tasks: Sequence[str] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    tokenizer: PreTrainedTokenizerBase | str,
    max_length: int = 128,
    seed: int = 0,
    dev: bool = False,
) -> GenericCLScenario:
    """Aspect sentiment classification (ASC), 19 tasks of reviews.

    Task ``XuSemEval14_<d>`` reads ``<root>/XuSemEval/asc/14/<d>/{train,test}.json``
    and task ``Bing<k>domains_<P>`` reads
    ``<root>/Bing<k>Domains/asc/<P>/{train,test}.json`` (``dev.json`` too with
    ``dev=True``). Each file is a JSON object ``{id: {"term", "sentence",
    "polarity", "id"}}``, read in file order; the input is the pair
    ``(term, sentence)``, so the term is the first segment (token type 0) and
    the sentence the second (token type 1). Labels follow :data:`ASC_LABELS`:
    ``negative``/``-`` -> 0, ``positive``/``+`` -> 1, ``neutral`` -> 2, so the
    SemEval tasks have 3 classes and the Bing tasks 2.

    :param root: The ``asc`` folder holding ``XuSemEval`` and ``Bing*Domains``
        (default: Avalanche's ``default_dataset_location("asc")``).
    :param download: First fetch the files of ``tasks`` that ``root`` lacks (train, dev
        and test), each verified by its sha256, as :func:`DSC` does.
    :param tasks: Task names, in task order; default :data:`ASC_TASKS` (the
        CTR paper's order, 19 tasks).
    :param n_train: If given, keep at most this many training examples per
        task: a seeded subsample, stratified by label (uniformly random when
        stratifying is impossible). Test (and dev) sets are kept whole unless
        ``n_test`` is given.
    :param n_test: If given, keep at most this many test (and dev) examples per task,
        a seeded stratified subsample as for ``n_train`` (the files are sorted by label,
        so a prefix would not do).
    :param tokenizer: HuggingFace tokenizer, or its name or folder (see
        :func:`text_benchmark`).
    :param max_length: Sequence length of the tokenized inputs.
    :param seed: Seed of the ``n_train`` subsample.
    :param dev: Also read the dev files and expose them as ``dev_stream``.
    :return: The benchmark of :func:`text_benchmark`, task names = tasks.
    :raises FileNotFoundError: If ``root`` or a needed ``.json`` file is missing.
    :raises DataFileError: On an empty, malformed or non-UTF-8 file (naming the file),
        or a task whose training split lacks a class of its test (dev) split or has a
        single class (naming the task and the class).
    :raises ~avalanche_ctr.benchmarks.download.DownloadError: With ``download``, as for
        :func:`DSC`.
    :raises ValueError: On an unknown task name or a bad ``n_train``.
    """
    names = _check_names(tasks, ASC_TASKS, "ASC task")
    folder = _dataset_folder(
        "asc",
        "ASC",
        _ASC_LAYOUT,
        root,
        download,
        [
            (_asc_dir(Path(), name) / f"{split}.json").as_posix()
            for name in names
            for split in ("train", "dev", "test")
        ],
    )
    return _build_from_files(
        "ASC",
        _ASC_LAYOUT,
        folder,
        names,
        lambda base, name, split: _asc_dir(base, name) / f"{split}.json",
        _read_asc,
        _ASC_CLASS_NAMES,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        dev=dev,
        tokenizer=tokenizer,
        max_length=max_length,
    )


# --------------------------------------------------------------------------- 20News

_TWENTY_NEWS_LAYOUT = (
    "expected a folder holding one folder per newsgroup (comp.graphics, ..., "
    "soc.religion.christian) with one message per file, as the 20 Newsgroups archives are "
    "laid out, or a scikit-learn data home holding its 20news-bydate cache "
    "(`avalanche-ctr download 20news --root DIR` writes one)"
)
_TWENTY_NEWS_MIN = 6
"""Fewest messages a newsgroup needs for the official 80/10/10 split to leave every
split at least one."""


def _read_group_folders(base: Path, groups: list[str]) -> dict[str, list[str]] | None:
    """The messages of ``groups`` from ``base/<group>/<message>`` (the archives' layout,
    decoded as Latin-1 as scikit-learn does), or ``None`` if ``base`` holds none of them."""
    folders = {group: base / group for group in groups}
    if not any(folder.is_dir() for folder in folders.values()):
        return None
    missing = [group for group, folder in folders.items() if not folder.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"20News folder(s) {missing} not found in {str(base)!r}; {_TWENTY_NEWS_LAYOUT}"
        )
    return {
        group: [
            path.read_bytes().decode("latin-1")
            for path in sorted(folder.iterdir())
            if path.is_file() and not path.name.startswith(".")
        ]
        for group, folder in folders.items()
    }


def _twenty_news_messages(
    root: str | os.PathLike[str] | None, download: bool, groups: list[str]
) -> dict[str, list[str]]:
    """The messages of each of ``groups``: from ``root``'s newsgroup folders if it has
    them, else from scikit-learn's ``fetch_20newsgroups(subset="all")`` with ``root`` (or
    Avalanche's ``default_dataset_location("20news")``) as its data home."""
    from avalanche_ctr.benchmarks.download import DownloadError, default_root

    if root is not None and Path(root).expanduser().is_dir():
        read = _read_group_folders(Path(root).expanduser(), groups)
        if read is not None:
            return read
    from sklearn.datasets import fetch_20newsgroups

    home = default_root("20news") if root is None else Path(root).expanduser()
    try:
        data = fetch_20newsgroups(
            data_home=str(home), subset="all", shuffle=False, download_if_missing=download
        )
    except OSError as error:
        if download:
            raise DownloadError(
                f"could not download 20 Newsgroups into {str(home)!r} ({error}): connect "
                f"to the internet once so that scikit-learn fetches it, or pass root= / "
                f"--data-root a folder that holds it; {_TWENTY_NEWS_LAYOUT}"
            ) from None
        raise FileNotFoundError(
            f"no 20 Newsgroups data in {str(home)!r}: pass download=True (or run "
            f"`avalanche-ctr download 20news`) so that scikit-learn fetches it there; "
            f"{_TWENTY_NEWS_LAYOUT}"
        ) from None
    by_group: dict[str, list[str]] = {name: [] for name in data.target_names}
    for text, target in zip(data.data, data.target, strict=True):
        by_group[data.target_names[target]].append(text)
    return {group: by_group[group] for group in groups}


def _official_split(messages: list[str], seed: int, group: str) -> dict[str, list[str]]:
    """One newsgroup's messages split as the official code does: 80 % train, the rest
    halved into dev and test, shuffled with ``seed`` (the run's seed there too)."""
    if len(messages) < _TWENTY_NEWS_MIN:
        raise ValueError(
            f"20News newsgroup {group} has {len(messages)} message(s); the 80/10/10 split "
            f"needs at least {_TWENTY_NEWS_MIN}"
        )
    train, held = train_test_split(messages, test_size=0.2, shuffle=True, random_state=seed)
    dev, test = train_test_split(held, test_size=0.5, shuffle=True, random_state=seed)
    return {"train": train, "dev": dev, "test": test}


def TwentyNews(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    tasks: Sequence[str] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    tokenizer: PreTrainedTokenizerBase | str,
    max_length: int = 128,
    seed: int = 0,
    dev: bool = False,
) -> GenericCLScenario:
    """20News, the CTR paper's topic classification benchmark: 20 Newsgroups as 10 tasks
    of 2 newsgroups each (Ke et al., NeurIPS 2021, Sec. 5).

    The tasks are those of the official code (:data:`TWENTY_NEWS_GROUPS`: task
    ``newsgroup_k`` holds newsgroups ``2k`` and ``2k+1`` of its class list, as classes
    0 and 1), in the order of its first task sequence (:data:`TWENTY_NEWS_TASKS`). As
    there, each newsgroup's messages are split 80 % train, 10 % dev, 10 % test, shuffled
    with ``seed``. The messages are used whole (headers kept), as the official code
    uses them.

    The messages come from ``root`` when it holds one folder per newsgroup with one
    message per file (the layout of the 20 Newsgroups archives, e.g. the "19997" one the
    official code reads), else from scikit-learn's ``fetch_20newsgroups(subset="all")``
    (the "bydate" version, 18,846 messages) with ``root`` as its data home.

    :param root: A folder of newsgroup folders, or scikit-learn's data home (default:
        Avalanche's ``default_dataset_location("20news")``).
    :param download: Let scikit-learn download its archive when the data home lacks it.
    :param tasks: Task names, in task order; default :data:`TWENTY_NEWS_TASKS`.
    :param n_train: If given, keep at most this many training messages per task, a
        seeded stratified subsample (as :func:`DSC`).
    :param n_test: If given, keep at most this many test (and dev) messages per task.
    :param tokenizer: HuggingFace tokenizer, or its name or folder (see
        :func:`text_benchmark`).
    :param max_length: Sequence length of the tokenized inputs.
    :param seed: Seed of the 80/10/10 split and of the subsamples.
    :param dev: Also expose the dev split as ``dev_stream``.
    :return: The benchmark of :func:`text_benchmark`, task names = tasks.
    :raises FileNotFoundError: If ``root`` lacks some newsgroup folders, or the data home
        lacks the data and ``download`` is off.
    :raises ~avalanche_ctr.benchmarks.download.DownloadError: If scikit-learn cannot
        download the archive.
    :raises ValueError: On an unknown task name, a bad ``n_train``, or a newsgroup with
        fewer than 6 messages.
    """
    names = _check_names(tasks, TWENTY_NEWS_TASKS, "20News task")
    _check_count(n_train)
    _check_count(n_test, "n_test")
    groups = [group for name in names for group in TWENTY_NEWS_GROUPS[name]]
    messages = _twenty_news_messages(root, download, groups)
    data: dict[str, dict[str, tuple[list[TextInput], list[int]]]] = {}
    for name in names:
        splits: dict[str, tuple[list[TextInput], list[int]]] = {
            split: ([], []) for split in ("train", "dev", "test")
        }
        for label, group in enumerate(TWENTY_NEWS_GROUPS[name]):
            for split, texts in _official_split(messages[group], seed, group).items():
                splits[split][0].extend(texts)
                splits[split][1].extend([label] * len(texts))
        data[name] = splits
    return _build(
        lambda name, split: data[name][split],
        names,
        kind="20News",
        class_names=lambda name: dict(enumerate(TWENTY_NEWS_GROUPS[name])),
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        dev=dev,
        tokenizer=tokenizer,
        max_length=max_length,
    )
