"""A few-step training run of every recipe, the commands on a run, and bad input."""
import json
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch

from memcore.cli import main

RECIPES = Path(__file__).parents[1] / "recipes"
TINY = ["--set", "train.steps=3", "--set", "data.limit=64", "--set", "train.batch_size=8",
        "--set", "train.progress=false", "--set", "train.log_every=1",
        "--set", "train.checkpoint_every=3", "--set", "train.sample_every=3"]


def tiny_copy(name, tmp_path, **block):
    recipe = tomllib.loads((RECIPES / f"{name}.toml").read_text())
    if "extends" in recipe:  # the copy lives elsewhere: point at the base by absolute path
        recipe["extends"] = str((RECIPES / recipe["extends"]).resolve())
    for spec in recipe.get("generator", {}).get("blocks", []):
        if spec.get("paths", "both") != "sa":
            spec["warmup"] = 2  # the memory read runs on the last step
        spec.update(block)
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps(recipe))
    return path


def last_state(tmp_path, name):
    run = next((tmp_path / "runs").glob(f"*-{name}"))
    ckpt = sorted((run / "checkpoints").glob("step-*.pt"))[-1]
    return run, torch.load(ckpt, weights_only=True)


@pytest.mark.parametrize("name", ["sa-fastgan", "moca-fastgan", "moca-dcgan"])
def test_recipe_trains(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = {"prototypes": 16, "dim": 8} if name == "moca-dcgan" else {}
    assert main(["run", str(tiny_copy(name, tmp_path, **extra))] + TINY) == 0
    run, state = last_state(tmp_path, name)
    assert (run / "samples" / "latest.png").exists()
    G, G_ema = state["models"]["G"], state["models"]["G_ema"]
    memory = [k for k in G if ".memory." in k]
    if name == "sa-fastgan":
        assert not memory
        return
    prefix = next(k for k in memory if k.endswith("memory.prototypes"))[:-len("prototypes")]
    assert bool(G[prefix + "ready"])
    assert prefix + "key_encoder.weight" in G
    for k in memory:  # EMA G carries the memory verbatim
        assert torch.equal(G[k], G_ema[k]), k
    lines = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if l.strip()]
    assert any(k.endswith("/routing_entropy") for line in lines for k in line)


def test_viz_on_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(tiny_copy("moca-fastgan", tmp_path))] + TINY) == 0
    run = next((tmp_path / "runs").glob("*-moca-fastgan"))
    assert main(["viz", "moca", str(run), "--n", "4", "--patches", "3", "--prototypes", "2"]) == 0
    summary = json.loads((run / "viz-moca" / "summary.json").read_text())
    assert len(summary["cell_usage"]) == 10 and sum(summary["cell_usage"]) == 4 * 16 * 16
    for png in ("clusters.png", "top3.png", "prototypes.png"):
        assert (run / "viz-moca" / png).stat().st_size > 0
    # a link planted in the run is replaced (a file) or refused (a folder), never written through
    outside = tmp_path / "outside.txt"
    outside.write_text("not memcore's")
    (run / "viz-moca" / "summary.json").unlink()
    (run / "viz-moca" / "summary.json").symlink_to(outside)
    assert main(["viz", "moca", str(run), "--n", "2", "--patches", "1", "--prototypes", "1"]) == 0
    assert outside.read_text() == "not memcore's"
    assert not (run / "viz-moca" / "summary.json").is_symlink()
    shutil.rmtree(run / "viz-moca")
    (run / "viz-moca").symlink_to(tmp_path, target_is_directory=True)
    before = sorted(tmp_path.iterdir())
    assert main(["viz", "moca", str(run), "--n", "2"]) == 2
    assert sorted(tmp_path.iterdir()) == before
    assert main(["viz", "moca", str(run), "--out", str(outside)]) == 2  # a file, not a folder


def test_bad_block_option_names_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tiny_copy("moca-fastgan", tmp_path, softmax="both")
    assert main(["run", str(path)] + TINY) == 2
    assert "generator.blocks[0].softmax" in capsys.readouterr().err


def test_feature_noise_evaluation(tmp_path, monkeypatch):
    """MoCA Table 5 through `memcore eval RUN --feature-noise` (the plugin's eval hooks)."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(tiny_copy("moca-fastgan", tmp_path))] + TINY) == 0
    run = next((tmp_path / "runs").glob("*-moca-fastgan"))
    assert main(["eval", str(run), "--metrics", "fid@fashion-classifier", "--num-samples", "24",
                 "--feature-noise", "1,0", "--repeats", "2"]) == 0
    results = json.loads(next(run.glob("eval-step-*.json")).read_text())
    assert [r["variant"] for r in results] == ["feature_noise=1", "feature_noise=0"]
    assert all(len(r["fid_repeats"]) == 2 and r["extractor"] == "fashion-classifier"
               for r in results)
    assert results[0]["fid"] != results[1]["fid"]  # the noise reaches the block


@pytest.mark.parametrize("levels", ["x", "nan", "-1", "1,inf", ","])
def test_feature_noise_levels_are_refused_when_parsed(levels, capsys):
    # argparse's refusal, before the run is read
    assert main(["eval", "no-such-run", "--feature-noise", levels]) == 2
    err = capsys.readouterr().err
    assert "argument --feature-noise" in err and repr(levels) in err


def test_few_shot_folder_recipe_trains(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(8):
        pixels = torch.randint(0, 256, (72, 72, 3), generator=gen, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(tmp_path / "photos" / f"{i}.png")
    overrides = [f"data.path={tmp_path / 'photos'}", "data.resolution=64", "generator.width=4",
                 "discriminator.width=4", "train.steps=3", "train.batch_size=4",
                 "train.progress=false", "run.dir=runs/folder", "generator.blocks[0].warmup=2",
                 "generator.blocks[0].prototypes=8"]
    recipe = RECIPES / "moca-fastgan-folder.toml"
    assert main(["run", str(recipe)] + [a for o in overrides for a in ("--set", o)]) == 0
    state = torch.load(tmp_path / "runs/folder/checkpoints/step-0000003.pt", weights_only=True)
    assert any(k.endswith("memory.prototypes") for k in state["models"]["G"])
