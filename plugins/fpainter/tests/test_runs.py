"""Few-step runs of every recipe kind, the two-stage init_from + freeze recipe, the viz command."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from memcore.cli import main

RECIPES = Path(__file__).parents[1] / "recipes"
TINY = ["--set", "train.steps=3", "--set", "data.limit=64", "--set", "train.batch_size=8",
        "--set", "train.progress=false", "--set", "train.checkpoint_every=3",
        "--set", "train.sample_every=3", "--set", "train.grid_size=8", "--set", "metrics=[]",
        "--set", "generator.z_dim=16", "--set", "generator.steps=8", "--set", "generator.hidden=32",
        "--set", "generator.input_dim=16", "--set", "discriminator.width=8"]
TINY_UNET = ["--set", "generator.unet_width=8", "--set", "generator.unet_groups=4"]


def last_state(run_dir: Path) -> dict:
    path = sorted(run_dir.glob("checkpoints/step-*.pt"))[-1]
    return torch.load(path, weights_only=True)


def painter_of(state, role):
    return {k: v for k, v in state["models"][role].items() if k.startswith("painter.")}


@pytest.fixture
def stage1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # ema.start = 0: the EMA painter differs from the live one, so stage 2's choice is visible
    assert main(["run", str(RECIPES / "fpa-fashion.toml"), *TINY, "--set", "ema.start=0"]) == 0
    return tmp_path / "runs" / "0001-fpa-fashion"


def test_stage1_trains_and_viz_writes_png_and_gif(stage1, capsys):
    state = last_state(stage1)
    assert state["step"] == 3 and (stage1 / "samples" / "latest.png").exists()
    out = stage1 / "fig.png"
    assert main(["viz", "painting", str(stage1), "--n", "2", "--steps", "1,4,8", "--gif",
                 "--scale", "1", "--out", str(out)]) == 0
    width, height = Image.open(out).size
    assert (width, height) == (2 + 3 * 30, 2 + 4 * 30)          # 3 steps x (2 samples x 2 rows)
    assert Image.open(out.with_suffix(".gif")).n_frames == 8
    outside = stage1.parent / "outside.png"
    outside.write_bytes(b"not memcore's")
    (stage1 / "painting-seed0.png").symlink_to(outside)  # planted: replaced, never followed
    assert main(["viz", "painting", str(stage1), "--n", "1", "--steps", "8", "--scale", "1"]) == 0
    assert outside.read_bytes() == b"not memcore's"
    assert not (stage1 / "painting-seed0.png").is_symlink()
    for bad in (stage1, stage1 / "fig.txt"):  # a folder, another format: refused up front
        assert main(["viz", "painting", str(stage1), "--out", str(bad)]) == 2
        assert "--out" in capsys.readouterr().err and not (stage1 / "fig.txt").exists()
    assert main(["viz", "painting", str(stage1), "--steps", "9"]) != 0
    assert "1..8" in capsys.readouterr().err


def test_stage2_loads_stage1_and_leaves_the_painter_unchanged(stage1, tmp_path, capsys):
    assert main(["run", str(RECIPES / "fpa-unet-fashion.toml"), *TINY, *TINY_UNET,
                 "--set", f"train.init_from={stage1}"]) == 0
    run2 = tmp_path / "runs" / "0002-fpa-unet-fashion"
    assert "init_from: G:" in capsys.readouterr().out + (run2 / "report.md").read_text()
    before, after = last_state(stage1), last_state(run2)
    stage1_painter = painter_of(before, "G_ema")                 # G takes the EMA painter at step 0
    live = painter_of(before, "G")
    assert not all(torch.equal(live[k], stage1_painter[k]) for k in live)
    for role in ("G", "G_ema"):
        got = painter_of(after, role)
        assert got.keys() == stage1_painter.keys()
        assert all(torch.equal(got[k], stage1_painter[k]) for k in got)
    assert any(k.startswith("unet.") for k in after["models"]["G"])
    assert main(["viz", "painting", str(run2), "--n", "1", "--steps", "8", "--scale", "1",
                 "--out", str(tmp_path / "u.png")]) == 0
    assert Image.open(tmp_path / "u.png").size == (2 + 2 * 30, 2 + 2 * 30)   # canvas | U-Net


def test_end_to_end_recipe_trains_the_painter_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(RECIPES / "fpa-unet-e2e-fashion.toml"), *TINY, *TINY_UNET]) == 0
    log = (tmp_path / "runs" / "0001-fpa-unet-e2e-fashion" / "log.jsonl").read_text()
    assert "PreUNetHinge" in log


@pytest.mark.parametrize("rule", ["hebbian", "oja"])
def test_learning_rule_ablations_train(rule, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = ["--set", f"generator.rule={rule}", "--set", "generator.value_norm=true",
             "--set", "generator.input_generator=v1", "--set", "train.steps=2"]
    assert main(["run", str(RECIPES / "fpa-fashion.toml"), *TINY, *extra]) == 0


def test_lightgan_recipe_trains_with_all_its_terms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = ["--set", "train.steps=2", "--set", "generator.steps=4"]
    assert main(["run", str(RECIPES / "fpa-fashion-lightgan.toml"), *TINY, *extra]) == 0
    log = (tmp_path / "runs" / "0001-fpa-fashion-lightgan" / "log.jsonl").read_text()
    assert "LightGANAux" in log and "lightgan_recon" in log
    # the code's schedule: the penalty of step 0 is part of the D pass, no separate "Dreg" pass
    assert "loss/D/LightGANPenalty" in log and "Dreg" not in log


def test_pre_unet_loss_without_a_unet_names_its_list_entry(capsys):
    code = main(["validate", str(RECIPES / "fpa-fashion.toml"), "--set",
                 'losses=[{kind="hinge"}, {kind="fpa-pre-unet"}]'])
    err = capsys.readouterr().err
    assert code == 2 and "\n  losses[1]: 'fpa-pre-unet' needs generator.kind" in err, err
