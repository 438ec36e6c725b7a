"""Every experiment file a first-party plugin ships validates (`memcore sweep --dry-run`): the
CPU miniatures against this machine's data, the paper-scale ones with --portable (their datasets
and weights are not here)."""
from pathlib import Path

import pytest

from memcore.cli import main
from memcore.sweep import load_experiment, plan

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(ROOT.glob("plugins/*/experiments/*.toml"))
PLUGINS = ("memorygan", "moca", "sagan", "mfh", "fpainter")


def is_miniature(path: Path) -> bool:
    return path.stem.endswith("-mini")


def test_each_paper_plugin_ships_a_miniature_and_a_paper_scale_experiment():
    for plugin in PLUGINS:
        found = [p for p in EXPERIMENTS if p.parts[-3] == plugin]
        assert any(map(is_miniature, found)), f"{plugin}: no CPU miniature (*-mini.toml)"
        assert not all(map(is_miniature, found)), f"{plugin}: no paper-scale experiment"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_experiment_file_validates(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)          # runs/ of the dry-run plan: nothing is written
    argv = ["sweep", str(path), "--dry-run"] + ([] if is_miniature(path) else ["--portable"])
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    exp = load_experiment(path)
    assert f"= {len(exp.variants) * len(exp.seeds)} runs" in captured.out
    assert len(exp.seeds) >= 3, "a verdict needs at least 3 seeds"
    assert not (tmp_path / "runs").exists()


def test_mfh_no_diversity_variant_zeroes_the_diversity_loss(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # the override indexes losses: check what it hits
    for path in ROOT.glob("plugins/mfh/experiments/*.toml"):
        runs = plan(path, portable=True)[2]
        for run in runs:
            diversity = [loss for loss in run.resolved["losses"] if loss["kind"] == "mfh-diversity"]
            assert len(diversity) == 1
            assert (diversity[0]["weight"] == 0.0) == (run.variant == "no-diversity")
