"""`memcore sample` on a memoryGAN run: G is rebuilt attached to D's memory by memcore.load_run."""
from pathlib import Path

from memcore.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fashion-memorygan.toml"


def test_sample_command_samples_from_d_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = ["train.steps=2", "data.limit=64", "train.batch_size=8", "train.progress=false",
                 "run.dir=runs/s", "discriminator.slots=64", "discriminator.top_k=8"]
    assert main(["run", str(RECIPE)] + [a for o in overrides for a in ("--set", o)]) == 0
    assert main(["sample", "runs/s", "--n", "8", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 0
