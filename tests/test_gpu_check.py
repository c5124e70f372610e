"""``benchmarks/gpu_check.py --device cpu --dry-run`` runs every section of the GPU check
at toy size and writes its JSON and markdown; without a GPU, ``--device cuda`` stops at
the machine check with the reason."""

import json

import pytest
import torch
from _helpers import load_benchmark


@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


def test_dry_run_runs_every_section(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == list(gpu_check.SECTIONS)
    assert not [name for name, entry in sections.items() if "error" in entry]
    assert "collected" in sections["cuda_tests"]["result"]["summary"]
    for precision in ("fp32", "bf16"):
        steps = sections["ctr_step"]["result"][precision]
        assert set(steps) == {"1", "2"}
        assert all(s["ctr_s"] > 0 and s["c_s"] > 0 for s in steps.values())
        assert sections["exssnet_step"]["result"][f"{precision}/exssnet"]["weight_s"] > 0
        assert sections["eval_throughput"]["result"][f"{precision}/cnn"]["dense_per_s"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "## ctr_step" in table and "| bf16/2 |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_a_gpu_the_machine_check_stops_it(gpu_check, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert list(sections) == ["machine"]
    assert "torch sees no CUDA device" in sections["machine"]["error"]
