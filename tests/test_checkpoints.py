"""Checkpoints that do not fit, cannot be read or cannot be written: clean errors, nothing lost.

One tiny two-step run (module fixture) is copied into each test, so the tests train little.
"""
from __future__ import annotations

import shutil

import pytest
import torch

from helpers import run_cli, tiny_recipe, write_recipe
from memcore import MemcoreError, checkpoint

STEPS = dict(steps=2, checkpoint_every=2, log_every=1, sample_every=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-step run (width 16) to copy."""
    folder = tmp_path_factory.mktemp("trained")
    recipe = tiny_recipe(run={"dir": str(folder / "run")})
    recipe["train"].update(STEPS)
    assert run_cli("run", write_recipe(folder / "r.toml", recipe)) == 0
    return folder / "run"


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run."""
    return shutil.copytree(trained, tmp_path / "run")


def _last(run_dir):
    return checkpoint.latest(run_dir)


def _rewrite(path, **changes):
    """Save the checkpoint at ``path`` again with some entries replaced."""
    state = torch.load(path, weights_only=True)
    state.update(changes)
    torch.save(state, path)


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_resume_into_another_width_is_refused_by_name(run, capsys):
    before = _last(run).read_bytes()
    code = run_cli("run", "--resume", run, "--set", "generator.width=32", "--set", "train.steps=4")
    err = _err(capsys)
    assert code == 2, err
    assert "does not fit the networks of this recipe; nothing was loaded" in err
    assert "generator.width = 16 in the checkpoint, 32 here" in err
    # the first mismatched tensor, with both shapes
    assert "in the checkpoint" in err and "in the network" in err and "(" in err.split("G:")[1]
    assert _last(run).read_bytes() == before and _last(run).name == "step-0000002.pt"


def test_init_from_another_architecture_is_refused(run, tmp_path, capsys):
    recipe = tiny_recipe(run={"dir": str(tmp_path / "two")})
    recipe["discriminator"]["width"] = 24
    recipe["train"].update(STEPS, init_from=str(run))
    code = run_cli("run", write_recipe(tmp_path / "two.toml", recipe))
    err = _err(capsys)
    assert code == 2, err
    assert "train.init_from" in err and "(16, 1, 3, 3)" in err and not (tmp_path / "two").exists()
    # The trainer's own refusal (reached when nothing checked the recipe before building it):
    from memcore.recipe import recipe_from_dict
    from memcore.trainer import Trainer
    parsed, resolved = recipe_from_dict(recipe)
    with pytest.raises(MemcoreError) as info:
        Trainer(parsed, resolved, tmp_path / "two")
    message = str(info.value)
    assert "does not fit the networks of this recipe; nothing was loaded" in message
    assert "discriminator.width = 16 in the checkpoint, 24 here" in message
    assert "D: " in message and "in the checkpoint, (24," in message


def test_sample_builds_from_the_checkpoints_own_recipe_and_says_so(run, tmp_path, capsys):
    own = run / "recipe.resolved.toml"  # as if the checkpoint had been copied in from elsewhere
    own.write_text(own.read_text().replace("width = 16", "width = 32"))
    assert run_cli("sample", run, "--n", "4", "--out", tmp_path / "g.png") == 0
    err = _err(capsys)
    assert "built from the checkpoint's own recipe" in err and "generator.width" in err
    assert (tmp_path / "g.png").exists()


def test_tensors_that_do_not_fit_their_own_recipe_are_refused(run, tmp_path, capsys):
    ckpt = _last(run)
    state = torch.load(ckpt, weights_only=True)
    _rewrite(ckpt, recipe=state["recipe"].replace("z_dim = 16", "z_dim = 24"))
    assert run_cli("sample", run, "--out", tmp_path / "g.png") == 2
    err = _err(capsys)
    assert "does not fit" in err and "nothing was loaded" in err and not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_unreadable_embedded_recipe_is_a_clean_error(run, tmp_path, capsys, command):
    _rewrite(_last(run), recipe="[generator\nkind = ")
    assert run_cli(command, run, *(["--out", tmp_path / "g.png"] if command == "sample" else [])) == 2
    err = _err(capsys)
    assert "embedded recipe cannot be read" in err and "TOMLDecodeError" in err
    assert str(_last(run)) in err


def test_resume_with_other_trainable_parameters_is_refused(run, capsys):
    assert run_cli("run", "--resume", run, "--set", 'train.freeze=["G.stem"]',
                   "--set", "train.steps=3") == 2
    err = _err(capsys)
    assert "the G optimizer state does not fit" in err and "train.freeze" in err


def test_damaged_checkpoints_are_clean_errors(run, tmp_path, capsys):
    ckpt = _last(run)
    state = torch.load(ckpt, weights_only=True)
    del state["data"]
    torch.save(state, ckpt)
    assert run_cli("run", "--resume", run, "--set", "train.steps=3") == 2
    assert "cannot be continued from, it is damaged (KeyError: 'data')" in _err(capsys)
    state["models"] = ["not", "a", "dict"]
    torch.save(state, ckpt)
    assert run_cli("sample", run, "--out", tmp_path / "g.png") == 2
    assert "missing or malformed models (dict)" in _err(capsys)


def test_resume_removes_leftover_temporary_checkpoints(run, capsys):
    leftover = run / "checkpoints" / ".step-0000003.pt.tmp-4242"
    leftover.write_bytes(b"\0" * 1000)
    assert run_cli("run", "--resume", run, "--set", "train.steps=3") == 0
    assert not leftover.exists()
    assert "removed the leftover temporary checkpoint file .step-0000003.pt.tmp-4242" in \
        capsys.readouterr().out


def _failing_save(monkeypatch, when):
    """torch.save that writes a little, then fails as on a full disk (torch's own errors: the
    write fails, then closing the zip fails while handling that)."""
    real = torch.save

    def save(obj, path, *args, **kwargs):
        if not when(str(path)):
            return real(obj, path, *args, **kwargs)
        with open(path, "wb") as fh:
            fh.write(b"PK\3\4partial")
        try:
            raise RuntimeError("basic_ios::clear: iostream error")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2194112 "
                               "vs 2194000")
    monkeypatch.setattr(torch, "save", save)


def test_failed_write_keeps_the_last_checkpoint_and_says_how_much_space(tmp_path, monkeypatch):
    good = tmp_path / "run" / "checkpoints" / "step-0000002.pt"
    checkpoint.save_atomic({"w": torch.zeros(2**18)}, good)  # 1 MB of float32
    _failing_save(monkeypatch, lambda p: "step-0000004" in p)
    with pytest.raises(MemcoreError) as info:
        checkpoint.save_atomic({"w": torch.zeros(2**18)}, good.with_name("step-0000004.pt"))
    message = str(info.value)
    assert "iostream error" in message and "needs about 1.0 MB" in message and "free there" in message
    assert f"the last good checkpoint {good} is kept" in message
    assert sorted(p.name for p in good.parent.iterdir()) == ["step-0000002.pt"]  # no tmp left


def test_disk_full_mid_run_stops_cleanly(tmp_path, monkeypatch, capsys):
    recipe = tiny_recipe(run={"dir": str(tmp_path / "run")})
    recipe["train"].update(steps=4, checkpoint_every=2, log_every=1, sample_every=4)
    _failing_save(monkeypatch, lambda p: "step-0000004" in p)
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 2
    err = _err(capsys)
    assert "cannot write checkpoint" in err and "needs about" in err and "memcore run --resume" in err
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000002.pt"]
    assert torch.load(ckpts / "step-0000002.pt", weights_only=True)["step"] == 2
