"""The attention study as experiment files for `memcore sweep`: each variant's recipe trains with
its attention layers, the files resolve to those recipes, and `memcore viz attention` on a run."""
from pathlib import Path

import pytest
import torch

from memcore.cli import main
from memcore_experiments.sweep import plan
from memcore_kit.testing import train
from memcore_sagan.attention import SelfAttention
from memcore_sagan.runs import load_networks

PLUGIN = Path(__file__).parents[1]
# variant -> (recipe, G attention sides, D attention sides)
STUDY = {"full": ("study32", [8, 16], [8, 4]), "none": ("study32-noattn", [], []),
         "none-in-G": ("study32-noattn-g", [], [8, 4]),
         "none-in-D": ("study32-noattn-d", [8, 16], [])}
TINY = ("generator.width=8", "discriminator.width=8", "generator.z_dim=16")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    return {variant: train(PLUGIN / "recipes" / f"{recipe}.toml", folder / variant, steps=2,
                           overrides=TINY)
            for variant, (recipe, _, _) in STUDY.items()}


def test_each_study_recipe_trains_with_its_attention_layers(runs):
    for variant, (_, g_at, d_at) in STUDY.items():
        G, D, state = load_networks(runs[variant])
        assert [m.at for m in G.modules() if isinstance(m, SelfAttention)] == g_at
        assert [m.at for m in D.modules() if isinstance(m, SelfAttention)] == d_at
        assert sum(k.endswith("gamma") for k in state["models"]["G"]) == len(g_at)
        assert all(torch.isfinite(p).all() for p in G.parameters())


@pytest.mark.parametrize("name, recipes", [("attention-mini", "study32"),
                                           ("attention-dogs64", "sagan-dogs64")])
def test_experiment_files_name_the_four_study_recipes(name, recipes, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exp, _, planned = plan(PLUGIN / "experiments" / f"{name}.toml", portable=True)
    assert [v.name for v in exp.variants] == list(STUDY)
    assert exp.baseline == "full" and len(exp.seeds) >= 3
    for v in exp.variants:
        suffix = STUDY[v.name][0].removeprefix("study32")
        assert Path(v.recipe).name == f"{recipes}{suffix}.toml"
    blocks = {r.variant: ([b["at"] for b in r.resolved["generator"].get("blocks", [])],
                          [b["at"] for b in r.resolved["discriminator"].get("blocks", [])])
              for r in planned}
    if name == "attention-mini":
        assert blocks == {v: (g, d) for v, (_, g, d) in STUDY.items()}


def test_viz_attention_writes_a_png(runs, tmp_path, capsys):
    out = tmp_path / "attention.png"
    assert main(["viz", "attention", str(runs["full"]), "--n", "2",
                 "--points", "0.25,0.25", "0.5,0.75", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert "4 layer(s) at 2 point(s)" in capsys.readouterr().out
    assert main(["viz", "attention", str(runs["none"]), "--out", str(tmp_path / "none.png")]) != 0
    assert "no self-attention layer" in capsys.readouterr().err
    assert main(["viz", "attention", str(runs["full"]), "--points", "2,1"]) != 0
    assert "fractions must lie in [0, 1)" in capsys.readouterr().err
    assert main(["viz", "attention", str(runs["full"]), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
