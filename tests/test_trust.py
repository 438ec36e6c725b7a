"""The trust model (docs/trust.md): recipes, experiment files, run folders and checkpoints are data.
A Python file they name is imported only with the user's consent, on every path that reads them;
an experiment's ``after`` commands only evaluate the run they follow."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import tomli
import tomli_w
import torch

from memcore import trust
from memcore.cli import build_parser, main
from memcore_kit.testing import train
from memcore_experiments.sweep import commands_of, plan
from memcore_kit.testing import tiny_recipe

# Imported, it leaves a marker beside itself: the one sign the tests need that code ran.
PLANTED = '''
import pathlib
pathlib.Path(__file__).with_suffix(".imported").write_text("this file was imported")
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (2 steps, a checkpoint), copied by each test that changes it."""
    return train(tiny_recipe(), tmp_path_factory.mktemp("trained"), steps=2)


@pytest.fixture
def planted(tmp_path, isolated_registry):
    """The planted plugin file, in a folder of its own (untrusted unless a test trusts it)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = folder / "planted.py"
    path.write_text(PLANTED)
    yield path
    sys.modules.pop("memcore_local_planted", None)


def imported(planted: Path) -> bool:
    return planted.with_suffix(".imported").exists()


def files_under(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


# -- each path that reads a recipe, with a planted plugins.local ------------------------------
def recipe_file(folder: Path, planted: Path, **sections) -> Path:
    recipe = tiny_recipe(plugins={"local": [str(planted)]}, **sections)
    recipe["run"] = {"root": str(folder / "runs")}
    path = folder / "r.toml"
    path.write_text(tomli_w.dumps(recipe))
    return path


def copy_run(trained: Path, folder: Path) -> Path:
    run = folder / "run"
    shutil.copytree(trained, run)
    return run


def plant_in_run_recipe(run: Path, planted: Path) -> None:
    path = run / "recipe.resolved.toml"
    raw = tomli.loads(path.read_text())
    raw["plugins"] = {"local": [str(planted)]}
    path.write_text(tomli_w.dumps(raw))


def plant_in_checkpoints(run: Path, entry: str) -> None:
    """Every checkpoint of ``run`` now carries a recipe whose plugins.local is ``entry``."""
    for path in (run / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        raw = tomli.loads(state["recipe"])
        raw["plugins"] = {"local": [entry]}
        state["recipe"] = tomli_w.dumps(raw)
        torch.save(state, path)


def experiment(folder: Path, text: str, recipe: dict | None = None) -> Path:
    recipe = recipe or tiny_recipe()
    recipe["data"]["limit"] = 64
    (folder / "tiny.toml").write_text(tomli_w.dumps(recipe))
    path = folder / "exp.toml"
    path.write_text(f'root = "{folder / "runs"}"\nbase = "tiny.toml"\n' + text)
    return path


def _run(folder, planted, trained):
    return ["run", recipe_file(folder, planted)]


def _dry_run(folder, planted, trained):
    return ["run", "--dry-run", recipe_file(folder, planted)]


def _validate(folder, planted, trained):
    return ["validate", recipe_file(folder, planted)]


def _validate_extends(folder, planted, trained):
    base = recipe_file(folder, planted)
    child = folder / "child.toml"
    child.write_text('extends = "r.toml"\n[train]\nsteps = 3\n')
    assert base.exists()
    return ["validate", child]


def _validate_set(folder, planted, trained):
    clean = folder / "clean.toml"
    clean.write_text(tomli_w.dumps(tiny_recipe()))
    return ["validate", clean, "--set", f"plugins.local=[{json.dumps(str(planted))}]"]


def _dry_run_set(folder, planted, trained):
    return ["run", "--dry-run", *_validate_set(folder, planted, trained)[1:]]


def _resume(folder, planted, trained):
    run = copy_run(trained, folder)
    plant_in_run_recipe(run, planted)
    return ["run", "--resume", run, "--set", "train.steps=4"]


def _checkpoint(command, relative=False):
    def make(folder, planted, trained):
        run = copy_run(trained, folder)
        # relative: to the current folder, so a run can ship the file beside itself
        plant_in_checkpoints(run, os.path.relpath(planted) if relative else str(planted))
        return [*command, run]
    return make


def _eval_set(folder, planted, trained):
    return ["eval", copy_run(trained, folder), "--set",
            f"plugins.local=[{json.dumps(str(planted))}]"]


def _check(folder, planted, trained):
    return ["check", "loss:hinge", "--recipe", recipe_file(folder, planted)]


def _sweep_overrides(dry_run):
    def make(folder, planted, trained):
        path = experiment(folder, f'''
[[variants]]
name = "a"
overrides = {{ "plugins.local" = [{json.dumps(str(planted))}] }}
''')
        return ["sweep", path, *(["--dry-run"] if dry_run else [])]
    return make


def _sweep_base(folder, planted, trained):
    recipe = tiny_recipe(plugins={"local": [str(planted)]})
    return ["sweep", "--dry-run", experiment(folder, '[[variants]]\nname = "a"\n', recipe)]


PATHS = {
    "run": _run,
    "run --dry-run": _dry_run,
    "validate": _validate,
    "validate (extends)": _validate_extends,
    "validate --set": _validate_set,
    "run --dry-run --set": _dry_run_set,
    "run --resume": _resume,
    "sample (checkpoint)": _checkpoint(["sample"]),
    "sample (checkpoint, relative path)": _checkpoint(["sample"], relative=True),
    "eval (checkpoint)": _checkpoint(["eval"]),
    "eval --set": _eval_set,
    "viz attention (checkpoint)": _checkpoint(["viz", "attention"]),
    "viz moca (checkpoint)": _checkpoint(["viz", "moca"]),
    "viz painting (checkpoint)": _checkpoint(["viz", "painting"]),
    "mfh-eval (checkpoint)": _checkpoint(["mfh-eval"]),
    "check --recipe": _check,
    "sweep (experiment overrides)": _sweep_overrides(False),
    "sweep --dry-run (experiment overrides)": _sweep_overrides(True),
    "sweep --dry-run (base recipe)": _sweep_base,
}


@pytest.mark.parametrize("path", PATHS)
def test_a_planted_plugin_file_is_never_imported_without_consent(path, tmp_path, planted, trained,
                                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(a) for a in PATHS[path](tmp_path, planted, trained)]
    before = files_under(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert not imported(planted)
    assert files_under(tmp_path) == before, "something was written"
    assert "plugins.local[0]" in err and str(planted) in err, err
    assert "--trust-local-plugins" in err and "trusted_plugin_dirs" in err and "docs/trust.md" in err
    assert err.count("error:") == 1 and "Traceback" not in err


@pytest.mark.parametrize("consent", [[], ["--trust-local-plugins"]])
@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_a_sweep_never_imports_the_plugin_files_a_run_folder_brings(consent, dry_run, tmp_path,
                                                                    planted, trained, monkeypatch,
                                                                    capsys):
    """Even with the flag: it consents to the experiment's files, not to a folder's."""
    monkeypatch.chdir(tmp_path)
    path = experiment(tmp_path, 'seeds = [0]\n[[variants]]\nname = "a"\n')
    run = tmp_path / "runs" / "exp" / "a" / "seed-0"
    run.parent.mkdir(parents=True)
    shutil.copytree(trained, run)
    plant_in_run_recipe(run, planted)
    before = files_under(tmp_path)
    assert main(["sweep", str(path), *dry_run, *consent]) == 2
    err = capsys.readouterr().err
    assert not imported(planted) and files_under(tmp_path) == before
    assert f"{run.relative_to(tmp_path)} was trained with other plugin files (plugins.local = " \
        f"['{planted}']" in err, err


# -- consent -------------------------------------------------------------------------------
def _flag(argv, planted, monkeypatch):
    return ["--trust-local-plugins", *argv]


def _flag_at_the_end(argv, planted, monkeypatch):
    return [*argv, "--trust-local-plugins"]


def _settings(argv, planted, monkeypatch, folder=None):
    settings = planted.parent.parent / "settings.toml"
    settings.write_text(f"trusted_plugin_dirs = [{json.dumps(str(folder or planted.parent))}]\n")
    monkeypatch.setenv("MEMCORE_CONFIG", str(settings))
    return argv


def _xdg_settings(argv, planted, monkeypatch):
    home = planted.parent.parent / "config"
    (home / "memcore").mkdir(parents=True)
    (home / "memcore" / "settings.toml").write_text(
        f"trusted_plugin_dirs = [{json.dumps(str(planted.parent))}]\n")
    monkeypatch.delenv("MEMCORE_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return argv


def _plugins_dir(argv, planted, monkeypatch):
    return ["--plugins-dir", str(planted.parent), *argv]


def _plugins_dir_env(argv, planted, monkeypatch):
    monkeypatch.setenv("MEMCORE_PLUGINS_DIR", str(planted.parent))
    return argv


CONSENT = {"flag": _flag, "flag at the end": _flag_at_the_end, "settings file": _settings,
           "XDG settings file": _xdg_settings, "--plugins-dir": _plugins_dir,
           "$MEMCORE_PLUGINS_DIR": _plugins_dir_env}


@pytest.mark.parametrize("consent", CONSENT)
@pytest.mark.parametrize("path", ["validate", "run --dry-run --set", "sample (checkpoint)",
                                  "sweep --dry-run (experiment overrides)"])
def test_consent_imports_the_file(consent, path, tmp_path, planted, trained, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(a) for a in PATHS[path](tmp_path, planted, trained)]
    assert main(CONSENT[consent](argv, planted, monkeypatch)) == 0, capsys.readouterr().err
    assert imported(planted)


def test_a_link_into_a_trusted_folder_is_not_trusted(tmp_path, planted, trained, monkeypatch,
                                                     capsys):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "link.py").symlink_to(planted)
    _settings([], planted, monkeypatch, folder=trusted)
    recipe = recipe_file(tmp_path, trusted / "link.py")
    assert main(["validate", str(recipe)]) == 2
    assert not imported(planted) and "plugins.local[0]" in capsys.readouterr().err


def test_consent_is_for_one_invocation(tmp_path, planted, trained, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(a) for a in _validate(tmp_path, planted, trained)]
    assert main(["--trust-local-plugins", *argv]) == 0
    assert trust.forwarded_flags() == []
    assert main(argv) == 2 and "plugins.local[0]" in capsys.readouterr().err


@pytest.mark.parametrize("text, key", [
    ("trusted_plugin_dirs = [", "cannot be read as a TOML settings file"),
    ('trusted_plugin_dirs = "/plugins"', "trusted_plugin_dirs = '/plugins': expected a list"),
    ('trusted_plugin_dirs = ["plugins"]', "trusted_plugin_dirs[0] = 'plugins': expected an absolute"),
    ("trusted_plugin_dirs = [3]", "trusted_plugin_dirs[0] = 3: expected an absolute"),
    ('trusted_plugins_dirs = ["/plugins"]', "trusted_plugins_dirs: unknown key"),
    (b"\xff\xfe", "cannot be read as a TOML settings file"),
])
def test_a_damaged_settings_file_is_named_with_its_key(text, key, tmp_path, planted, monkeypatch,
                                                       capsys):
    settings = tmp_path / "settings.toml"
    settings.write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.setenv("MEMCORE_CONFIG", str(settings))
    assert main(["validate", str(recipe_file(tmp_path, planted))]) == 2
    err = capsys.readouterr().err
    assert f"error: {settings}" in err and key in err and "Traceback" not in err, err
    assert not imported(planted)


def test_a_sweep_hands_the_flag_to_its_training_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_parser()  # what after commands are checked against
    path = experiment(tmp_path, 'after = ["eval {run}"]\n[[variants]]\nname = "a"\n')
    _, _, runs = plan(path)
    for flag, expected in ((True, ["--trust-local-plugins"]), (False, [])):
        with trust.granted(flag, None):
            train, after = commands_of(runs[0], 0)
        assert train[0] == "run" and train[len(train) - len(expected):] == expected
        assert after[0] == "eval" and "--trust-local-plugins" not in after


# -- after commands ------------------------------------------------------------------------
BAD_AFTER = {
    "--plugins-dir DIR eval {run}": ["is not an evaluation command", "'--plugins-dir' is an option"],
    "eval {run} --plugins-dir=DIR": ["'--plugins-dir=DIR' is an option of memcore itself"],
    "eval {run} --plugins-dir DIR": ["'--plugins-dir' is an option of memcore itself"],
    "eval {run} --trust-local-plugins": ["'--trust-local-plugins' is an option of memcore itself"],
    "eval {run} --trust-local": ["'--trust-local' is an option of memcore itself"],
    "eval {run} --version": ["'--version' is an option of memcore itself"],
    "sample {run} --help": ["'--help' is an option of memcore itself"],
    "run {run}/recipe.resolved.toml": ["'run' is not an evaluation command"],
    "new-plugin x --dir {run}": ["'new-plugin' is not an evaluation command"],
    "sweep {run}/exp.toml": ["'sweep' is not an evaluation command"],
    "compare {run}": ["'compare' is not an evaluation command"],
    "validate {run}/recipe.resolved.toml": ["'validate' is not an evaluation command"],
    "python -c 'import os' {run}": ["'python' is not an evaluation command"],
    "eval {run} --metrics {metric}": ["{metric}: {run} is the only placeholder"],
    "sample {run} --out {RUN}/x.png": ["{RUN}: {run} is the only placeholder"],
    "eval {run} {": ["{: {run} is the only placeholder"],
    "eval": ["the command must name the run as {run}"],
    "": ["empty"],
    "eval '{run}": ["cannot be split into arguments"],
    'eval "{run}': ["cannot be split into arguments"],
    "eval {run}/../..": ["'{run}/../..' leads outside the run's folder"],
    "sample {run} --out {run}/../x.png": ["'{run}/../x.png' leads outside"],
    "sample {run} --out={run}/../../x.png": ["'{run}/../../x.png' leads outside"],
    "sample {run} --out /tmp/x.png": ["'/tmp/x.png' is a path outside the run's folder"],
    "sample {run} --out=/tmp/x.png": ["'/tmp/x.png' is a path outside"],
    "sample {run} --out ~/x.png": ["'~/x.png' is a path outside"],
    "sample {run} --out ../x.png": ["'../x.png' is a path outside"],
    "sample {run} --out sub/x.png": ["'sub/x.png' is a path outside"],
    "sample {run} --out {run}x/y.png": ["'{run}x/y.png' leads outside"],
    "eval {run} --set run.dir={run}/../../..": ["'{run}/../../..' leads outside"],
    "eval {run} --set data.root=/etc": ["'/etc' is a path outside"],
}


@pytest.mark.parametrize("where", ["after", "variants[0].after"])
@pytest.mark.parametrize("command", BAD_AFTER)
@pytest.mark.parametrize("dry_run", [True, False])
def test_an_after_command_that_is_not_an_evaluation_of_its_run_is_refused(
        command, where, dry_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    after = f"after = [{json.dumps(command)}]\n"
    text = (after + '[[variants]]\nname = "a"\n' if where == "after"
            else '[[variants]]\nname = "a"\n' + after)
    path = experiment(tmp_path, text)
    assert main(["sweep", str(path), *(["--dry-run"] if dry_run else [])]) == 2
    err = capsys.readouterr().err
    assert f"{where}[0] = {command!r}" in err and "Traceback" not in err, err
    for expected in BAD_AFTER[command]:
        assert expected in err, err
    assert not (tmp_path / "runs").exists()


def test_an_after_path_through_a_link_in_the_run_folder_is_refused(tmp_path, trained, monkeypatch,
                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    path = experiment(tmp_path, 'seeds = [0]\nafter = ["sample {run} --out {run}/link/x.png"]\n'
                                '[[variants]]\nname = "a"\n')
    run = tmp_path / "runs" / "exp" / "a" / "seed-0"
    run.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (run / "link").symlink_to(tmp_path / "outside")
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "'{run}/link/x.png' leads outside the run's folder" in err and "outside" in err, err


GOOD_AFTER = ["eval {run}", "eval '{run}' --metrics fid@fashion-classifier",
              "eval {run} --set metrics.0.extractor=efficientnet-lite0 --num-samples 100",
              "sample {run} --out {run}/grid.png --n 4", "sample {run} --out={run}/a/b.png",
              "viz attention {run} --out {run}/attention.png", "mfh-eval {run} --episodes 3"]


@pytest.mark.parametrize("command", GOOD_AFTER)
def test_evaluation_commands_inside_the_run_are_accepted(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = experiment(tmp_path, f"after = [{json.dumps(command)}]\n"
                                '[[variants]]\nname = "a"\n')
    assert main(["sweep", str(path), "--dry-run"]) == 0, capsys.readouterr().err


def test_plugins_declare_their_evaluation_commands(isolated_registry):
    _, commands = build_parser()
    assert {"eval", "sample", "viz", "mfh-eval"} <= commands.evaluation
    assert not {"run", "sweep", "compare", "new-plugin", "check", "validate"} & commands.evaluation


# -- a local plugin registering an installed plugin's name --------------------------------
def test_a_local_plugin_taking_an_installed_name_names_both(tmp_path, isolated_registry, capsys):
    clash = tmp_path / "clash.py"
    clash.write_text("import memcore\n\n@memcore.hookimpl\ndef memcore_register_components("
                     "registry):\n    registry.add('loss', 'hinge', lambda options, ctx: None)\n")
    recipe = tiny_recipe(plugins={"local": [str(clash)]})
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(recipe))
    assert main(["--trust-local-plugins", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "plugins.local[0]" in err and "loss 'hinge' is registered by two plugins: 'base' (" \
        in err and f"'local:clash' ({clash})" in err and "neither wins" in err, err
    sys.modules.pop("memcore_local_clash", None)
