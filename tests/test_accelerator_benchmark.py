"""benchmarks/accelerator.py: its --smoke run on CPU writes every section, with numbers or a
recorded reason, into results.json and results.md (the GPU run is the same code at full size)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator.py"
# Listed here, not read from the script: a section dropped from the script fails the test.
SECTIONS = ["environment", *(f"recipe/{name}" for name in (
    "quickstart", "fastgan", "stylegan2", "sagan", "moca", "memorygan", "mfh", "fpainter")),
    "attention", "moca", "memorygan", "fpainter", "fidelity", "distributed"]


def run(out: Path, *args: str, timeout: int = 300) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--smoke", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (out / "results.md").is_file()
    return json.loads((out / "results.json").read_text())


def numbers(row: dict) -> list:
    return [v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "elapsed_s"]


def check_section(name: str, data: dict) -> None:
    assert data["status"] in ("ok", "skipped"), f"{name}: {data}"
    if data["status"] == "skipped":
        assert data["reason"], name
        return
    if name == "environment":
        assert {"device", "torch", "cuda", "git_commit"} <= set(data["info"])
        return
    assert data["rows"], name
    for row in data["rows"]:
        assert row["status"] != "error", f"{name}: {row}"
        if row["status"] == "skipped":
            assert row["reason"], f"{name}: {row}"
        else:
            assert numbers(row), f"{name}: a part without numbers: {row}"


@pytest.mark.slow
def test_smoke_run_has_every_section(tmp_path):
    results = run(tmp_path / "out")
    assert list(results["sections"]) == SECTIONS
    for name, data in results["sections"].items():
        check_section(name, data)
    sections = results["sections"]
    assert sections["distributed"]["status"] == "skipped"
    assert "fewer than 2 GPUs" in sections["distributed"]["reason"]
    for name in SECTIONS[1:9]:  # fp32 and bf16 (CPU autocast) of every recipe
        rows = {row["precision"]: row for row in sections[name]["rows"]}
        assert set(rows) == {"fp32", "bf16"}, name
        assert rows["fp32"]["img_per_s"] > 0 and rows["fp32"]["finite"], name
        assert rows["fp32"]["diverging"] is False, name
    fidelity = {row["extractor"]: row for row in sections["fidelity"]["rows"]}
    assert fidelity["fashion-classifier"]["status"] == "ok"  # shipped weights: always there
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "## Summary" in markdown and all(f"| {name} |" in markdown for name in SECTIONS)


def test_a_dead_worker_costs_one_section(tmp_path):
    """The default-suite subset: a section that kills its worker is recorded and the next
    sections still run; unselected ones are marked, the distributed one skipped on CPU."""
    chosen = ["environment", "recipe/quickstart", "fpainter", "distributed"]
    results = run(tmp_path / "out", "--only", ",".join(chosen), "--crash-in", "fpainter")
    sections = results["sections"]
    assert list(sections) == SECTIONS
    assert sections["fpainter"]["status"] == "error"
    assert "worker died" in sections["fpainter"]["error"]
    for name in ("environment", "recipe/quickstart", "distributed"):
        check_section(name, sections[name])
    assert sections["recipe/quickstart"]["status"] == "ok"
    assert "fewer than 2 GPUs" in sections["distributed"]["reason"]
    assert all(sections[name]["reason"] == "not selected (--only)"
               for name in SECTIONS if name not in chosen)
    assert "| fpainter | error |" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.distributed
def test_distributed_section_on_two_cpu_processes(tmp_path):
    """The torchrun path the GPU run takes with 2 GPUs, here on gloo."""
    results = run(tmp_path / "out", "--only", "distributed", "--force-dist")
    section = results["sections"]["distributed"]
    assert section["status"] == "ok", section
    for row in section["rows"]:
        assert row["status"] == "ok", row
        assert row["ranks"] == 2 and row["identical_across_ranks"] is True
        assert row["memories"] != "none" and row["img_per_s"] > 0


def test_divergence_rule():
    spec = importlib.util.spec_from_file_location("accelerator_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    assert not module.loss_summary([1.0] * 50 + [0.1] * 50)["diverging"]   # D winning
    assert not module.loss_summary([0.2] * 50 + [9.0] * 50)["diverging"]   # floor 1: up to 10
    assert module.loss_summary([0.2] * 50 + [11.0] * 50)["diverging"]
    assert module.loss_summary([-3.0] * 50 + [-40.0] * 50)["diverging"]    # magnitude
    assert module.loss_summary([1.0, 2.0, 3.0, 4.0])["window"] == 1
