"""The core's side of metrics: preflight before anything is written, periodic evaluation, the
best checkpoint, metrics.jsonl, the report, and `memcore eval` — with a local test metric."""
import json

import pytest
import torch

from helpers import run_cli, tiny_recipe, write_recipe

METRIC_PLUGIN = '''
import memcore


@memcore.config
class MeanOptions(memcore.MetricOptions):
    fail_preflight: bool = memcore.option(False, help="test switch")


class MeanBrightness(memcore.Metric):
    """Distance of the generated mean pixel from the real one (lower is better)."""
    key = "brightness_gap"

    def preflight(self):
        if self.options.fail_preflight:
            raise memcore.MemcoreError("metrics[0]: weights file /nowhere/w.pth is missing; "
                                       "pass its path with metrics[0].weights")

    def compute(self, session):
        fake = torch.cat(list(session.generate(self.options.num_samples))).float().mean()
        real = session.real(self.options.num_samples).float().mean()
        return {"brightness_gap": float((fake - real).abs()), "extractor": "pixels",
                "samples": str(self.options.num_samples)}


import torch


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("metric", "brightness", MeanBrightness, MeanOptions, help="test only")
'''


def _recipe(tmp_path, **metric):
    (tmp_path / "metricplugin.py").write_text(METRIC_PLUGIN)
    recipe = tiny_recipe()
    recipe["train"]["steps"] = 6
    recipe["plugins"] = {"local": [str(tmp_path / "metricplugin.py")]}
    recipe["metrics"] = [{"kind": "brightness", "every": 2, "num_samples": 16, **metric}]
    return write_recipe(tmp_path / "m.toml", recipe)


@pytest.mark.usefixtures("trusted_tmp_path")
def test_preflight_fails_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("run", _recipe(tmp_path, fail_preflight=True)) == 2
    assert "weights file /nowhere/w.pth is missing" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.usefixtures("trusted_tmp_path")
def test_metrics_logged_best_kept_and_eval(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("run", _recipe(tmp_path)) == 0
    run = tmp_path / "runs" / "0001-m"
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert records[0]["protocol"] == {"extractor": "pixels", "samples": "16"}
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert any("metric/brightness_gap@pixels" in r for r in log)
    best_step = min(records, key=lambda r: r["values"]["brightness_gap"])["step"]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["step"] == best_step and best["best"]["key"] == "brightness_gap"
    report = (run / "report.md").read_text()
    assert "brightness_gap" in report and "extractor=pixels" in report
    assert (run / "metric-brightness_gap@pixels.png").exists()
    capsys.readouterr()
    assert run_cli("eval", run, "--num-samples", "8") == 0
    result = json.loads((run / "eval-step-0000006.json").read_text())
    assert result[0]["metric"] == "brightness" and result[0]["samples"] == "8"


def test_best_metric_can_name_an_extractor():
    from types import SimpleNamespace
    from memcore.trainer import Trainer
    fid = SimpleNamespace(key="fid", higher_is_better=False)
    t = SimpleNamespace(recipe=SimpleNamespace(train=SimpleNamespace(best_metric="fid@b")),
                        best={}, step=5)
    results = [({"fid": 1.0}, {"extractor": "a"}, fid), ({"fid": 9.0}, {"extractor": "b"}, fid)]
    Trainer._track_best(t, results)
    assert t.best == {"key": "fid@b", "value": 9.0, "step": 5}
    t.recipe.train.best_metric, t.best = None, {}
    Trainer._track_best(t, results)  # default: the first metric's key, from the first metric
    assert t.best["value"] == 1.0


def test_eval_metric_with_extractor_syntax():
    from memcore.cli import _metric_table
    assert _metric_table("fid@fashion-classifier") == {"kind": "fid", "extractor": "fashion-classifier"}
    assert _metric_table("kid") == {"kind": "kid"}


VARIANT_PLUGIN = METRIC_PLUGIN + '''

import contextlib


@memcore.hookimpl
def memcore_eval_options(parser):
    parser.add_argument("--darken", help="test only: comma-separated output offsets")


@memcore.hookimpl
def memcore_eval_variants(args, run):
    if not args.darken:
        return None

    def offset(value):
        @contextlib.contextmanager
        def shifted(repeat):
            handle = run.G.register_forward_hook(lambda m, i, out: out - value)
            try:
                yield
            finally:
                handle.remove()
        return shifted
    return [(f"darken={v}", offset(float(v))) for v in args.darken.split(",")]
'''


@pytest.mark.usefixtures("trusted_tmp_path")
def test_eval_variants_and_repeats_from_a_plugin(tmp_path, monkeypatch, isolated_registry):
    """memcore_eval_options / memcore_eval_variants: a plugin evaluates a run several ways."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "variantplugin.py").write_text(VARIANT_PLUGIN)
    recipe = tiny_recipe()
    recipe["plugins"] = {"local": [str(tmp_path / "variantplugin.py")]}
    recipe["metrics"] = [{"kind": "brightness", "num_samples": 8}]
    assert run_cli("run", write_recipe(tmp_path / "v.toml", recipe)) == 0
    run = tmp_path / "runs" / "0001-v"
    assert run_cli("--plugins-dir", tmp_path, "eval", run, "--darken", "0,1", "--repeats", "2") == 0
    results = json.loads((run / "eval-step-0000004.json").read_text())
    assert [r["variant"] for r in results] == ["darken=0", "darken=1"]
    assert len(results[0]["brightness_gap_repeats"]) == 2
    assert results[1]["brightness_gap"] > results[0]["brightness_gap"]
