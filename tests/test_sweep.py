"""`memcore sweep`: validation of experiment files, the plan, a real sweep killed and resumed,
and the division of the cores between parallel runs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from memcore.cli import main
from memcore.recipe import dumps
from memcore_experiments.sweep import DONE, plan, thread_plan
from memcore_kit.testing import tiny_recipe

ROOT = Path(__file__).resolve().parents[1]

# Imported by every process that loads the recipe; a `memcore run` child records its OpenMP
# threads and its lifetime, so the test can add up the threads running at the same time.
THREADS_PLUGIN = '''
import atexit, json, os, sys, time
import torch
import memcore

LOG = os.environ.get("SWEEP_TEST_THREADS")
if LOG and "run" in sys.argv[1:2]:
    def _write(event):
        with open(LOG, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "event": event, "time": time.time(),
                                 "threads": torch.get_num_threads(),
                                 "omp": os.environ.get("OMP_NUM_THREADS")}) + "\\n")
    _write("start")
    atexit.register(_write, "end")


@memcore.hookimpl
def memcore_register_components(registry):
    pass
'''


def write_experiment(folder: Path, text: str, **recipe_sections) -> Path:
    recipe = tiny_recipe(**recipe_sections)
    recipe["data"]["limit"] = 64
    (folder / "tiny.toml").write_text(tomli_w.dumps(recipe))
    path = folder / "exp.toml"
    path.write_text(text)
    return path


def test_thread_plan_never_exceeds_the_cores():
    assert thread_plan(2, 1, 0) == 2
    assert thread_plan(2, 2, 0) == 1
    assert thread_plan(16, 2, 4) == 2
    assert thread_plan(7, 2, 1) == 3
    with pytest.raises(Exception, match="3 processes on 2 cores"):
        thread_plan(2, 3, 1)


def test_malformed_experiment_files_exit_2_naming_every_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_experiment(tmp_path, '''
base = "tiny.toml"
seeds = [0, 0]
stesp = 4
baseline = "nne"
overrides = 3
[[variants]]
name = "none"
[[variants]]
name = "bad/name"
[[variants]]
recipe = "tiny.toml"
''')
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    for expected in ("overrides: expected a table of key paths",
                     "stesp: unknown key; did you mean 'steps'?",
                     "variants[1].name = 'bad/name': expected a folder name",
                     "variants[2].name: required key missing"):
        assert expected in err, err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    path.write_text('base = "tiny.toml"\nseeds = [0, 0]\nbaseline = "nne"\n'
                    '[[variants]]\nname = "none"\n[[variants]]\nname = "none"\n')
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "seeds = [0, 0]: expected distinct seeds (0 more than once)" in err, err
    assert "variants[1].name = 'none': another variant has this name" in err
    assert "baseline = 'nne': no such variant; did you mean 'none'?" in err


def test_every_variant_is_resolved_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_experiment(tmp_path, '''
base = "tiny.toml"
seeds = [0, 1]
baseline = "c"
[[variants]]
name = "a"
overrides = { "generator.blocks.3.at" = 8 }
[[variants]]
name = "b"
recipe = "missing.toml"
[[variants]]
name = "c"
[variants.overrides]
"generator.widht" = 8
train.batch_size = 2.5
''')
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "exp.toml: 4 problem(s)" in err, err     # each variant's problems once, not per seed
    assert ("variants[0] (a).overrides.generator.blocks.3.at: generator.blocks.3 is not an "
            "existing list item") in err
    assert "variants[1] (b): recipe = " in err and "missing.toml': file not found" in err
    assert "variants[2] (c): generator.widht: unknown key; did you mean 'width'?" in err
    assert "variants[2] (c): train.batch_size = 2.5: expected an integer" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    path.write_text(path.read_text().replace('baseline = "c"', 'baseline = "d"'))
    assert main(["sweep", str(path)]) == 2
    assert "baseline = 'd': no such variant" in capsys.readouterr().err


def test_dry_run_lists_runs_and_refuses_a_folder_of_another_recipe(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_experiment(tmp_path, '''
name = "abl"
base = "tiny.toml"
seeds = [3, 4]
steps = 6
[[variants]]
name = "plain"
[[variants]]
name = "wide"
overrides = { generator = { width = 24 } }
''')
    assert main(["sweep", str(path), "--dry-run", "--cores", "2", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 variant(s) x 2 seed(s) = 4 runs in runs/abl · 4 start · 2 at a time, 1 thread(s)" \
        in out
    assert "wide/seed-4" in out and "start (6 steps)" in out
    assert not (tmp_path / "runs").exists()
    # A folder trained from another recipe is not silently continued.
    wide = next(r for r in plan(path)[2] if r.label == "wide/seed-3")
    wide.resolved["generator"]["width"] = 32
    run = tmp_path / "runs" / "abl" / "wide" / "seed-3"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-0000002.pt").write_bytes(b"")
    (run / "recipe.resolved.toml").write_text(dumps(wide.resolved))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "runs/abl/wide/seed-3 was trained from another recipe (generator.width differ)" in err


def test_plan_skips_finished_runs_and_resumes_interrupted_ones(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_experiment(tmp_path, """
base = "tiny.toml"
seeds = [0, 1]
steps = 6
[[variants]]
name = "a"
[[variants]]
name = "b"
""")
    runs = {r.label: r for r in plan(path)[2]}

    def fake(label, at_step, done_steps=None, steps=6):
        run = runs[label]
        (run.dir / "checkpoints").mkdir(parents=True)
        (run.dir / "checkpoints" / f"step-{at_step:07d}.pt").write_bytes(b"")
        resolved = json.loads(json.dumps(run.resolved))
        resolved["train"]["steps"] = steps
        (run.dir / "recipe.resolved.toml").write_text(dumps(resolved))
        if done_steps:
            (run.dir / DONE).write_text(json.dumps({"steps": done_steps, "after": []}))
    fake("a/seed-0", 6, done_steps=6)           # finished
    fake("a/seed-1", 2)                         # killed after its step-2 checkpoint
    fake("b/seed-0", 4, done_steps=4, steps=4)  # finished at 4 steps; the experiment now says 6
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 finished, 1 start, 1 resume, 1 extend" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["a/seed-0"].split()[1:] == ["finished"]
    assert "resume from step 2 to 6" in lines["a/seed-1"]
    assert "memcore run --resume runs/exp/a/seed-1 --set train.steps=6" in lines["a/seed-1"]
    assert "extend from step 4 to 6" in lines["b/seed-0"]
    assert "memcore run runs/exp/b/seed-1/recipe.sweep.toml" in lines["b/seed-1"]


def _runs(root: Path) -> list[Path]:
    return [root / v / f"seed-{s}" for v in ("a", "b") for s in (0, 1)]


def _checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.pt"))


def _wait_for_children(log: Path, timeout: float = 120) -> list[dict]:
    """Every child that started has ended (they outlive a killed sweep to save a checkpoint)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = [json.loads(line) for line in log.read_text().splitlines()]
        started = {e["pid"] for e in events if e["event"] == "start"}
        if started <= {e["pid"] for e in events if e["event"] == "end"}:
            return events
        time.sleep(0.2)
    raise AssertionError(f"children still running after {timeout} s")


@pytest.mark.slow  # six `memcore run` processes: ~70 s of CPU
def test_sweep_killed_mid_way_resumes_to_completion_with_the_cores_divided(tmp_path):
    plugin = tmp_path / "threads_plugin.py"
    plugin.write_text(THREADS_PLUGIN)
    train = {"steps": 200, "batch_size": 8, "seed": 0, "log_every": 10, "sample_every": 200,
             "checkpoint_every": 50, "grid_size": 16, "progress": False}
    path = write_experiment(tmp_path, '''
base = "tiny.toml"
seeds = [0, 1]
[[variants]]
name = "a"
[[variants]]
name = "b"
overrides = { "generator.width" = 12 }
''', train=train, plugins={"local": [str(plugin)]},
        generator={"kind": "dcgan", "z_dim": 16, "width": 8},
        discriminator={"kind": "dcgan", "width": 8})
    threads_log = tmp_path / "threads.jsonl"
    threads_log.touch()
    # Without the sweep's division every child would take the parent's 2 threads: 4 on 2 cores.
    env = dict(os.environ, SWEEP_TEST_THREADS=str(threads_log), OMP_NUM_THREADS="2")
    argv = [sys.executable, "-m", "memcore", "sweep", str(path), "--jobs", "2", "--cores", "2",
            "--status-every", "1", "--trust-local-plugins"]
    root = tmp_path / "runs" / "exp"
    with open(tmp_path / "first.out", "w") as out:
        sweep = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and sweep.poll() is None:
            done = [r for r in _runs(root) if (r / DONE).exists()]
            partial = [r for r in _runs(root) if _checkpoint_steps(r) and not (r / DONE).exists()]
            if done and partial:
                os.kill(sweep.pid, signal.SIGKILL)       # as if the machine's session died
                break
            time.sleep(0.05)
        sweep.wait(30)
    first = (tmp_path / "first.out").read_text()
    assert sweep.returncode == -signal.SIGKILL, f"the sweep ended before the kill:\n{first}"
    _wait_for_children(threads_log)
    finished = {r: (r / "checkpoints" / "step-0000200.pt").stat().st_mtime
                for r in _runs(root) if (r / DONE).exists()}
    interrupted = [r for r in _runs(root) if not (r / DONE).exists()]
    assert finished and interrupted

    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(finished)} finished" in again.stdout
    for run in _runs(root):
        assert (run / DONE).exists() and _checkpoint_steps(run)[-1] == 200
        steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
        assert steps == list(range(10, 201, 10)), (run, steps)      # each step logged once
    for run, mtime in finished.items():       # finished runs were not trained again
        assert (run / "checkpoints" / "step-0000200.pt").stat().st_mtime == mtime
    resumed = [r for r in interrupted if _checkpoint_steps(r) and "--resume" in
               (r / "sweep.log").read_text()]
    assert resumed, "no interrupted run was continued from its checkpoint"
    assert "all 4 runs finished" in again.stdout

    events = _wait_for_children(threads_log)
    assert {(e["threads"], e["omp"]) for e in events} == {(1, "1")}
    spans = {}
    for e in events:
        spans.setdefault(e["pid"], {})[e["event"]] = e["time"]
    most = max(sum(1 for s in spans.values() if s["start"] <= t < s["end"])
               for t in (s["start"] for s in spans.values()))
    assert most <= 2, f"{most} runs of 1 thread at once on 2 cores"


@pytest.mark.slow  # one `memcore run` process stopped part-way: ~15 s
def test_stopped_sweep_names_the_checkpoint_it_resumes_from(tmp_path):
    """Ctrl-C: the run saves a checkpoint at the step it reached, which the log (written every
    log_every steps) lags; the sweep's line names the checkpoint, the step a rerun starts at."""
    train = {"steps": 100000, "batch_size": 8, "seed": 0, "log_every": 7, "sample_every": 100000,
             "checkpoint_every": 100000, "grid_size": 16, "progress": False}
    path = write_experiment(tmp_path, '''
base = "tiny.toml"
seeds = [0]
[[variants]]
name = "a"
''', train=train, generator={"kind": "dcgan", "z_dim": 16, "width": 8},
        discriminator={"kind": "dcgan", "width": 8})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = tmp_path / "runs" / "exp" / "a" / "seed-0"
    sweep = subprocess.Popen([sys.executable, "-m", "memcore", "sweep", str(path), "--jobs", "1",
                              "--cores", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            (run / "log.jsonl").exists() and len((run / "log.jsonl").read_text().splitlines()) >= 3):
        time.sleep(0.05)
    sweep.send_signal(signal.SIGINT)
    out, _ = sweep.communicate(timeout=120)
    saved = _checkpoint_steps(run)
    assert saved and saved[-1] >= 21, out
    assert f"stopped; resumes from step {saved[-1]} (its last checkpoint)" in out, out
    assert f"resume from step {saved[-1]} to 100000" in subprocess.run(
        [sys.executable, "-m", "memcore", "sweep", str(path), "--dry-run"], cwd=tmp_path, env=env,
        capture_output=True, text=True).stdout
