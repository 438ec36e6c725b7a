"""Every experiment file a first-party plugin ships validates (`memcore sweep --dry-run`): the
CPU miniatures against this machine's data, the paper-scale ones with --portable (their datasets
and weights are not here). And the [grid] table: its expansion into variants and its malformed
forms."""
from pathlib import Path

import pytest
import tomli_w

from memcore.cli import main
from memcore_experiments.sweep import load_experiment, plan
from memcore_kit.testing import tiny_recipe

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


# -- [grid]: the product of its lists as variants ---------------------------------------------
def _experiment(folder: Path, text: str) -> Path:
    recipe = tiny_recipe()
    recipe["data"]["limit"] = 64
    (folder / "tiny.toml").write_text(tomli_w.dumps(recipe))
    path = folder / "exp.toml"
    path.write_text('base = "tiny.toml"\nseeds = [0, 1]\n' + text)
    return path


GRID = '[grid]\n"optim.G.lr" = [0.0001, 2e-4]\n"train.batch_size" = [8, 16]\n'


@pytest.mark.parametrize("variants, prefixes", [
    ("", [""]),
    ('[[variants]]\nname = "a"\n[[variants]]\nname = "b"\noverrides = { "train.steps" = 3 }\n',
     ["a_", "b_"])])
def test_grid_expands_to_the_product_over_each_variant(tmp_path, monkeypatch, variants, prefixes):
    monkeypatch.chdir(tmp_path)
    exp, _, runs = plan(_experiment(tmp_path, GRID + variants))
    combos = [(lr, batch) for lr in (0.0001, 0.0002) for batch in (8, 16)]
    assert [v.name for v in exp.variants] == [f"{p}lr-{lr}_batch_size-{b}"
                                              for p in prefixes for lr, b in combos]
    assert len(runs) == len(prefixes) * 4 * 2                    # x 2 seeds
    for run in runs:
        lr, batch = next((lr, b) for lr, b in combos if f"lr-{lr}_batch_size-{b}" in run.variant)
        assert run.resolved["optim"]["G"]["lr"] == lr and run.resolved["train"]["batch_size"] == batch
        assert run.resolved["train"]["steps"] == (3 if run.variant.startswith("b_") else
                                                  tiny_recipe()["train"]["steps"])


def test_grid_keys_sharing_a_last_part_are_named_in_full(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(_experiment(tmp_path, '[grid]\n"optim.G.lr" = [1e-3]\n'
                                                '"optim.D.lr" = [2e-3]\n'))
    assert [v.name for v in exp.variants] == ["optim.G.lr-0.001_optim.D.lr-0.002"]


MALFORMED = {   # [grid] text -> what the message must hold
    "not a table": ('grid = 3\n', 'grid: expected a table of key paths'),
    "a number": ('[grid]\n"train.lr" = 3\n', 'grid."train.lr" = 3: expected a non-empty list'),
    "empty list": ('[grid]\n"train.batch_size" = []\n',
                   'grid."train.batch_size" = []: expected a non-empty list'),
    "a string": ('[grid]\n"train.batch_size" = "8"\n', 'grid."train.batch_size" = "8"'),
    "a table value": ('[grid]\ntrain = { batch_size = 8 }\n', 'grid."train.batch_size" = 8'),
    "unknown key": ('[grid]\n"train.batch_sise" = [8]\n',
                    'grid."train.batch_sise": train.batch_sise: unknown key'),
    "invalid value": ('[grid]\n"train.batch_size" = [8, 2.5]\n',
                      'grid."train.batch_size": train.batch_size = 2.5: expected an integer'),
    "missing list item": ('[grid]\n"generator.blocks.9.at" = [8]\n',
                          'grid."generator.blocks.9.at": generator.blocks.9 is not an existing'),
    "a key the sweep sets": ('[grid]\n"train.seed" = [1, 2]\n',
                             'grid."train.seed": set by the sweep'),
    "too many": ('[grid]\n"train.batch_size" = ' + str(list(range(1, 201))) + '\n'
                 '"train.d_steps" = ' + str(list(range(1, 101))) + '\n',
                 'grid: 20000 variants; expected at most 10000'),
    "two values, one name": ('[grid]\n"data.name" = ["a b", "a-b"]\n',
                             "another variant has this name"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_grids_exit_2_with_the_key_path(tmp_path, monkeypatch, capsys, case):
    text, expected = MALFORMED[case]
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(_experiment(tmp_path, text)), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    assert expected in err, err
