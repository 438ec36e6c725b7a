"""Writes stay where they belong (issue 27, part 2): no writer follows a link planted in a run
folder or a sweep root, folder names cannot climb out, ``--overwrite`` removes only what a run
wrote, and ``--out`` is checked before anything is written.

Each planted link points at a file or folder outside, in ``tmp_path``; every test asserts that
the outside target is unchanged and that the write either landed as a regular file inside or was
refused with exit 2 naming the link.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from helpers import run_cli as _run_cli, tiny_recipe, write_recipe
from memcore import MemcoreError, checkpoint, safewrite
from memcore_experiments.sweep import DONE, EXPERIMENT_INFO, LOG, Job, PlannedRun, check_links, \
    write_experiment_info, load_experiment
from test_metrics_core import METRIC_PLUGIN

OUTSIDE = "outside: not memcore's\n"


def run_cli(*args):
    """The reference run's recipe names a local metric plugin: consent, as a user would."""
    return _run_cli(*args, "--trust-local-plugins")


def _recipe(folder, **train):
    (folder / "metricplugin.py").write_text(METRIC_PLUGIN)
    recipe = tiny_recipe(run={"dir": str(folder / "r")})
    recipe["train"].update({"steps": 4, "checkpoint_every": 2, "log_every": 1, "sample_every": 2,
                            "keep_last": 5, **train})
    recipe["plugins"] = {"local": [str(folder / "metricplugin.py")]}
    recipe["metrics"] = [{"kind": "brightness", "every": 2, "num_samples": 8}]
    return write_recipe(folder / "r.toml", recipe)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A four-step run with checkpoints, samples and metrics at steps 2 and 4."""
    folder = tmp_path_factory.mktemp("reference")
    assert run_cli("run", _recipe(folder)) == 0
    return folder / "r"


def _stopped_at_2(reference, tmp_path):
    """A copy of the reference run as a kill after its step-2 checkpoint left it."""
    run = shutil.copytree(reference, tmp_path / "r")
    (run / "checkpoints" / "step-0000004.pt").unlink()
    return run


def _plant_file(link, tmp_path, text=OUTSIDE):
    target = tmp_path / "outside.txt"
    target.write_text(text)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(target)
    return target


def _plant_folder(link, tmp_path):
    target = tmp_path / "outside"
    target.mkdir()
    (target / "keep.txt").write_text(OUTSIDE)
    shutil.rmtree(link, ignore_errors=True)
    link.symlink_to(target, target_is_directory=True)
    return target


def _unchanged(target, text=OUTSIDE):
    if target.is_dir():
        assert [p.name for p in target.iterdir()] == ["keep.txt"]
        target = target / "keep.txt"
    assert target.read_text() == text


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# -- the helper --------------------------------------------------------------------------------
@pytest.mark.parametrize("write", [
    lambda p: safewrite.write_text(p, "new"),
    lambda p: safewrite.write_bytes(p, b"new"),
    lambda p: checkpoint.save_atomic({"x": 1}, p),
])
def test_a_whole_file_write_replaces_a_link_and_never_its_target(tmp_path, write):
    path = tmp_path / "run" / "f.pt"
    target = _plant_file(path, tmp_path)
    write(path)
    _unchanged(target)
    assert path.is_file() and not path.is_symlink()
    assert [p.name for p in path.parent.iterdir()] == ["f.pt"]  # no temporary file left


def test_a_temporary_name_planted_as_a_link_is_never_opened(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    target = tmp_path / "outside.txt"
    target.write_text(OUTSIDE)
    for pid in range(os.getpid() - 2, os.getpid() + 3):  # the names a predictable scheme uses
        (folder / f".f.txt.tmp-{pid}").symlink_to(target)
    safewrite.write_text(folder / "f.txt", "new")
    _unchanged(target)
    assert (folder / "f.txt").read_text() == "new"


def test_an_append_to_a_link_is_refused(tmp_path):
    path = tmp_path / "run" / "log.jsonl"
    target = _plant_file(path, tmp_path)
    with pytest.raises(MemcoreError, match=f"{path} is a symbolic link"):
        safewrite.open_append(path)
    _unchanged(target)


@pytest.mark.parametrize("kind", ["fifo", "folder", "hard link"])
def test_an_append_to_anything_but_a_file_of_its_own_is_refused(tmp_path, kind):
    path = tmp_path / "run" / "log.jsonl"
    path.parent.mkdir()
    target = tmp_path / "outside.txt"
    target.write_text(OUTSIDE)
    {"fifo": lambda: os.mkfifo(path), "folder": path.mkdir,
     "hard link": lambda: os.link(target, path)}[kind]()
    with pytest.raises(MemcoreError, match="memcore only appends to a file of its own"):
        safewrite.open_append(path)
    _unchanged(target)


def test_a_linked_subfolder_is_refused_by_name(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    target = _plant_folder(run / "samples", tmp_path)
    for write in (lambda: safewrite.folder(run / "samples" / "deeper", inside=run),
                  lambda: safewrite.write_text(run / "samples" / "latest.png", "x", inside=run),
                  lambda: safewrite.open_append(run / "samples" / "a.log", inside=run)):
        with pytest.raises(MemcoreError, match=f"{run / 'samples'} is a symbolic link"):
            write()
    _unchanged(target)


# -- every writer of a run ---------------------------------------------------------------------
# Rewritten whole by `run --resume` (the run continues from step 2 to 4): a planted link is
# replaced by the run's own file. (A checkpoint's writer is tested above, through save_atomic: a
# link named like a later checkpoint is what a resume would read, not write.)
RESUME_REPLACES = ["recipe.resolved.toml", "plugins.json", "report.md", "losses.png",
                   "metric-brightness_gap@pixels.png", "samples/latest.png",
                   "samples/step-0000004.png"]
# Appended to: a link is refused before training.
RESUME_APPENDS = ["log.jsonl", "metrics.jsonl"]
SUBFOLDERS = ["samples", "checkpoints", "tensorboard"]


@pytest.mark.parametrize("name", RESUME_REPLACES)
def test_resume_replaces_a_planted_link_by_its_own_file(reference, tmp_path, name):
    run = _stopped_at_2(reference, tmp_path)
    text = (run / name).read_text() if name.endswith(".toml") else OUTSIDE  # read, then written
    target = _plant_file(run / name, tmp_path, text)
    assert run_cli("run", "--resume", run) == 0
    _unchanged(target, text)
    assert (run / name).is_file() and not (run / name).is_symlink()


@pytest.mark.parametrize("name", RESUME_APPENDS + SUBFOLDERS)
def test_resume_refuses_a_planted_link_where_it_appends_or_writes_into(reference, tmp_path,
                                                                        capsys, name):
    run = _stopped_at_2(reference, tmp_path)
    plant = _plant_folder if name in SUBFOLDERS else _plant_file
    target = plant(run / name, tmp_path)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert run_cli("run", "--resume", run) == 2
    err = _err(capsys)
    assert f"{run / name} is a symbolic link (to {target})" in err, err
    _unchanged(target)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_best_checkpoint_replaces_a_planted_link(reference, tmp_path):
    run = shutil.copytree(reference, tmp_path / "r")
    target = _plant_file(run / "checkpoints" / "best.pt", tmp_path)
    checkpoint.mark_best(run / "checkpoints" / "step-0000004.pt")
    _unchanged(target)
    best = run / "checkpoints" / "best.pt"
    assert best.is_file() and not best.is_symlink()
    assert best.read_bytes() == (run / "checkpoints" / "step-0000004.pt").read_bytes()


def test_eval_replaces_a_planted_link_by_its_json(reference, tmp_path, capsys):
    run = shutil.copytree(reference, tmp_path / "r")
    path = run / "eval-step-0000004.json"
    target = _plant_file(path, tmp_path)
    assert run_cli("eval", run, "--num-samples", "8") == 0
    _unchanged(target)
    assert not path.is_symlink() and json.loads(path.read_text())[0]["metric"] == "brightness"


@pytest.mark.parametrize("out", ["sample.png", "sub/sample.png"])
def test_sample_out_replaces_a_planted_link(reference, tmp_path, out):
    path = tmp_path / "outputs" / out
    target = _plant_file(path, tmp_path)
    assert run_cli("sample", reference, "--n", "4", "--out", path) == 0
    _unchanged(target)
    assert path.is_file() and not path.is_symlink()


# -- --overwrite -------------------------------------------------------------------------------
def test_overwrite_removes_only_what_the_run_wrote_and_names_the_rest(reference, tmp_path,
                                                                     capsys):
    run = shutil.copytree(reference, tmp_path / "r")
    mine = {"samples/my-photo.txt": "photo", "tensorboard/notes.txt": "notes",
            "checkpoints/README": "mine", "notes.md": "top"}
    for name, text in mine.items():
        (run / name).write_text(text)
    recipe = _recipe(tmp_path, steps=2)
    assert run_cli("run", recipe, "--overwrite") == 0
    out = capsys.readouterr().out
    assert all((run / name).read_text() == text for name, text in mine.items())
    for name in ("samples/my-photo.txt", "tensorboard/notes.txt", "checkpoints/README"):
        assert name in out, out
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == \
        ["best.pt", "step-0000002.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == \
        ["latest.png", "my-photo.txt", "step-0000002.png"]


def test_overwrite_removes_a_planted_link_never_its_target(reference, tmp_path):
    run = shutil.copytree(reference, tmp_path / "r")
    target = _plant_folder(run / "samples", tmp_path)
    assert run_cli("run", _recipe(tmp_path, steps=2), "--overwrite") == 0
    _unchanged(target)
    assert (run / "samples").is_dir() and not (run / "samples").is_symlink()


# -- names -------------------------------------------------------------------------------------
BAD_NAMES = ["", ".", "..", "a/b", "../up", "/abs", "a\\b", "a\0b", "x" * 256, "é" * 128]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("key", ["name", "variants[0].name"])
def test_bad_experiment_and_variant_names_exit_2_naming_the_key(tmp_path, capsys, monkeypatch,
                                                                 key, bad):
    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path / "tiny.toml", tiny_recipe())
    name, variant = (bad, "v") if key == "name" else ("e", bad)
    path = tmp_path / "exp.toml"
    path.write_text(f'name = {json.dumps(name)}\nbase = "tiny.toml"\n'
                    f'[[variants]]\nname = {json.dumps(variant)}\n')
    assert run_cli("sweep", path, "--dry-run") == 2
    err = _err(capsys)
    assert f"{key} = {bad!r}: expected a folder name" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml", "tiny.toml"]


@pytest.mark.parametrize("stem", ["..", ".", ".hidden", "-dash", "a b"])
def test_an_experiment_named_by_a_bad_file_stem_is_refused(tmp_path, capsys, monkeypatch, stem):
    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path / "tiny.toml", tiny_recipe())
    path = tmp_path / f"{stem}.toml"
    path.write_text('base = "tiny.toml"\n[[variants]]\nname = "v"\n')
    assert run_cli("sweep", path, "--dry-run") == 2
    err = _err(capsys)
    assert f"name (not given, so the file stem {stem!r}): expected a folder name" in err, err
    assert "give the experiment a name" in err
    load_experiment(path.rename(tmp_path / "fine.toml"))  # the same file, a good stem


@pytest.mark.parametrize("bad", BAD_NAMES[1:])  # run.name = "" means the default
def test_a_bad_run_name_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe()
    recipe["run"] = {"name": bad}
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 2
    assert f"run.name = {bad!r}: expected a folder name" in _err(capsys)
    assert not (tmp_path / "runs").exists()


# -- the sweep's writers -----------------------------------------------------------------------
def _planned(root, action="start"):
    return PlannedRun("v", 0, root / "exp" / "v" / "seed-0", {"train": {"seed": 0}}, 4, [],
                      action=action)


def _finish(job):
    while not job.poll():
        pass
    assert job.failed is None


@pytest.mark.parametrize("name", [LOG, DONE, "recipe.sweep.toml"])
def test_a_sweep_never_writes_through_a_planted_link(tmp_path, name):
    run = _planned(tmp_path / "root")
    target = _plant_file(run.dir / name, tmp_path)
    if name == LOG:
        with pytest.raises(MemcoreError, match=f"{run.dir / LOG} is a symbolic link"):
            check_links([run])
        with pytest.raises(MemcoreError, match=f"{run.dir / LOG} is a symbolic link"):
            Job(run, [["--version"]], dict(os.environ), 0)
    else:
        _finish(Job(run, [["--version"]], dict(os.environ), 0))
        assert (run.dir / name).is_file() and not (run.dir / name).is_symlink()
    _unchanged(target)


@pytest.mark.parametrize("level", ["exp", "exp/v", "exp/v/seed-0"])
def test_a_sweep_refuses_a_planted_folder_link_below_its_root(tmp_path, level):
    root = tmp_path / "root"
    run = _planned(root)
    (root / level).parent.mkdir(parents=True, exist_ok=True)
    target = _plant_folder(root / level, tmp_path)
    for write in (lambda: check_links([run]), lambda: Job(run, [["--version"]], {}, 0)):
        with pytest.raises(MemcoreError, match=f"{root / level} is a symbolic link"):
            write()
    _unchanged(target)


def test_experiment_info_replaces_a_planted_link(tmp_path):
    write_recipe(tmp_path / "tiny.toml", tiny_recipe())
    path = tmp_path / "exp.toml"
    path.write_text('base = "tiny.toml"\n[[variants]]\nname = "v"\n')
    root = tmp_path / "root" / "exp"
    target = _plant_file(root / EXPERIMENT_INFO, tmp_path)
    write_experiment_info(load_experiment(path), root, path)
    _unchanged(target)
    assert json.loads((root / EXPERIMENT_INFO).read_text())["variants"] == ["v"]


# -- --out is checked before anything is written -----------------------------------------------
def _bad_outs(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    return {"a folder": (tmp_path / "a-folder", "is a folder"),
            "under a file": (tmp_path / "a-file" / "x.png", "is a file, not a folder")}


@pytest.mark.parametrize("case", ["a folder", "under a file", "extension"])
def test_sample_out_is_checked_before_the_run_is_read(tmp_path, capsys, case):
    outs = {**_bad_outs(tmp_path), "extension": (tmp_path / "x.txt", "expected a file name ending")}
    out, message = outs[case]
    before = sorted(tmp_path.rglob("*"))
    # the run does not exist: the --out check comes first, so it is what is reported
    assert run_cli("sample", tmp_path / "no-run", "--out", out) == 2
    err = _err(capsys)
    assert "--out" in err and message in err, err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("case", ["a folder", "under a file"])
def test_compare_out_is_checked_before_anything_is_written(reference, tmp_path, capsys, case):
    out, message = _bad_outs(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    assert run_cli("compare", reference, "--out", out) == 2
    assert message in _err(capsys)
    assert sorted(tmp_path.rglob("*")) == before
