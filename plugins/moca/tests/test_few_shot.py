"""The few-shot experiment file: 100 images of one class, paired seeds, FID/KID against the whole
class, memorisation, and the feature-noise eval (its own `after` command) on a trained run."""
import json
import shlex
from pathlib import Path

import pytest

from memcore.cli import main
from memcore_experiments.sweep import plan
from memcore_kit.testing import train

PLUGIN = Path(__file__).parents[1]
EXPERIMENT = PLUGIN / "experiments" / "few-shot-mini.toml"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("plan"))
        return plan(EXPERIMENT, portable=True)


def test_variants_share_seeds_data_and_metrics(planned):
    exp, _, runs = planned
    assert [v.name for v in exp.variants] == ["fastgan", "sa-fastgan", "moca-fastgan"]
    assert exp.baseline == "fastgan" and len(exp.seeds) >= 6
    by_seed = {}
    for run in runs:
        data, metrics = run.resolved["data"], run.resolved["metrics"]
        assert (data["kind"], data["classes"], data["limit"], data["resolution"]) == \
            ("fashion-mnist", [9], 100, 32)
        assert [m["kind"] for m in metrics] == ["fid", "kid", "memorisation"]
        assert all(m["reference_split"] == "all" for m in metrics[:2])
        by_seed.setdefault(run.seed, set()).add(run.variant)
        blocks = run.resolved["generator"].get("blocks", [])
        assert bool(run.after) == bool(blocks)       # feature noise where a block takes it
    assert all(len(v) == 3 for v in by_seed.values()) and len(by_seed) == len(exp.seeds)


def test_a_moca_run_of_the_experiment_logs_its_metrics_and_takes_the_after_eval(planned,
                                                                                 tmp_path):
    _, _, runs = planned
    moca = next(r for r in runs if r.variant == "moca-fastgan")
    small = ("[{kind='fid', extractor='fashion-classifier', reference_split='all', num_real=64, "
             "num_samples=16}, {kind='memorisation', num_samples=16}]")
    run = train(PLUGIN / "recipes" / "moca-fastgan.toml", tmp_path, steps=3, overrides=(
        "data.classes=[9]", "data.limit=100", "generator.blocks.0.warmup=2", f"metrics={small}"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {x["metric"] for x in lines} == {"fid", "memorisation"}
    assert next(x for x in lines if x["metric"] == "fid")["protocol"]["reference"] == \
        "fashion-mnist split=all 32px 1ch"
    command = shlex.split(moca.after[0].replace("{run}", str(run)))
    command[command.index("--repeats") + 1] = "1"
    command[command.index("--num-samples") + 1] = "16"
    assert main(command) == 0
    results = json.loads(next(run.glob("eval-step-*.json")).read_text())
    assert {(r["metric"], r["variant"]) for r in results} == {
        (m, f"feature_noise={s}") for m in ("fid", "memorisation") for s in ("1", "0.7", "0.5",
                                                                           "0.3", "0")}
