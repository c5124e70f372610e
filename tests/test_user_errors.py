"""Every mistake a user can make on the command line ends in one ``avalanche-ctr: error:``
line that names the value or the file and says what to do: exit status 2 for usage, 1
for the rest, no traceback (unless ``--debug``), and nothing trained.

One :class:`Case` per mistake, run through the real entry point in-process. To add a
case, add a row to :data:`CASES`: its command line (``{enc}``, ``{bare}``, ``{damaged}``,
``{gpt2}``, ``{data}``, ``{root}``, ``{out}`` stand for the fixtures' paths), a regular expression
the error line must match, its exit status and, if it needs its own files, a function
writing them under the case's folder and returning the ``{data}`` path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _text_helpers import make_tokenizer, save_tiny_encoder, task_data, tiny_bert

from avalanche_ctr.cli import main
from avalanche_ctr.experiments.errors import UsageError

USAGE, FAILURE = 2, 1
ERROR = "avalanche-ctr: error: "


@dataclass(frozen=True)
class Case:
    """One mistake: ``argv`` (placeholders in braces), the error line's ``message``
    (a regular expression), the exit ``status`` and the ``data`` it needs: called with
    the case's folder (``{root}``), it writes files there, e.g. a damaged ``--out`` folder
    at ``{out}`` (``{root}/out``, the ``--out`` unless ``argv`` names one), and returns
    the ``{data}`` path."""

    name: str
    argv: tuple[str, ...]
    message: str
    status: int = USAGE
    data: Callable[[Path], Path] | None = None


# ----------------------------------------------------------------------------- fixtures
DOMAIN = "Pet_Supplies"
ROUTER = "Bing3domains_Router"
LAPTOP = "XuSemEval14_laptop"


def _dsc(train: bytes | None = None, test: bytes | None = None) -> Callable[[Path], Path]:
    """One DSC domain with two-class splits, its training (test) file replaced if given."""

    def write(folder: Path) -> Path:
        root = folder / "dsc"
        root.mkdir()
        for split, seed in (("train", 0), ("dev", 1), ("test", 2)):
            texts, labels = task_data("books", 8, seed=seed)
            lines = "".join(f"{t}\t{1 if y else -1}\n" for t, y in zip(texts, labels, strict=True))
            (root / f"{DOMAIN}_{split}.tsv").write_text(lines)
        for split, content in (("train", train), ("test", test)):
            if content is not None:
                (root / f"{DOMAIN}_{split}.tsv").write_bytes(content)
        return root

    return write


def _asc_entries(polarities: list[str]) -> bytes:
    texts, _ = task_data("games", len(polarities), seed=0)
    entries = {
        str(i): {"term": text.split()[0], "sentence": text, "polarity": p, "id": str(i)}
        for i, (text, p) in enumerate(zip(texts, polarities, strict=True))
    }
    return json.dumps(entries).encode()


def _asc(task: str, train: bytes | None = None) -> Callable[[Path], Path]:
    """One ASC task (``+``/``-`` for Bing, three polarities for SemEval), its training
    file replaced if given."""

    def write(folder: Path) -> Path:
        prefix, product = task.split("_", 1)
        if prefix.startswith("XuSemEval"):
            where = folder / "asc" / "XuSemEval" / "asc" / "14" / product
            polarities = ["positive", "negative", "neutral"] * 3
        else:
            where = folder / "asc" / prefix.replace("domains", "Domains") / "asc" / product
            polarities = ["+", "-"] * 4
        where.mkdir(parents=True)
        for split in ("train", "dev", "test"):
            (where / f"{split}.json").write_bytes(_asc_entries(polarities))
        if train is not None:
            (where / "train.json").write_bytes(train)
        return folder / "asc"

    return write


TEXT = ("--encoder", "{enc}", "--max-length", "16", "--data-root", "{data}")
DSC = ("run", "--benchmark", "dsc", "--task-order", DOMAIN, "--strategy", "naive", *TEXT)
ASC = ("run", "--benchmark", "asc", "--task-order", ROUTER, "--strategy", "naive", *TEXT)
SEMEVAL = ("run", "--benchmark", "asc", "--task-order", LAPTOP, "--strategy", "naive", *TEXT)
DIGITS = ("run", "--epochs", "1", "--hidden-size", "8")
CONFIG = r"--config \S+/c\.yaml: "


def _config(content: bytes) -> Callable[[Path], Path]:
    """A configuration file ``c.yaml`` holding ``content``; its path."""
    return lambda folder: _write(folder / "config" / "c.yaml", content) / "c.yaml"


RESUMED = ("run", "--strategy", "exssnet", "--hidden-size", "16", "--n-experiences", "2")


def _unrecorded_run(folder: Path) -> Path:
    """An ExSSNeT run of :data:`RESUMED` with ``--epochs 1`` whose record is gone: the
    next command resumes it from its checkpoint."""
    out = folder / "out"
    assert main([*RESUMED, "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    for record in out.glob("runs/*.json"):
        record.unlink()
    return folder


ENCODER_FIX = r"pass a model folder as save_pretrained writes it"

CASES = [
    # seeds, and runs counted twice
    Case(
        "seed negative",
        ("run", "--seed", "-1"),
        r"--seed -1: a seed must be an integer "
        r"from 0 to 4294967295 \(numpy's range\); give one in that range",
    ),
    Case("seed too large", ("compare", "--seeds", "0,4294967296"), r"--seeds 4294967296: a seed"),
    Case(
        "seed twice",
        ("compare", "--seeds", "0,1,0"),
        r"--seeds names 0 more than once, which would count the same run twice; give each once",
    ),
    Case(
        "strategy twice",
        ("compare", "--strategies", "naive,ewc,naive"),
        r"--strategies names naive more than once",
    ),
    # counts and sizes
    Case(
        "tasks the split cannot give",
        ("run", "--n-experiences", "3"),
        r"--n-experiences 3: split_digits splits its 10 classes evenly over its tasks; give one "
        r"of 1, 2, 5, 10",
    ),
    Case(
        "tasks cifar cannot give",
        ("run", "--benchmark", "split_cifar100", "--n-experiences", "3"),
        r"--n-experiences 3: split_cifar100 splits its 100 classes .* 1, 2, 4, 5, 10, 20",
    ),
    Case(
        "hidden size 0", ("run", "--hidden-size", "0"), r"--hidden-size must be at least 1, got 0"
    ),
    Case(
        "hidden size negative",
        ("run", "--hidden-size", "-4"),
        r"--hidden-size must be at "
        r"least 1, got -4",
    ),
    Case(
        "threads 0",
        (*DIGITS, "--threads", "0"),
        r"--threads 0: give a number of torch CPU "
        r"threads of at least 1, or leave it out",
    ),
    Case("threads negative", ("compare", "--threads", "-1"), r"--threads -1: give a number"),
    Case("n-train 0", (*DSC, "--n-train", "0"), r"--n-train must be at least 1, got 0"),
    Case(
        "max-length 1",
        (*DSC, "--max-length", "1"),
        r"--max-length 1: give at least 2 tokens per input",
    ),
    Case(
        "max-length beyond the encoder",
        (*DSC, "--max-length", "17"),
        r"--max-length 17: the encoder .*enc reads at most 16 tokens; give --max-length 16 or "
        r"less",
    ),
    Case(
        "head units below the classes",
        ("run", "--head-units", "1"),
        r"--head-units 1: every task of split_digits has 2 classes; give --head-units 2 or more",
    ),
    Case(
        "head units below permuted classes",
        ("run", "--benchmark", "permuted_fmnist", "--head-units", "5"),
        r"--head-units 5: every task of permuted_fmnist has 10 classes",
    ),
    Case(
        "head units on text",
        (*DSC, "--head-units", "2"),
        r"--head-units sets the heads of the image benchmarks; .* leave it out for dsc",
    ),
    Case(
        "replay without memory",
        ("run", "--strategy", "replay", "--replay-mem-size", "0"),
        r"--replay-mem-size: must be positive, got 0",
    ),
    Case(
        "lwf alpha negative",
        ("run", "--strategy", "lwf", "--lwf-alpha", "-5"),
        r"--lwf-alpha: must be 0 or more, got -5.0",
    ),
    # non-finite numbers, wherever a number is read
    Case("lr inf", ("run", "--lr", "inf"), r"--lr must be a positive finite number, got inf"),
    Case("lr nan", ("run", "--lr", "nan"), r"--lr must be a positive finite number, got nan"),
    Case("mask lr inf", ("run", "--mask-lr", "inf"), r"--mask-lr inf: give a finite number"),
    Case(
        "ewc lambda inf",
        ("run", "--strategy", "ewc", "--ewc-lambda", "inf"),
        r"--ewc-lambda inf: give a finite number",
    ),
    Case("density nan", ("run", "--density", "nan"), r"--density nan: give a finite number"),
    Case(
        "gate bias -inf",
        (*DSC, "--strategy", "ctr", "--gate-bias=-inf"),
        r"--gate-bias -inf: give a finite number",
    ),
    # --encoder
    Case(
        "encoder missing",
        (*DSC, "--encoder", "{root}/missing"),
        rf"--encoder .*/missing: no such folder; {ENCODER_FIX}",
    ),
    Case(
        "encoder folder without a model",
        (*DSC, "--encoder", "{root}"),
        rf"--encoder .* is a folder without a model \(no config.json\); {ENCODER_FIX}",
    ),
    Case(
        "encoder is a file",
        (*DSC, "--encoder", "{enc}/config.json"),
        rf"--encoder .*config.json is a file; {ENCODER_FIX}",
    ),
    Case(
        "encoder config that is not a model's",
        (*DSC, "--encoder", "{data}"),
        rf"--encoder .*: its config.json is not a transformers model's \(.*\); {ENCODER_FIX}",
        data=lambda folder: _write(folder / "model" / "config.json", b'{"model_type": "nope"}'),
    ),
    Case(
        "encoder without a tokenizer",
        (*DSC, "--encoder", "{bare}"),
        rf"--encoder .*bare: its tokenizer knows only its special tokens \(the folder holds no "
        rf"tokenizer files\), so every word would read as unknown; {ENCODER_FIX}",
    ),
    Case(
        "encoder with a damaged tokenizer",
        (*DSC, "--encoder", "{damaged}"),
        rf"--encoder .*damaged: its tokenizer could not be loaded \(.*\); {ENCODER_FIX}",
    ),
    Case(
        "encoder layer of a missing encoder",
        (*DSC, "--strategy", "exssnet", "--encoder-layer", "1", "--encoder", "{root}/missing"),
        r"--encoder .*/missing: no such folder",
    ),
    Case(
        "non-BERT encoder, adapters",
        (*DSC, "--encoder", "{gpt2}"),
        r"--encoder .*gpt2: naive puts its modules into the encoder's layers, but GPT2Model has "
        r"no encoder.layer list.*; pass a BERT-family encoder",
        data=_dsc(),
    ),
    Case(
        "non-BERT encoder, CTR",
        (*DSC, "--strategy", "ctr", "--encoder", "{gpt2}"),
        r"--encoder .*gpt2: ctr puts its modules into the encoder's layers",
        data=_dsc(),
    ),
    # DSC files
    Case(
        "DSC line without a tab",
        DSC,
        rf"{DOMAIN}_train.tsv:2: expected 'sentence<TAB>label' "
        r"with label -1 or 1, got 'no tab here'; fix or delete the line",
        FAILURE,
        _dsc(train=b"good book\t1\nno tab here\n"),
    ),
    Case(
        "DSC unknown label",
        DSC,
        rf"{DOMAIN}_train.tsv:1: expected .* got 'good book\\t0'",
        FAILURE,
        _dsc(train=b"good book\t0\n"),
    ),
    Case(
        "DSC empty file",
        DSC,
        rf"{DOMAIN}_train.tsv holds no review; expected a folder",
        FAILURE,
        _dsc(train=b""),
    ),
    Case(
        "DSC not UTF-8",
        DSC,
        rf"{DOMAIN}_test.tsv:2: not UTF-8 text \(byte 0xe9\); save the "
        r"file as UTF-8",
        FAILURE,
        _dsc(test="good\t1\ncaf\xe9 bad\t-1\n".encode("latin-1")),
    ),
    Case(
        "DSC one class in training",
        DSC,
        rf"DSC task '{DOMAIN}': every training example has "
        r"class '1'; a task needs at least two classes in training",
        FAILURE,
        _dsc(train=b"good book\t1\ngreat book\t1\n", test=b"nice book\t1\n"),
    ),
    Case(
        "DSC test class not in training",
        DSC,
        rf"DSC task '{DOMAIN}': its test split has class "
        r"'-1', which none of its training examples has",
        FAILURE,
        _dsc(train=b"good book\t1\ngreat book\t1\n"),
    ),
    # ASC files
    Case(
        "ASC truncated",
        ASC,
        r"Router/train.json:1:16: not valid JSON \(Expecting value\); "
        r"expected a JSON object .*copy it again",
        FAILURE,
        _asc(ROUTER, train=b'{"1": {"term": '),
    ),
    Case(
        "ASC a JSON list",
        ASC,
        r"Router/train.json: expected a JSON object .*, got a JSON list",
        FAILURE,
        _asc(ROUTER, train=b"[1, 2]"),
    ),
    Case(
        "ASC entry without polarity",
        ASC,
        r"Router/train.json: entry '1' lacks "
        r"term/sentence/polarity",
        FAILURE,
        _asc(ROUTER, train=b'{"1": {"term": "x"}}'),
    ),
    Case(
        "ASC unknown polarity",
        ASC,
        r"Router/train.json: entry '0' has polarity 'meh'",
        FAILURE,
        _asc(ROUTER, train=_asc_entries(["meh"])),
    ),
    # --config FILE.yaml
    Case(
        "config unknown key",
        ("run", "--config", "{data}"),
        CONFIG + r"unknown key\(s\) 'epoch'; avalanche-ctr run takes: benchmark, n-experiences",
        data=_config(b"epoch: 3\n"),
    ),
    Case(
        "config key of the other command",
        ("run", "--config", "{data}"),
        CONFIG + r"unknown key\(s\) 'seeds'; avalanche-ctr run takes: ",
        data=_config(b"seeds: 0,1\n"),
    ),
    Case(
        "config key twice",
        ("run", "--config", "{data}"),
        CONFIG + r"sets 'n-experiences' twice \('n_experiences' and 'n-experiences'\); keep one",
        data=_config(b"n_experiences: 2\nn-experiences: 3\n"),
    ),
    Case(
        "config not an integer",
        ("run", "--config", "{data}"),
        CONFIG + r"epochs: give an integer, got 'four'",
        data=_config(b"epochs: four\n"),
    ),
    Case(
        "config boolean for a value",
        ("run", "--config", "{data}"),
        CONFIG + r"lr: give a value as on the command line, got True",
        data=_config(b"lr: true\n"),
    ),
    Case(
        "config list",
        ("compare", "--config", "{data}"),
        CONFIG + r"seeds: give one value as on the command line \(a list as comma-separated text",
        data=_config(b"seeds: [0, 1]\n"),
    ),
    Case(
        "config on/off flag",
        ("run", "--config", "{data}"),
        CONFIG + r"csv: give true or false, got 'yes please'",
        data=_config(b"csv: yes please\n"),
    ),
    Case(
        "config choice",
        ("run", "--config", "{data}"),
        CONFIG + r"precision: 'fp8' is not one of fp32, bf16, fp16",
        data=_config(b"precision: fp8\n"),
    ),
    Case(
        "config value refused as the flag's",
        ("run", "--config", "{data}"),
        r"--epochs must be at least 1, got 0",
        data=_config(b"epochs: 0\n"),
    ),
    Case(
        "config not YAML",
        ("run", "--config", "{data}"),
        CONFIG + r"not valid YAML \(found character '\\t' .+ at line 2\); write one 'flag",
        data=_config(b"epochs: 1\n\tlr: 0.1\n"),
    ),
    Case(
        "config not a mapping",
        ("run", "--config", "{data}"),
        CONFIG + r"holds a list, not a mapping",
        data=_config(b"- epochs\n"),
    ),
    Case(
        "config not UTF-8",
        ("run", "--config", "{data}"),
        CONFIG + r"cannot read it \(not UTF-8 text\); give a YAML file",
        data=_config(b"benchmark: caf\xe9\n"),
    ),
    Case(
        "config missing",
        ("run", "--config", "{root}/c.yaml"),
        CONFIG + r"cannot read it \(No such file or directory\); give a YAML file",
    ),
    Case(
        "ASC empty", ASC, r"Router/train.json holds no example", FAILURE, _asc(ROUTER, train=b"{}")
    ),
    Case(
        "ASC not UTF-8",
        ASC,
        r"Router/train.json:1: not UTF-8 text \(byte 0xe9\)",
        FAILURE,
        _asc(ROUTER, train=_asc_entries(["+"]).replace(b'"+"', '"caf\xe9"'.encode("latin-1"))),
    ),
    Case(
        "ASC test class not in training",
        SEMEVAL,
        rf"ASC task '{LAPTOP}': its test split has "
        r"class 'neutral', which none of its training examples has",
        FAILURE,
        _asc(LAPTOP, train=_asc_entries(["positive", "negative"] * 3)),
    ),
    Case(
        "checkpoint of other settings",
        (*RESUMED, "--epochs", "2"),
        r"checkpoints/exssnet-seed0\.pt belongs to another run \(epochs=1 there, 2 here\); use "
        r"another --out to start a new run, or the same settings to resume it",
        FAILURE,
        _unrecorded_run,
    ),
]


def _write(path: Path, content: bytes) -> Path:
    """``content`` in ``path``; its folder."""
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path.parent


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """A tiny BERT encoder folder, the same model without its tokenizer and with a damaged
    one, and a tiny GPT-2 (not BERT-family), all readable offline."""
    from transformers import GPT2Config, GPT2Model

    root = tmp_path_factory.mktemp("user_errors")
    (root / "tokenizer").mkdir()
    tokenizer = make_tokenizer(root / "tokenizer")
    encoder = save_tiny_encoder(root / "enc", tokenizer)
    tiny_bert(tokenizer).save_pretrained(root / "bare")
    save_tiny_encoder(root / "damaged", tokenizer)
    (root / "damaged" / "tokenizer_config.json").write_text("{")
    config = GPT2Config(
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
        vocab_size=len(tokenizer.get_vocab()),
    )
    GPT2Model(config).save_pretrained(root / "gpt2")
    tokenizer.save_pretrained(root / "gpt2")
    return {"enc": encoder, "gpt2": root / "gpt2", **{n: root / n for n in ("bare", "damaged")}}


def _checkpoints(out: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in out.glob("checkpoints/*")}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_mistake_ends_in_one_error_line(case, paths, tmp_path, capsys):
    out = tmp_path / "out"
    values = {**paths, "root": tmp_path, "out": out}
    values["data"] = case.data(tmp_path) if case.data else tmp_path
    argv = [part.format(**values) for part in case.argv]
    before = _checkpoints(out)
    with pytest.raises(SystemExit) as exit_:
        main([*argv, *(() if "--out" in argv else ("--out", str(out))), "--no-progress"])
    exit_ = exit_.value
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(ERROR), err
    assert err.rstrip().endswith(lines[0])  # the last thing printed
    assert re.search(case.message, lines[0]), lines[0]
    assert exit_.code == case.status
    assert str(exit_) == lines[0]  # what in-process callers of main() see
    assert "Traceback" not in err
    assert _checkpoints(out) == before  # refused before training


def test_debug_shows_the_traceback_instead(paths, tmp_path):
    with pytest.raises(UsageError, match="--seeds names 0 more than once"):
        main(["compare", "--debug", "--seeds", "0,0", "--out", str(tmp_path)])
    with pytest.raises(UsageError, match="--threads 0"):
        main(["--debug", "run", "--threads", "0", "--out", str(tmp_path)])
