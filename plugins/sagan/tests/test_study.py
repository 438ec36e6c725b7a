"""The four CPU study recipes trained a few steps through `memcore study`, the figures it writes,
and `memcore viz attention` on the runs."""
import json
from pathlib import Path

import pytest
import torch

from memcore.cli import main
from memcore_sagan.attention import SelfAttention
from memcore_sagan.runs import load_networks

RECIPES = Path(__file__).parents[1] / "recipes"
STUDY = ["study32", "study32-noattn", "study32-noattn-g", "study32-noattn-d"]
ATTENTION = {"study32": ([8, 16], [8, 4]), "study32-noattn": ([], []),
             "study32-noattn-g": ([], [8, 4]), "study32-noattn-d": ([8, 16], [])}
TINY = ["--set", "train.batch_size=4", "--set", "data.limit=32", "--set", "train.progress=false",
        "--set", "train.log_every=1", "--set", "generator.width=8", "--set", "discriminator.width=8",
        "--set", "generator.z_dim=16"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    argv = ["study", *[str(RECIPES / f"{name}.toml") for name in STUDY], "--steps", "2",
            "--grid-steps", "1,2", "--out", str(out / "cmp"), *TINY]
    assert main(argv) == 0
    return out / "cmp"


def test_each_study_recipe_trains_with_its_attention_layers(study):
    for name, (g_at, d_at) in ATTENTION.items():
        run = study / "runs" / name
        assert (run / "checkpoints" / "step-0000002.pt").exists()
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [1, 2]
        assert all(torch.isfinite(torch.tensor(r["loss/D"])) for r in records)
        G, D, state = load_networks(run)
        assert [m.at for m in G.modules() if isinstance(m, SelfAttention)] == g_at
        assert [m.at for m in D.modules() if isinstance(m, SelfAttention)] == d_at
        assert sum(k.endswith("gamma") for k in state["models"]["G"]) == len(g_at)


def test_study_writes_figures_and_a_summary(study):
    for figure in ("d_loss.png", "samples.png"):
        assert (study / figure).stat().st_size > 1000
    assert not (study / "metric.png").exists()           # no [[metrics]] in the runs
    rows = (study / "summary.md").read_text().splitlines()[2:]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == STUDY


def test_study_plots_metric_curves_from_the_logs(study, tmp_path):
    # A copy of the runs with metric lines added, as a [[metrics]] entry would log them.
    import shutil
    copy = tmp_path / "cmp"
    shutil.copytree(study, copy)
    for i, name in enumerate(STUDY):
        with open(copy / "runs" / name / "log.jsonl", "a") as fh:
            for step in (1, 2):
                fh.write(json.dumps({"step": step, "metric/fid": 100.0 - 10 * step - i}) + "\n")
    # ... and a `memcore eval` result file in one run.
    (copy / "runs" / "study32" / "eval-step-0000002.json").write_text(json.dumps(
        [{"metric": "kid", "step": 2, "kid": 0.5, "extractor": "some-net"}]))
    assert main(["study", *[str(RECIPES / f"{n}.toml") for n in STUDY], "--steps", "2",
                 "--grid-steps", "2", "--out", str(copy), "--plot-only"]) == 0
    assert (copy / "metric.png").stat().st_size > 1000
    summary = (copy / "summary.md").read_text()
    assert "fid last / best | kid last / best" in summary
    assert "| 80.00 / 80.00 | 0.50 / 0.50 |" in summary     # study32 at step 2: fid 100-20, kid
    assert summary.count(" - |") == 3                         # the other runs have no kid


def test_study_refuses_an_unfinished_run(study, tmp_path, capsys):
    (tmp_path / "cmp" / "runs" / "study32").mkdir(parents=True)
    assert main(["study", str(RECIPES / "study32.toml"), "--steps", "2",
                 "--out", str(tmp_path / "cmp")]) != 0
    assert "unfinished or shorter run" in capsys.readouterr().err
    assert main(["study", str(RECIPES / "study32.toml"), "--steps", "2", "--grid-steps", "5",
                 "--out", str(study)]) != 0
    assert "--grid-steps '5': steps must lie in 1..2" in capsys.readouterr().err


def test_viz_attention_writes_a_png(study, tmp_path, capsys):
    out = tmp_path / "attention.png"
    assert main(["viz", "attention", str(study / "runs" / "study32"), "--n", "2",
                 "--points", "0.25,0.25", "0.5,0.75", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert "4 layer(s) at 2 point(s)" in capsys.readouterr().out
    assert main(["viz", "attention", str(study / "runs" / "study32-noattn"),
                 "--out", str(tmp_path / "none.png")]) != 0
    assert "no self-attention layer" in capsys.readouterr().err
    assert main(["viz", "attention", str(study / "runs" / "study32"), "--points", "2,1"]) != 0
    assert "fractions must lie in [0, 1)" in capsys.readouterr().err
