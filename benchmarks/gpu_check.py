"""Everything the library needs checked on a GPU, in one command (issue 29).

A GPU is lent to this project for minutes at a time, so this one script does all of it
and writes what it found under ``--out`` (``gpu_check.json`` and ``gpu_check.md``):

1. **machine**: torch, CUDA, the card and its memory, bf16 support, and that the
   project's own dependencies import (avalanche, transformers, the packaged encoder);
2. **cuda tests**: the test suite's CUDA tests (those with ``cuda`` in their name);
3. **ctr step**: CTR's and its ablation (c)'s training step at tasks 1, 10 and 19 on
   ASC-shaped mini-batches (batch 32 x 64 tokens of MiniLM, ``ctr_step_time.py``), and
   their ratio;
4. **eval throughput**: a trained supermask model against the dense model of the same
   shape (``eval_throughput.py``);
5. **exssnet step**: ExSSNeT's training iteration (mask phase, then weight phase) against
   SupSup's on ``permuted_fmnist``-shaped inputs, built by the command line's own
   registry (the inputs are random: a step's cost does not depend on the pixels);

3 to 5 in fp32 and in bf16 autocast (:class:`avalanche_ctr.precision.MixedPrecision`).
Each section is timed, and one that fails is recorded with its error; the others still
run. ``--device cpu --dry-run`` runs the same code at toy size in well under a minute
(``tests/test_gpu_check.py`` runs it).

Usage::

    python benchmarks/gpu_check.py --out gpu_check_out            # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --dry-run --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ctr_step_time  # noqa: E402
import eval_throughput  # noqa: E402
from avalanche.benchmarks import tensors_benchmark  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402

from avalanche_ctr.experiments.measure import IterationTimer  # noqa: E402
from avalanche_ctr.experiments.runner import Settings, build_strategy  # noqa: E402
from avalanche_ctr.experiments.strategies import get_strategy  # noqa: E402
from avalanche_ctr.precision import MixedPrecision  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_plugins(precision: str) -> list:
    return [] if precision == "fp32" else [MixedPrecision(precision)]


# ----------------------------------------------------------------------------- sections
def machine(device: torch.device, args) -> dict[str, Any]:
    """What the machine has; raises if ``device`` is not usable."""
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "device": str(device),
    }
    for name in ("avalanche", "transformers", "avalanche_ctr"):
        module = importlib.import_module(name)
        facts[name] = getattr(module, "__version__", "?")
    from avalanche_ctr.text_encoder import default_encoder_path

    facts["encoder"] = str(default_encoder_path())
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda, but torch sees no CUDA device")
        props = torch.cuda.get_device_properties(device)
        facts.update(
            card=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
            devices=torch.cuda.device_count(),
        )
    else:
        facts.update(card=platform.processor() or platform.machine(), threads=args.threads)
    return facts


def cuda_test_files() -> list[Path]:
    """The test files that define a test with ``cuda`` in its name."""
    pattern = re.compile(r"^def test_\w*cuda", re.MULTILINE)
    return sorted(p for p in (ROOT / "tests").rglob("test_*.py") if pattern.search(p.read_text()))


def cuda_tests(device: torch.device, args) -> dict[str, Any]:
    """The suite's CUDA tests (``-k cuda``); on a dry run only collected."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda"]
    if args.dry_run:
        command.append("--collect-only")
    command += [str(p) for p in cuda_test_files()]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else done.stderr.strip()[-300:]
    counts = {
        k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|selected)", summary)
    }
    if done.returncode not in (0, 5):  # 5: no test collected
        raise RuntimeError(f"CUDA tests failed: {summary}")
    return {"summary": summary, **counts}


def ctr_step(device: torch.device, args) -> dict[str, Any]:
    """CTR and (c) step times (s) at the timed tasks, and CTR / (c), per precision."""
    from avalanche_ctr.text_encoder import load_encoder

    size = args.size
    vocab = load_encoder(None).config.vocab_size
    stream = ctr_step_time.random_stream(
        size["tasks"], size["steps"] * size["batch"], size["length"], vocab, seed=0
    )
    options = argparse.Namespace(batch=size["batch"], seed=0)
    timed = set(size["timed"])
    results = {}
    for precision in PRECISIONS:
        kwargs = {"device": device, "plugins": precision_plugins(precision)}
        ctr = ctr_step_time.step_times(True, stream, timed, options, **kwargs)
        kwargs["plugins"] = precision_plugins(precision)
        ablation = ctr_step_time.step_times(False, stream, timed, options, **kwargs)
        results[precision] = {
            str(t): {"ctr_s": ctr[t], "c_s": ablation[t], "ratio": ctr[t] / ablation[t]}
            for t in sorted(timed)
        }
    return results


def throughput(device: torch.device, args) -> dict[str, Any]:
    """Evaluation samples/s of a 5-task supermask model and the dense model."""
    results = {}
    for precision in PRECISIONS:
        dtype = None if precision == "fp32" else torch.bfloat16
        for name, make in (("mlp", eval_throughput.MLP), ("cnn", eval_throughput.CNN)):
            net, dense = eval_throughput.measure(
                make,
                args.size["eval_batch"],
                args.size["repeats"],
                n=args.size["eval_samples"],
                device=device,
                autocast=dtype,
            )
            results[f"{precision}/{name}"] = {
                "supermask_per_s": net,
                "dense_per_s": dense,
                "ratio": net / dense,
            }
    return results


def exssnet_step(device: torch.device, args) -> dict[str, Any]:
    """Median training-iteration time (s) of ExSSNeT's two phases and SupSup's, on the
    second of two ``permuted_fmnist``-shaped tasks (after KKT chose a start)."""
    size = args.size
    generator = torch.Generator().manual_seed(0)
    n = size["batch_fmnist"] * size["steps"]
    tasks = [
        (
            torch.rand(n, 1, 28, 28, generator=generator),
            torch.randint(0, 10, (n,), generator=generator),
        )
        for _ in range(2)
    ]
    stream = tensors_benchmark(train_tensors=tasks, test_tensors=tasks[:1], task_labels=[0, 1])
    results = {}
    for precision in PRECISIONS:
        for name in ("exssnet", "supsup"):
            settings = Settings(
                benchmark="permuted_fmnist",
                n_experiences=2,
                epochs=2,
                batch_size=size["batch_fmnist"],
                device=str(device),
            )
            timer = IterationTimer()
            torch.manual_seed(0)
            strategy = build_strategy(
                settings,
                get_strategy(name),
                plugins=[*precision_plugins(precision), timer],
                evaluator=EvaluationPlugin(loggers=[]),
            )
            for experience in stream.train_stream:
                strategy.train(experience)
            times = timer.times[-1]
            half = len(times) // 2
            if name == "exssnet":  # one mask epoch, then one weight epoch
                phases = {"mask_s": times[1:half], "weight_s": times[half + 1 :]}
            else:
                phases = {"step_s": times[1:]}
            results[f"{precision}/{name}"] = {k: statistics.median(v) for k, v in phases.items()}
    return results


SECTIONS: dict[str, Callable[[torch.device, Any], dict[str, Any]]] = {
    "machine": machine,
    "cuda_tests": cuda_tests,
    "ctr_step": ctr_step,
    "eval_throughput": throughput,
    "exssnet_step": exssnet_step,
}

SIZES = {
    "full": {
        "tasks": 19,
        "timed": (1, 10, 19),
        "steps": 6,
        "batch": 32,
        "length": 64,
        "eval_batch": 1024,
        "eval_samples": 65536,
        "repeats": 10,
        "batch_fmnist": 128,
    },
    "dry": {
        "tasks": 2,
        "timed": (1, 2),
        "steps": 3,
        "batch": 2,
        "length": 8,
        "eval_batch": 64,
        "eval_samples": 128,
        "repeats": 1,
        "batch_fmnist": 16,
    },
}


# ----------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    lines = [f"# gpu_check, {report['date']}", ""]
    facts = report["sections"]["machine"].get("result", {})
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    for name, section in report["sections"].items():
        lines += ["", f"## {name} ({section['seconds']:.1f} s)", ""]
        if "error" in section:
            lines.append(f"FAILED: {section['error']}")
            continue
        if name == "machine":
            lines.append("see above")
            continue
        rows = _rows(section["result"])
        if rows:
            keys = list(dict.fromkeys(k for _, values in rows for k in values))
            lines.append("| | " + " | ".join(keys) + " |")
            lines.append("|---|" + "---:|" * len(keys))
            for label, values in rows:
                cells = [
                    f"{values[k]:.4g}"
                    if isinstance(values.get(k), float)
                    else str(values.get(k, "-"))
                    for k in keys
                ]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _rows(result: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    if all(not isinstance(v, dict) for v in result.values()):
        return [(prefix or "result", result)]
    rows = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows += _rows(value, f"{prefix}/{key}" if prefix else key)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes, same code paths")
    parser.add_argument("--out", default="gpu_check_out", help="folder for the JSON and markdown")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (--device cpu)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    args = parser.parse_args(argv)
    args.size = SIZES["dry" if args.dry_run else "full"]
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown --sections {unknown}; use some of {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dry_run": args.dry_run,
        "sections": {},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in ["machine", *[s for s in sections if s != "machine"]]:
        start = time.perf_counter()
        entry: dict[str, Any] = {}
        try:
            entry["result"] = SECTIONS[name](device, args)
            sync(device)
        except Exception as error:  # recorded; the other sections still run
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["traceback"] = traceback.format_exc()
            failed = True
        entry["seconds"] = time.perf_counter() - start
        report["sections"][name] = entry
        print(
            f"{name}: {'FAILED ' + entry['error'] if 'error' in entry else 'ok'} "
            f"({entry['seconds']:.1f} s)",
            flush=True,
        )
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
        if name == "machine" and failed:
            break
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
