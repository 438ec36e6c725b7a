"""FastGAN: shapes and slots per resolution, the random-margin hinge, reconstruction, a short run."""
from pathlib import Path

import pytest
import torch

import memcore
from memcore.cli import main
from memcore_fastgan.losses import FastganLoss, FastganLossOptions
from memcore_fastgan.networks import (Discriminator, DiscriminatorOptions, Generator,
                                      GeneratorOptions)

RECIPE = Path(__file__).parents[1] / "recipes" / "fastgan.toml"


def ctx(resolution, blocks=()):
    return memcore.BuildContext(resolution=resolution, channels=3, role="generator", blocks=blocks)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_and_slots(resolution):
    G = Generator(GeneratorOptions(z_dim=16, width=4, sle_span=4), ctx(resolution))
    D = Discriminator(DiscriminatorOptions(width=4, sle_span=4, decoder_width=8), ctx(resolution))
    z = torch.randn(2, 16)
    images = G(z)
    assert images.shape == (2, 3, resolution, resolution)
    assert sorted(G.slots.resolutions) == [2 ** i for i in range(2, resolution.bit_length())]
    D.eval()  # no decoding outside the D phase
    out = D(images)
    assert out["logits"].shape == (2, 50)


def test_random_margin_hinge_bounds():
    loss = FastganLoss(FastganLossOptions(reconstruction="none"))
    real = torch.full((4, 50), 0.5)
    fake = torch.full((4, 50), -0.5)

    class Ctx:
        phase, d_real, d_fake = "D", {"logits": real}, {"logits": fake}
    torch.manual_seed(0)
    value = loss(Ctx())
    # u ~ U(0.8, 1): relu(u - 0.5) + relu(u - 0.5) lies in [0.6, 1.0]
    assert 0.6 <= float(value) <= 1.0


def test_odd_resolution_names_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(RECIPE), "--set", "data.resolution=28", "--set", "train.steps=1",
                 "--set", "train.progress=false"])
    assert code != 0 and "data.resolution" in capsys.readouterr().err


def test_recipe_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = ["train.steps=3", "data.limit=64", "train.batch_size=8", "train.progress=false",
                 "train.checkpoint_every=3", "train.sample_every=3", "run.dir=runs/f"]
    assert main(["run", str(RECIPE)] + [a for o in overrides for a in ("--set", o)]) == 0
    state = torch.load(tmp_path / "runs/f/checkpoints/step-0000003.pt", weights_only=True)
    # the EMA generator averages BN statistics too (FastGAN's own EMA ignored them)
    bn = [k for k in state["models"]["G"] if k.endswith("running_mean")]
    assert bn and not all(torch.equal(state["models"]["G"][k], state["models"]["G_ema"][k]) for k in bn)
    log = (tmp_path / "runs/f/log.jsonl").read_text()
    assert "loss/D" in log


def tiny_folder(path, n=8, side=80):
    from PIL import Image
    path.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = torch.randint(0, 256, (side, side, 3), generator=gen, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(path / f"{i}.png")
    return path


def test_few_shot_folder_recipe_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tiny_folder(tmp_path / "photos")
    overrides = [f"data.path={folder}", "data.resolution=64", "generator.width=4",
                 "discriminator.width=4", "train.steps=2", "train.batch_size=4",
                 "train.progress=false", "run.dir=runs/folder"]
    recipe = RECIPE.with_name("fastgan-folder.toml")
    assert main(["run", str(recipe)] + [a for o in overrides for a in ("--set", o)]) == 0
    assert (tmp_path / "runs/folder/checkpoints/step-0000002.pt").exists()
