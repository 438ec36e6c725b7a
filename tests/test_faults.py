"""Faults at run time: file systems, signals, reused and half-made run directories.

Each ends in one clean message and a documented exit status (README, "Exit status"); a run
that stops keeps its last good checkpoint, and a resume then equals an uninterrupted run.
"""
from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import run_cli, tiny_recipe, write_recipe
from memcore import checkpoint
from memcore.trainer import Trainer


def _recipe(tmp_path, name="r", steps=4, **train):
    recipe = tiny_recipe(run={"dir": str(tmp_path / name)})
    recipe["train"].update(steps=steps, checkpoint_every=2, log_every=1, sample_every=steps, **train)
    return write_recipe(tmp_path / f"{name}.toml", recipe)


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _state(path):
    return torch.load(path, weights_only=True)


def _assert_same(a, b):
    for role in ("G", "D", "G_ema"):
        for k, v in a["models"][role].items():
            assert torch.equal(v, b["models"][role][k]), f"{role}.{k} differs"
    for role in ("G", "D"):
        for i, slot in a["optim"][role]["state"].items():
            for k, v in slot.items():
                assert torch.equal(torch.as_tensor(v),
                                   torch.as_tensor(b["optim"][role]["state"][i][k])), (role, i, k)
    assert a["data"] == b["data"] and a["step"] == b["step"]
    assert torch.equal(a["rng"][0]["latent"], b["rng"][0]["latent"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted four-step run (checkpoints at 2 and 4) to compare resumed runs with."""
    folder = tmp_path_factory.mktemp("reference")
    assert run_cli("run", _recipe(folder, keep_last=5)) == 0
    return folder / "r"


# -- run directories ---------------------------------------------------------------------------
def test_a_run_dir_holding_a_run_is_refused_unless_overwrite(reference, tmp_path, capsys):
    run = shutil.copytree(reference, tmp_path / "r")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    recipe = _recipe(tmp_path, steps=2)
    assert run_cli("run", recipe) == 2
    err = _err(capsys)
    assert f"run.dir = '{run}'" in err and "already holds a run" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert run_cli("run", recipe, "--resume", run, "--overwrite") == 2
    assert "give one of them" in _err(capsys)
    (run / "notes.txt").write_text("mine")
    assert run_cli("run", recipe, "--overwrite") == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002.pt"]
    assert [json.loads(l)["step"] for l in (run / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert (run / "notes.txt").read_text() == "mine"  # not the run's: kept


def test_run_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "r").write_text("not a folder")
    assert run_cli("run", _recipe(tmp_path)) == 2
    err = _err(capsys)
    assert "run.dir" in err and "is an existing file, not a folder" in err
    assert (tmp_path / "r").read_text() == "not a folder"


def _fail_on(monkeypatch, method, target, code):
    """Make ``pathlib.Path.<method>`` fail with ``code`` for paths inside ``target``."""
    real = getattr(pathlib.Path, method)

    def fail(self, *args, **kwargs):
        if self == target or target in self.parents:
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(pathlib.Path, method, fail)


def test_read_only_file_system(tmp_path, monkeypatch, capsys):
    _fail_on(monkeypatch, "mkdir", tmp_path / "r", errno.EROFS)
    assert run_cli("run", _recipe(tmp_path)) == 2
    err = _err(capsys)
    assert "run.dir" in err and "cannot create the run directory" in err
    assert "Read-only file system" in err and not (tmp_path / "r").exists()


def test_full_disk_at_start_leaves_no_run_dir(tmp_path, monkeypatch, capsys):
    _fail_on(monkeypatch, "write_bytes", tmp_path / "r", errno.ENOSPC)
    assert run_cli("run", _recipe(tmp_path)) == 2
    err = _err(capsys)
    assert "No space left on device" in err and "recipe.resolved.toml" in err
    assert not (tmp_path / "r").exists()


# -- resuming damaged or unfinished runs ---------------------------------------------------------
def _partial(reference, tmp_path, steps=2):
    """A copy of the reference run as it stood after its step-``steps`` checkpoint."""
    run = shutil.copytree(reference, tmp_path / "r")
    for ckpt in checkpoint.checkpoints(run):
        if int(ckpt.stem.split("-")[1]) > steps:
            ckpt.unlink()
    return run


def test_torn_last_log_line_is_dropped_on_resume(reference, tmp_path, capsys):
    run = _partial(reference, tmp_path)
    with open(run / "log.jsonl", "a") as fh:
        fh.write('{"step": 3, "time": 0.4, "loss/D": 1.9')  # a kill during the write
    assert run_cli("run", "--resume", run) == 0
    assert "dropped a torn last line" in capsys.readouterr().out
    steps = [json.loads(l)["step"] for l in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    _assert_same(_state(run / "checkpoints" / "step-0000004.pt"),
                 _state(reference / "checkpoints" / "step-0000004.pt"))


def test_foreign_log_is_refused_on_resume(reference, tmp_path, capsys):
    run = _partial(reference, tmp_path)
    (run / "log.jsonl").write_text("time,loss\n0.1,2.0\n")
    assert run_cli("run", "--resume", run) == 2
    err = _err(capsys)
    assert "log.jsonl, line 1: not a memcore log record" in err
    assert (run / "log.jsonl").read_text() == "time,loss\n0.1,2.0\n"


def test_resume_of_a_run_killed_before_its_first_checkpoint_restarts_it(reference, tmp_path,
                                                                        capsys):
    run = _partial(reference, tmp_path, steps=0)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".step-0000002.pt.tmp-77").write_bytes(b"PK")
    assert run_cli("run", "--resume", run) == 0
    out = capsys.readouterr().out
    assert "holds no checkpoint" in out and "starting it again from step 0" in out
    assert [json.loads(l)["step"] for l in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002.pt",
                                                                      "step-0000004.pt"]
    _assert_same(_state(run / "checkpoints" / "step-0000004.pt"),
                 _state(reference / "checkpoints" / "step-0000004.pt"))


# -- signals -------------------------------------------------------------------------------------
def _signal_when(monkeypatch, cls, method, signals, condition=lambda self, *a: True):
    """Send ``signals`` to this process when ``cls.method`` is called and ``condition`` holds."""
    real = getattr(cls, method)
    sent = []

    def wrapped(self, *args, **kwargs):
        if not sent and condition(self, *args):
            sent.append(True)
            for signum in signals:
                os.kill(os.getpid(), signum)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(cls, method, wrapped)


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test, also where pytest was started with SIGINT ignored
    (a background job of a non-interactive shell), which memcore rightly keeps."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_after_the_run_dir_exists_but_before_step_one(tmp_path, monkeypatch, capsys, signum,
                                                            python_sigint):
    from memcore import trainer
    _signal_when(monkeypatch, trainer.RunLog, "__init__", [signum])
    assert run_cli("run", _recipe(tmp_path)) == 128 + signum
    assert "interrupted" in _err(capsys)
    assert not (tmp_path / "r").exists()


def test_sigterm_during_start_up_in_a_real_process(tmp_path):
    """Killed while the dataset is being built: no traceback, no run directory, exit 143."""
    (tmp_path / "slow.py").write_text('''
import time
import memcore


@memcore.config
class SlowOptions(memcore.DatasetOptions):
    marker: str = memcore.option("", help="test only")


def slow(options, ctx):
    open(options.marker, "w").close()
    time.sleep(60)


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("dataset", "slow", slow, SlowOptions, help="test only")
''')
    recipe = tiny_recipe(run={"dir": str(tmp_path / "r")}, plugins={"local": [str(tmp_path / "slow.py")]})
    recipe["data"] = {"kind": "slow", "marker": str(tmp_path / "building")}
    file = write_recipe(tmp_path / "r.toml", recipe)
    proc = subprocess.Popen([sys.executable, "-m", "memcore", "run", str(file),
                             "--trust-local-plugins"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "building").exists() and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def _mid_step(self, phase, *args):
    return self.step == 2 and phase == "G"  # step 3's D phase is done, its G phase is not


def _writing_step_3(path):
    return "step-0000003" in str(path)


@pytest.mark.parametrize("timing", ["mid-step", "during-the-save"])
def test_second_signal_never_saves_a_half_finished_step(reference, tmp_path, monkeypatch, capsys,
                                                        timing):
    run = tmp_path / "r"
    if timing == "mid-step":
        _signal_when(monkeypatch, Trainer, "_run_pass", [signal.SIGINT, signal.SIGINT], _mid_step)
    else:  # the first signal asks for a stop after step 3; the second lands in its checkpoint
        _signal_when(monkeypatch, Trainer, "_run_pass", [signal.SIGINT], _mid_step)
        real_save = torch.save

        def save(obj, path, *args, **kwargs):
            if _writing_step_3(path):
                os.kill(os.getpid(), signal.SIGINT)
            return real_save(obj, path, *args, **kwargs)
        monkeypatch.setattr(torch, "save", save)
    assert run_cli("run", _recipe(tmp_path, keep_last=5)) == 130
    err = _err(capsys)
    assert "second interrupt" in err and "step-0000002.pt" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002.pt"]
    _assert_same(_state(run / "checkpoints" / "step-0000002.pt"),
                 _state(reference / "checkpoints" / "step-0000002.pt"))
    monkeypatch.undo()
    assert run_cli("run", "--resume", run) == 0
    _assert_same(_state(run / "checkpoints" / "step-0000004.pt"),
                 _state(reference / "checkpoints" / "step-0000004.pt"))


def test_nproc_passes_sigterm_to_the_launcher_and_waits_for_it():
    from memcore.cli import _wait_passing_on_sigterm
    from memcore.errors import Interrupted

    class Launcher:
        def __init__(self, outcomes):
            self.outcomes, self.sent = iter(outcomes), []

        def wait(self):
            outcome = next(self.outcomes)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        def send_signal(self, signum):
            self.sent.append(signum)

    term = Launcher([Interrupted(signal.SIGTERM), 1])
    assert _wait_passing_on_sigterm(term) == 143 and term.sent == [signal.SIGTERM]
    ctrl_c = Launcher([KeyboardInterrupt(), 1])  # the terminal sent it to the workers already
    assert _wait_passing_on_sigterm(ctrl_c) == 130 and ctrl_c.sent == []
    assert _wait_passing_on_sigterm(Launcher([0])) == 0


def test_run_files_are_rewritten_whole(tmp_path, monkeypatch):
    from memcore.safewrite import write_text
    target = tmp_path / "recipe.resolved.toml"
    target.write_text("old = 1\n")

    def killed(src, dst):  # the process dies between writing the new file and renaming it
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text(target, "new = 2\n")
    assert target.read_text() == "old = 1\n" and [p.name for p in tmp_path.iterdir()] == [target.name]
