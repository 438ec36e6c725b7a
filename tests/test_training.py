"""End-to-end training behaviour: outputs, bitwise resume, NaN stop, Ctrl-C, two-stage runs."""
import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

import memcore

from helpers import run_cli, tiny_recipe, with_block_plugin, write_recipe

NAN_PLUGIN = '''
import torch
import memcore


class NanAtStep(memcore.Loss):
    phases = ("D",)

    def __call__(self, ctx):
        return torch.tensor(float("nan")) if ctx.step >= 3 else ctx.real.sum() * 0


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("loss", "nan-at-step-3", NanAtStep, memcore.LossOptions, help="test only")
'''


def test_run_finished_hook_is_called_once_on_the_run_and_an_oserror_is_ignored(
        tmp_path, monkeypatch, capsys):
    """memcore_run_finished: the experiments plugin writes report.md through it; without that
    plugin the run is the same, with no report; a hook's OSError does not fail the run."""
    from memcore.registry import Registry, use_registry
    calls = []

    @memcore.hookimpl
    def memcore_run_finished(run_dir, notes):
        calls.append((run_dir, notes))
        raise OSError("disk full")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMCORE_DISABLE_PLUGINS", "experiments")
    registry = Registry()
    registry.load_entry_points()
    registry.register_module(types.SimpleNamespace(memcore_run_finished=memcore_run_finished), "rec")
    with use_registry(registry):
        assert run_cli("run", write_recipe(tmp_path / "r.toml", tiny_recipe())) == 0
    run = _run_dir(tmp_path)
    assert [c[0].resolve() for c in calls] == [run] and "dataset: " in calls[0][1][0]
    assert not (run / "report.md").exists() and "report" not in capsys.readouterr().out


def _run_dir(tmp_path, n=1, stem="r"):
    return tmp_path / "runs" / f"{n:04d}-{stem}"


def _load(path):
    return torch.load(path, weights_only=True)


def _assert_same_state(a, b):
    for role in ("G", "D", "G_ema"):
        for k, v in a["models"][role].items():
            assert torch.equal(v, b["models"][role][k]), f"{role}.{k} differs"
    for role in ("G", "D"):
        sa, sb = a["optim"][role]["state"], b["optim"][role]["state"]
        for i in sa:
            for k in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (role, i, k)
    assert a["data"] == b["data"] and a["step"] == b["step"]


@pytest.mark.usefixtures("trusted_tmp_path")
def test_few_step_run_writes_everything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = with_block_plugin(tmp_path, tiny_recipe())
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 0
    run = _run_dir(tmp_path)
    for name in ("recipe.resolved.toml", "plugins.json", "log.jsonl", "report.md", "losses.png",
                 "samples/latest.png", "checkpoints/step-0000004.pt"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").iterdir())
    records = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert {"loss/D", "loss/G", "img_per_s"} <= set(records[-1])
    assert records[-1]["memory/G.slots.stages.14.0.memory/rows"] > 0
    state = _load(run / "checkpoints" / "step-0000004.pt")
    assert state["step"] == 4 and "base" in state["plugins"]
    assert "[generator]" in state["recipe"]
    # memory buffers are saved with G, copied (not averaged) into the EMA generator
    key = "slots.stages.14.0.memory.rows"
    assert state["models"]["G"][key] == state["models"]["G_ema"][key] > 0
    # keep_last 3: the step-2 and step-4 checkpoints only (checkpoint_every 2)
    assert len(list((run / "checkpoints").glob("step-*.pt"))) == 2


@pytest.mark.usefixtures("trusted_tmp_path")
def test_resume_is_bitwise_identical(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = with_block_plugin(tmp_path, tiny_recipe())
    recipe["train"].update(steps=6, checkpoint_every=3, keep_last=5)
    recipe["augment"] = {"kind": "diffaugment"}
    recipe["losses"].append({"kind": "r1", "every": 2, "gamma": 1.0})
    full = write_recipe(tmp_path / "full.toml", recipe)
    assert run_cli("run", full) == 0
    recipe["train"]["steps"] = 3
    part = write_recipe(tmp_path / "part.toml", recipe)
    assert run_cli("run", part) == 0
    assert run_cli("run", "--resume", _run_dir(tmp_path, 2, "part"), "--set", "train.steps=6") == 0
    a = _load(_run_dir(tmp_path, 1, "full") / "checkpoints" / "step-0000006.pt")
    b = _load(_run_dir(tmp_path, 2, "part") / "checkpoints" / "step-0000006.pt")
    _assert_same_state(a, b)
    steps = [json.loads(l)["step"] for l in
             (_run_dir(tmp_path, 2, "part") / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


@pytest.mark.usefixtures("trusted_tmp_path")
def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nanplugin.py").write_text(NAN_PLUGIN)
    recipe = tiny_recipe()
    recipe["train"]["steps"] = 6
    recipe["plugins"] = {"local": [str(tmp_path / "nanplugin.py")]}
    recipe["losses"].append({"kind": "nan-at-step-3"})
    code = run_cli("run", write_recipe(tmp_path / "r.toml", recipe))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "non-finite D loss at step 3" in err and "Traceback" not in err
    assert "step-0000002.pt" in err
    ckpts = sorted(p.name for p in (_run_dir(tmp_path) / "checkpoints").glob("step-*.pt"))
    assert ckpts == ["step-0000002.pt"]
    state = _load(_run_dir(tmp_path) / "checkpoints" / "step-0000002.pt")
    assert all(torch.isfinite(v).all() for v in state["models"]["G"].values() if v.is_floating_point())


def test_ctrl_c_saves_and_resumes(tmp_path):
    recipe = tiny_recipe()
    recipe["train"].update(steps=100000, checkpoint_every=100000, log_every=1)
    file = write_recipe(tmp_path / "r.toml", recipe)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "memcore", "run", str(file)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = _run_dir(tmp_path) / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # 128 + SIGINT
    assert "interrupted" in err and "Traceback" not in err
    ckpts = list((_run_dir(tmp_path) / "checkpoints").glob("step-*.pt"))
    assert len(ckpts) == 1
    step = _load(ckpts[0])["step"]
    assert step >= 3
    assert run_cli("run", "--resume", _run_dir(tmp_path), "--set", f"train.steps={step + 2}") == 0
    assert _load(_run_dir(tmp_path) / "checkpoints" / f"step-{step + 2:07d}.pt")["step"] == step + 2


def test_init_from_and_freeze(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    assert run_cli("run", write_recipe(tmp_path / "one.toml", recipe)) == 0
    stage1 = _load(_run_dir(tmp_path, 1, "one") / "checkpoints" / "step-0000004.pt")
    recipe["train"].update(init_from=str(_run_dir(tmp_path, 1, "one")), freeze=["G.stem"])
    assert run_cli("run", write_recipe(tmp_path / "two.toml", recipe)) == 0
    stage2 = _load(_run_dir(tmp_path, 2, "two") / "checkpoints" / "step-0000004.pt")
    g1, g2 = stage1["models"]["G"], stage2["models"]["G"]
    assert torch.equal(g1["stem.weight"], g2["stem.weight"])          # frozen
    assert not torch.equal(g1["to_image.0.weight"], g2["to_image.0.weight"])  # trained on
    # Only G from stage 1: D starts fresh (from the seed), so it matches neither stage's D.
    recipe["train"].update(init_roles=["G", "G_ema"], freeze=[], steps=1, checkpoint_every=1)
    assert run_cli("run", write_recipe(tmp_path / "three.toml", recipe)) == 0
    stage3 = _load(_run_dir(tmp_path, 3, "three") / "checkpoints" / "step-0000001.pt")
    d1, d3 = stage1["models"]["D"], stage3["models"]["D"]
    key = next(k for k in d1 if k.endswith("head.parametrizations.weight.original"))
    assert not torch.equal(d1[key], d3[key])
    # resuming a run that has init_from does not load stage 1 again
    assert run_cli("run", "--resume", _run_dir(tmp_path, 3, "three"), "--set", "train.steps=2") == 0


def test_unknown_freeze_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["train"]["freeze"] = ["G.backbone"]
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 2
    err = capsys.readouterr().err
    assert "train.freeze: no module 'G.backbone'" in err and "G.stem" in err


@pytest.mark.parametrize("overrides", [
    {"micro_batches": 2},
    {"precision": "bf16"},
    {"precision": "fp16"},
    {"d_steps": 2},
], ids=["micro-batches", "bf16", "fp16", "d-steps"])
def test_step_variants(tmp_path, monkeypatch, overrides):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["train"].update(overrides)
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 0
    state = _load(_run_dir(tmp_path) / "checkpoints" / "step-0000004.pt")
    expected_batches = 4 * overrides.get("d_steps", 1)
    assert state["data"]["batch"] == expected_batches  # 256 images / 8 = 32 batches per epoch


def test_ema_decay_zero_copies_generator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["ema"] = {"decay": 0.0}
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 0
    state = _load(_run_dir(tmp_path) / "checkpoints" / "step-0000004.pt")
    for k, v in state["models"]["G"].items():
        assert torch.equal(v, state["models"]["G_ema"][k]), k


def test_sample_and_validate_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    file = write_recipe(tmp_path / "r.toml", tiny_recipe())
    assert run_cli("run", file, "--dry-run") == 0
    assert "[generator]" in capsys.readouterr().out and not (tmp_path / "runs").exists()
    assert run_cli("run", file) == 0
    assert run_cli("sample", _run_dir(tmp_path), "--n", "9", "--out", tmp_path / "g.png") == 0
    assert (tmp_path / "g.png").stat().st_size > 0
    assert run_cli("sample", _run_dir(tmp_path), "--exemplar", tmp_path / "g.png") == 2
    assert "does not take exemplar" in capsys.readouterr().err


def test_optimizer_options_lazy_correction_and_linear_schedule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["losses"].append({"kind": "r1", "every": 4})
    recipe["optim"] = {"D": {"lr": 0.001, "betas": [0.0, 0.99], "lazy_correction": True},
                       "G": {"lr": 0.001, "schedule": "linear"}}
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 0
    state = _load(_run_dir(tmp_path) / "checkpoints" / "step-0000004.pt")
    d_group, g_group = state["optim"]["D"]["param_groups"][0], state["optim"]["G"]["param_groups"][0]
    assert d_group["lr"] == pytest.approx(0.001 * 4 / 5)
    assert d_group["betas"][1] == pytest.approx(0.99 ** 0.8)
    assert g_group["lr"] == 0.0  # linear decay reaches 0 at train.steps
    state2 = _load(_run_dir(tmp_path) / "checkpoints" / "step-0000002.pt")
    assert state2["optim"]["G"]["param_groups"][0]["lr"] == pytest.approx(0.001 * 2 / 4)


def test_linear_schedule_over_decay_epochs(tmp_path, monkeypatch):
    """256 images / batch 8 = 32 batches per epoch: decay_epochs 0.25 reaches 0 at step 8 of a
    4-step run, so lr halves by step 4 instead of reaching 0 there."""
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["optim"] = {"G": {"lr": 0.001, "schedule": "linear", "decay_epochs": 0.25}}
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 0
    for step, lr in ((2, 0.001 * 6 / 8), (4, 0.001 * 4 / 8)):
        state = _load(_run_dir(tmp_path) / "checkpoints" / f"step-{step:07d}.pt")
        assert state["optim"]["G"]["param_groups"][0]["lr"] == pytest.approx(lr)


def test_decay_epochs_needs_the_linear_schedule(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["optim"] = {"D": {"decay_epochs": 1000.0}}
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 2
    err = capsys.readouterr().err
    assert "optim.D.decay_epochs = 1000.0" in err and "schedule = \"linear\"" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_ema_half_life_with_rampup():
    from types import SimpleNamespace
    from memcore.trainer import Trainer
    ema = SimpleNamespace(start=0, decay=0.9, half_life_kimg=10.0, rampup=0.05, every=1)
    t = SimpleNamespace(recipe=SimpleNamespace(ema=ema, train=SimpleNamespace(batch_size=32)),
                        step=100)
    # rampup: half-life = min(10000, 100 * 32 * 0.05 = 160) images
    assert Trainer.ema_decay(t) == pytest.approx(0.5 ** (32 / 160))
    t.step = 100000
    assert Trainer.ema_decay(t) == pytest.approx(0.5 ** (32 / 10000))
    ema.half_life_kimg = None  # rampup with a plain decay: 0.9 is a half-life of 210.5 images
    assert Trainer.ema_decay(t) == pytest.approx(0.9)
    t.step = 100  # capped at 160 images
    assert Trainer.ema_decay(t) == pytest.approx(0.5 ** (32 / 160))
    ema.rampup = None
    assert Trainer.ema_decay(t) == 0.9


@pytest.mark.parametrize("decay, start, every, step, share", [
    (0.999, 0, 1, 100, 0.999 ** 100), (0.9, 0, 1, 6, 0.9 ** 6), (0.9, 0, 1, 7, 0.9 ** 7),
    (0.99, 10, 1, 60, 0.99 ** 50), (0.99, 10, 4, 60, 0.99 ** 13), (0.99, 0, 1, 0, 1.0)])
def test_ema_initial_share_is_the_product_of_decays_since_start(decay, start, every, step, share):
    from types import SimpleNamespace
    from memcore.trainer import Trainer
    ema = SimpleNamespace(start=start, decay=decay, half_life_kimg=None, rampup=None, every=every)
    t = SimpleNamespace(recipe=SimpleNamespace(ema=ema, train=SimpleNamespace(batch_size=8)),
                        step=step)
    t.ema_decay = lambda s=None: Trainer.ema_decay(t, s)
    assert Trainer.ema_initial_share(t) == pytest.approx(share)  # 0.9 ** 7 < 0.5: where it stops


def test_a_run_says_when_its_ema_generator_is_mostly_its_first_weights(tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("run", write_recipe(tmp_path / "r.toml", tiny_recipe())) == 0  # 4 steps, 0.999
    out = capsys.readouterr().out
    assert out.count("the EMA generator (samples, metrics) is still 100% the G of step 0") == 1
    assert "ema.rampup = 0.05" in out
    recipe = tiny_recipe(ema={"rampup": 0.05})
    assert run_cli("run", write_recipe(tmp_path / "r2.toml", recipe)) == 0
    assert "EMA generator" not in capsys.readouterr().out
