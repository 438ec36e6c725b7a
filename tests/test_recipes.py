"""Malformed recipes: exit status 2, the TOML key path in the message, no traceback, no run dir."""
import copy
import subprocess
import sys

import pytest

from helpers import ROOT, run_cli, tiny_recipe, with_block_plugin, write_recipe


def _set(recipe, path, value):
    node = recipe
    *parents, last = path
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return recipe


DELETE = object()

# (id, key path to change, new value, substrings expected in the error)
CASES = [
    ("float-for-int", ("train", "steps"), 3.7, ["train.steps = 3.7", "integer"]),
    ("string-for-int", ("train", "steps"), "100", ["train.steps", "integer"]),
    ("string-for-bool", ("train", "progress"), "false", ["train.progress", "true or false"]),
    ("zero-batch", ("train", "batch_size"), 0, ["train.batch_size = 0", "> 0"]),
    ("typo-key", ("train", "step"), 10, ["train.step", "did you mean 'steps'"]),
    ("unknown-generator", ("generator", "kind"), "dcgam", ["generator", "did you mean 'dcgan'"]),
    ("negative-z", ("generator", "z_dim"), -1, ["generator.z_dim = -1", "> 0"]),
    ("bool-for-int", ("generator", "z_dim"), True, ["generator.z_dim", "integer"]),
    ("int-for-bool", ("discriminator", "spectral_norm"), 1, ["discriminator.spectral_norm"]),
    ("empty-losses", ("losses",), [], ["losses", "at least one loss"]),
    ("unknown-loss", ("losses",), [{"kind": "hingee"}], ["losses[0]", "did you mean 'hinge'"]),
    ("bad-loss-weight", ("losses",), [{"kind": "hinge"}, {"kind": "r1", "weight": "x"}],
     ["losses[1].weight", "number"]),
    ("unknown-dataset", ("data", "kind"), "fashion", ["data", "did you mean 'fashion-mnist'"]),
    ("negative-limit", ("data", "limit"), -5, ["data.limit = -5"]),
    ("bad-split", ("data", "split"), "validation", ["data.split", "'train'"]),
    ("short-betas", ("optim",), {"G": {"betas": [0.5]}}, ["optim.G.betas", "2 values"]),
    ("string-lr", ("optim",), {"D": {"lr": "fast"}}, ["optim.D.lr", "number"]),
    ("bad-precision", ("train", "precision"), "fp8", ["train.precision", "'bf16'"]),
    ("ema-out-of-range", ("ema",), {"decay": 1.5}, ["ema.decay = 1.5", "[0.0, 1.0)"]),
    ("augment-policy", ("augment",), {"kind": "diffaugment", "policy": ["colour"]},
     ["augment.policy[0]", "did you mean 'color'"]),
    ("unknown-block", ("generator", "blocks"), [{"kind": "nope", "at": 16}],
     ["generator.blocks[0]", "unknown block 'nope'"]),
    ("missing-kind", ("generator",), {"z_dim": 8}, ["generator", "missing key 'kind'"]),
    ("missing-section", ("discriminator",), DELETE, ["discriminator", "required key missing"]),
    ("unknown-section", ("trian",), {"steps": 1}, ["trian", "did you mean 'train'"]),
    ("micro-batches", ("train", "micro_batches"), 3, ["train.micro_batches = 3", "divide"]),
    ("table-for-int", ("train", "seed"), {"a": 1}, ["train.seed", "integer"]),
]


def _check(capsys, tmp_path, code, expected):
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"
    assert "Traceback" not in err + out
    assert not (tmp_path / "runs").exists(), "a run directory was created for an invalid recipe"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_recipe(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, path, value, expected = case
    recipe = _set(copy.deepcopy(tiny_recipe()), path, value)
    file = write_recipe(tmp_path / "bad.toml", recipe)
    _check(capsys, tmp_path, run_cli("run", file), expected)


def test_all_problems_reported_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["train"]["steps"] = 1.5
    recipe["generator"]["z_dim"] = "big"
    recipe["data"]["limit"] = 0
    file = write_recipe(tmp_path / "bad.toml", recipe)
    _check(capsys, tmp_path, run_cli("validate", file),
           ["train.steps", "generator.z_dim", "data.limit", "3 problem(s)"])


def test_set_override_errors_carry_key_paths(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    file = write_recipe(tmp_path / "ok.toml", tiny_recipe())
    _check(capsys, tmp_path, run_cli("run", file, "--set", "train.steps=abc"),
           ["train.steps = 'abc'", "integer"])
    _check(capsys, tmp_path, run_cli("run", file, "--set", "nonsense"), ["KEY=VALUE"])


def test_extends_missing_and_invalid_toml(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "child.toml").write_text('extends = "nowhere.toml"\n')
    _check(capsys, tmp_path, run_cli("run", tmp_path / "child.toml"), ["file not found"])
    (tmp_path / "broken.toml").write_text("[train\nsteps = 1\n")
    _check(capsys, tmp_path, run_cli("run", tmp_path / "broken.toml"), ["not valid TOML"])
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    _check(capsys, tmp_path, run_cli("run", tmp_path / "a.toml"), ["circular"])


@pytest.mark.usefixtures("trusted_tmp_path")
def test_block_at_missing_resolution(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = with_block_plugin(tmp_path, tiny_recipe(), at=16)  # 28 px offers 7, 14, 28
    file = write_recipe(tmp_path / "bad.toml", recipe)
    _check(capsys, tmp_path, run_cli("run", file),
           ["generator.blocks[0].at = 16", "7, 14, 28"])


def test_extends_and_overrides_merge(tmp_path, capsys):
    base = tiny_recipe()
    write_recipe(tmp_path / "base.toml", base)
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[train]\nsteps = 7\n')
    assert run_cli("validate", tmp_path / "child.toml", "--set", "generator.z_dim=9",
                   "--set", "losses.0.weight=2.0") == 0
    out = capsys.readouterr().out
    assert "steps = 7" in out and "z_dim = 9" in out and "weight = 2.0" in out
    assert "batch_size = 8" in out  # inherited


def test_real_cli_exit_status(tmp_path):
    recipe = tiny_recipe()
    recipe["train"]["steps"] = 3.7
    file = write_recipe(tmp_path / "bad.toml", recipe)
    proc = subprocess.run([sys.executable, "-m", "memcore", "run", str(file)], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train.steps = 3.7" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_shipped_recipes_validate(capsys):
    """--portable: the datasets, weights and earlier runs they name need not be on this machine
    (tests/test_validate_preflight.py validates those whose data is here in full)."""
    recipes = [ROOT / "recipes" / "quickstart.toml"] + sorted(ROOT.glob("plugins/*/recipes/*.toml"))
    for recipe in recipes:
        assert run_cli("validate", "--portable", recipe) == 0, (recipe, capsys.readouterr().err)
