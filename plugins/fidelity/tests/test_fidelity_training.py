"""Metrics inside a training run through the core, and `memcore eval` on the finished run."""
import json
from pathlib import Path

import tomli_w

import memcore
import memcore_kit.testing
from memcore.cli import main
from memcore_fidelity.extractors import INCEPTION_FILE

RECIPE = Path(__file__).parents[1] / "recipes" / "quickstart-fid.toml"
FAST = ["--set", "train.batch_size=8", "--set", "data.limit=64", "--set", "train.progress=false"]


def _metrics():
    common = {"extractor": "fashion-classifier", "every": 2, "num_samples": 32}
    return [{"kind": "fid", "reference_split": "test", "num_real": 64, **common},
            {"kind": "isc", **common},
            {"kind": "kid", "kid_subset_size": 16, "kid_subsets": 10, **common}]


def test_metrics_during_training_and_eval(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text(tomli_w.dumps(memcore_kit.testing.tiny_recipe(metrics=_metrics())))
    assert main(["run", "r.toml", "--set", "train.steps=4", *FAST]) == 0
    run = next((tmp_path / "runs").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["metric"]) for r in records] == \
        [(2, "fid"), (2, "isc"), (2, "kid"), (4, "fid"), (4, "isc"), (4, "kid")]
    fid = records[0]
    assert set(fid["values"]) == {"fid"} and fid["values"]["fid"] > 0
    assert fid["protocol"]["extractor"] == "fashion-classifier"
    assert fid["protocol"]["reference"] == "fashion-mnist split=test 28px 1ch"
    assert (fid["protocol"]["fake_samples"], fid["protocol"]["real_samples"]) == ("32", "64")
    assert {"weights_sha256", "resize", "torch_fidelity", "torch"} <= set(fid["protocol"])
    # the real KID reference is the run's own training data, limited as the recipe says
    assert records[2]["protocol"]["reference"] == "fashion-mnist split=train 28px 1ch"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("metric/fid@fashion-classifier" in r for r in log)
    assert (run / "checkpoints" / "best.pt").exists()
    assert "fashion-classifier" in (run / "report.md").read_text()

    capsys.readouterr()
    assert main(["eval", str(run), "--num-samples", "24"]) == 0
    evaluated = json.loads(next(run.glob("eval-step-*.json")).read_text())
    assert [e["metric"] for e in evaluated] == ["fid", "isc", "kid"]
    assert evaluated[0]["fake_samples"] == "24" and evaluated[0]["fid"] > 0

    # --metrics resets the options: the standard Inception extractor, whose weights are absent
    assert main(["eval", str(run), "--metrics", "fid,kid", "--num-samples", "16"]) != 0
    assert INCEPTION_FILE in capsys.readouterr().err


def test_quickstart_fid_recipe_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = ["--set", "metrics.0.num_samples=32", "--set", "metrics.1.num_samples=32",
             "--set", "metrics.2.num_samples=8", "--set", "metrics.2.kid_subset_size=8"]
    assert main(["run", str(RECIPE), "--set", "train.steps=2", *FAST, *small]) == 0
    run = next((tmp_path / "runs").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["metric"], r["protocol"]["extractor"]) for r in records] == \
        [("fid", "fashion-classifier"), ("isc", "fashion-classifier"), ("kid", "efficientnet-lite0")]
