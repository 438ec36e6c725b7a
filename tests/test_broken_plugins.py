"""Isolation: deliberately broken plugins, installed as real entry points (a temporary dist-info on
sys.path), are each reported by name while everything else keeps working."""
import sys

import pytest

import memcore
from memcore.cli import main
from memcore.registry import PluginError, Registry, use_registry
from memcore_kit.testing import tiny_recipe, train

GOOD = '''
import memcore


class Zero(memcore.Loss):
    phases = ("G",)

    def __call__(self, ctx):
        return memcore.logits_of(ctx.d_fake).mean() * 0


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("loss", "good-loss", Zero, memcore.LossOptions, help="Adds zero.")
'''

PLUGINS = {  # entry point name -> module source
    "good": GOOD,
    "broken-import": "raise ImportError(\"no module named 'scipy'\")\n",
    "twin-a": '''
import memcore

@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("loss", "twin", "memcore:Loss")
''',
    "twin-b": '''
import memcore

@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("loss", "twin-b-only", "memcore:Loss")
    registry.add("loss", "twin", "memcore:Loss")
''',
    "typo": '''
import memcore

@memcore.hookimpl
def memcore_register_component(registry):
    registry.add("loss", "typo-loss", "memcore:Loss")
''',
    "halfway": '''
import memcore

@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("loss", "halfway-loss", "memcore:Loss")
    raise RuntimeError("config file missing")
''',
    "explodes": '''
import memcore


def explode(options, ctx):
    raise RuntimeError("kaboom")


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("loss", "exploding-loss", explode, memcore.LossOptions)
    registry.add("block", "exploding-block", explode, memcore.BlockOptions)
''',
    "exits": "import sys\nsys.exit(7)\n",
    "future": '''
import memcore

@memcore.hookimpl
def memcore_api_version():
    return "2"

@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("loss", "future-loss", "memcore:Loss")
''',
}


def module_name(plugin):
    return "mc_test_" + plugin.replace("-", "_")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Each plugin as an installed distribution: a module plus a dist-info with its entry point."""
    folder = tmp_path / "site"
    folder.mkdir()
    for plugin, source in PLUGINS.items():
        (folder / f"{module_name(plugin)}.py").write_text(source)
        info = folder / f"memcore_test_{module_name(plugin)}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: memcore-test-{plugin}\n"
                                       "Version: 0.0.1\n")
        (info / "entry_points.txt").write_text(f"[memcore]\n{plugin} = {module_name(plugin)}\n")
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for plugin in PLUGINS:
        sys.modules.pop(module_name(plugin), None)


@pytest.fixture
def registry(site):
    reg = Registry()
    reg.load_entry_points()
    with use_registry(reg):
        yield reg


def status(registry, name):
    info = registry.plugins[name]
    return info.status, info.error or ""


def test_each_broken_plugin_is_reported_by_name(registry, capsys):
    assert status(registry, "good") == ("ok", "")
    assert registry.plugins["good"].dist == "memcore-test-good"
    assert status(registry, "base")[0] == status(registry, "datasets")[0] == "ok"
    assert status(registry, "explodes")[0] == "ok"  # it only fails when a recipe builds it

    state, error = status(registry, "broken-import")
    assert state == "failed" and error == "failed to load: ImportError: no module named 'scipy'"

    state, error = status(registry, "twin-b")
    assert state == "failed" and "'twin-a' (mc_test_twin_a) and 'twin-b' (mc_test_twin_b)" in error
    assert registry.conflicts[("loss", "twin")] == ["twin-a", "twin-b"]
    assert ("loss", "twin-b-only") not in registry.entries  # a failed plugin adds nothing

    state, error = status(registry, "typo")
    assert state == "failed" and "unknown hook" in error and "memcore_register_component" in error
    assert registry.pm.get_plugin("typo") is None and ("loss", "typo-loss") not in registry.entries

    state, error = status(registry, "halfway")
    assert state == "failed" and "RuntimeError: config file missing" in error
    assert ("loss", "halfway-loss") not in registry.entries

    state, error = status(registry, "future")
    assert state == "failed" and "needs memcore API 2, this memcore provides API 1" in error

    assert status(registry, "exits") == ("failed", "failed to load: called sys.exit(7)")

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("broken-import", "twin-b", "typo", "halfway", "future", "exits"):
        line = next(row for row in out.splitlines() if row.startswith(name + " "))
        assert "FAILED: " in line, line
    assert "loss:good-loss" in out


def test_plugins_check_fails_ci_when_a_plugin_failed(registry, capsys):
    assert main(["plugins", "--check"]) == 1
    assert "plugin(s) failed: broken-import, exits, future, halfway, twin-b, typo" in \
        capsys.readouterr().err
    for name in ("broken-import", "exits", "future", "halfway", "twin-b", "typo"):
        registry.plugins[name].status = "disabled"
    assert main(["plugins", "--check"]) == 0


def test_list_shows_a_failed_plugins_components_as_unavailable(registry, capsys):
    assert main(["list", "loss"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "[good]" in rows["good-loss"]
    assert "UNAVAILABLE: plugin 'halfway' failed while registering components: RuntimeError: " \
           "config file missing" in rows["halfway-loss"]
    assert "UNAVAILABLE: plugin 'twin-b' failed" in rows["twin-b-only"]
    assert "UNAVAILABLE: registered by several plugins ('twin-a' (mc_test_twin_a), " \
           "'twin-b' (mc_test_twin_b))" in rows["twin"]
    assert "failed to load: ImportError" in rows["broken-import"]  # nothing registered yet


def test_everything_else_still_trains(registry, tmp_path):
    recipe = tiny_recipe(losses=[{"kind": "hinge"}, {"kind": "good-loss"}])
    run = train(recipe, tmp_path, steps=2)
    assert (run / "checkpoints" / "step-0000002.pt").is_file()


@pytest.mark.parametrize("loss, message", [
    ("halfway-loss", "loss 'halfway-loss' comes from plugin 'halfway', which failed while "
                     "registering components: RuntimeError: config file missing"),
    ("broken-import", "loss 'broken-import' comes from plugin 'broken-import', which failed to "
                      "load: ImportError"),
    ("twin", "loss 'twin' is registered by several plugins ('twin-a' (mc_test_twin_a), "
             "'twin-b' (mc_test_twin_b)); neither wins"),
])
def test_a_recipe_naming_a_component_of_a_failed_plugin_gets_its_error(registry, tmp_path, capsys,
                                                                        loss, message):
    import tomli_w
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(tiny_recipe(losses=[{"kind": loss}])))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def run_and_capture(registry, tmp_path, capsys, **sections):
    import tomli_w
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(tiny_recipe(**sections)))
    code = main(["run", str(path), "--set", "data.limit=16", "--set", f"run.root={tmp_path}/runs"])
    return code, capsys.readouterr().err


def test_a_component_raising_at_build_names_plugin_and_component(registry, tmp_path, capsys):
    code, err = run_and_capture(registry, tmp_path, capsys,
                                losses=[{"kind": "hinge"}, {"kind": "exploding-loss"}])
    assert code != 0 and "Traceback" not in err
    assert "losses[1] 'exploding-loss' (plugin 'explodes') failed to build: RuntimeError: kaboom" \
        in err


def test_a_block_raising_at_build_names_its_plugin(registry, tmp_path, capsys):
    generator = {**tiny_recipe()["generator"], "blocks": [{"kind": "exploding-block", "at": 14}]}
    code, err = run_and_capture(registry, tmp_path, capsys, generator=generator)
    assert code != 0 and "Traceback" not in err
    assert "'exploding-block' (plugin 'explodes') failed to build: RuntimeError: kaboom" in err


# -- environment variables ------------------------------------------------------------------
def load(monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reg = Registry()
    reg.load_entry_points()
    return reg


def test_disable_plugins(site, monkeypatch):
    reg = load(monkeypatch, MEMCORE_DISABLE_PLUGINS="broken-import, typo")
    assert status(reg, "broken-import") == status(reg, "typo") == ("disabled", "")
    assert status(reg, "good") == ("ok", "") and status(reg, "halfway")[0] == "failed"


def test_load_plugins_allow_list(site, monkeypatch):
    reg = load(monkeypatch, MEMCORE_LOAD_PLUGINS="good,datasets")
    assert {n for n, p in reg.plugins.items() if p.status != "disabled"} == {"good", "datasets"}
    assert reg.names("loss") == ["good-loss"] and "fashion-mnist" in reg.names("dataset")
    reg = load(monkeypatch, MEMCORE_LOAD_PLUGINS="")
    assert all(p.status == "disabled" for p in reg.plugins.values()) and not reg.entries


def test_strict_plugins_reraises(site, monkeypatch, capsys):
    monkeypatch.setenv("MEMCORE_LOAD_PLUGINS", "good,broken-import")
    with pytest.raises(PluginError, match="plugin 'broken-import' failed to load: ImportError"):
        load(monkeypatch, MEMCORE_STRICT_PLUGINS="1")
    with use_registry(None):  # the CLI loads afresh: one line, exit status 2, no traceback
        assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "error: plugin 'broken-import' failed to load" in err and "Traceback" not in err
    monkeypatch.setenv("MEMCORE_STRICT_PLUGINS", "0")
    assert status(load(monkeypatch), "broken-import")[0] == "failed"


# -- compatibility and commands -------------------------------------------------------------
def test_api_version_policy(register_plugin):
    same_major = register_plugin("minor-ahead", memcore_api_version=lambda: "1.7")
    assert same_major.status == "ok"
    other_major = register_plugin("old", memcore_api_version=lambda: "0.9")
    assert other_major.status == "failed"
    assert other_major.error == ("is incompatible: PluginError: needs memcore API 0.9, this "
                                 f"memcore provides API {memcore.API_VERSION}")

    def broken():
        raise ValueError("no version")
    assert "failed in memcore_api_version" in register_plugin(
        "confused", memcore_api_version=broken).error


def test_plugin_commands_are_isolated(register_plugin, capsys):
    def add_hello(commands):
        commands.add("hello", "Say hello.", lambda p: p.add_argument("who"),
                     lambda args: print(f"hello {args.who}") or 0)

    def add_broken(commands):
        raise RuntimeError("bad command")
    register_plugin("greeter", memcore_add_commands=add_hello)
    register_plugin("bad-commands", memcore_add_commands=add_broken)
    assert main(["hello", "world"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "hello world\n"
    assert "plugin 'bad-commands' could not add commands: bad command" in captured.err


# -- one-off plugin files (--plugins-dir) -----------------------------------------------------
PLUGIN_FILES = {  # file stem -> source: each broken in its own way, plus a good one
    "good_file": GOOD.replace('"good-loss"', '"file-loss"'),
    "raises": "raise RuntimeError('no GPU here')\n",
    "syntax": "def broken(:\n",
    "registration": PLUGINS["halfway"].replace("halfway-loss", "file-halfway-loss"),
    "duplicate": GOOD,  # good-loss is also registered by the installed 'good' plugin
    "misspelled": PLUGINS["typo"].replace("typo-loss", "file-typo-loss"),
    "exits": "import sys\nsys.exit(7)\n",
}
FILE_ERRORS = {
    "raises": "failed to load: RuntimeError: no GPU here",
    "syntax": "failed to load: SyntaxError",
    "registration": "failed while registering components: RuntimeError: config file missing",
    "duplicate": "loss 'good-loss' is registered by two plugins: 'good' (mc_test_good) and "
                 "'local:duplicate' (",
    "misspelled": "implements an unknown hook",
    "exits": "failed to load: called sys.exit(7)",
}


@pytest.fixture
def plugins_dir(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    for stem, source in PLUGIN_FILES.items():
        (folder / f"{stem}.py").write_text(source)
    yield folder
    for stem in PLUGIN_FILES:
        sys.modules.pop(f"memcore_local_{stem}", None)


@pytest.mark.parametrize("given_as", ["--plugins-dir", "$MEMCORE_PLUGINS_DIR ="])
def test_broken_plugin_files_are_isolated_like_entry_points(registry, plugins_dir, tmp_path,
                                                            capsys, monkeypatch, given_as):
    if given_as == "--plugins-dir":
        assert main(["--plugins-dir", str(plugins_dir), "plugins"]) == 0
    else:
        monkeypatch.setenv("MEMCORE_PLUGINS_DIR", str(plugins_dir))
        assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    for stem, error in FILE_ERRORS.items():
        line = next(row for row in out.splitlines() if row.startswith(f"local:{stem} "))
        assert "FAILED: " in line and error in line, line
        warning = next(row for row in err.splitlines() if f"{plugins_dir / stem}.py" in row)
        assert warning.startswith(f"warning: {given_as} {plugins_dir}: ") and error in warning
    assert registry.plugins["local:good_file"].status == "ok"
    assert main(["--plugins-dir", str(plugins_dir), "plugins", "--check"]) == 1
    capsys.readouterr()

    import tomli_w  # a recipe using the good file's component and none of the broken ones
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(tiny_recipe(losses=[{"kind": "hinge"}, {"kind": "file-loss"}])))
    assert main(["--plugins-dir", str(plugins_dir), "validate", str(path)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_strict_mode_refuses_a_broken_plugin_file(site, plugins_dir, monkeypatch, capsys):
    monkeypatch.setenv("MEMCORE_LOAD_PLUGINS", "good,base,datasets")
    monkeypatch.setenv("MEMCORE_STRICT_PLUGINS", "1")
    with use_registry(None):
        assert main(["--plugins-dir", str(plugins_dir), "plugins"]) == 2
    err = capsys.readouterr().err
    assert "error: plugin 'local:" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A 2-step run made with the installed plugins (its plugins.json records base)."""
    with use_registry(None):  # those alone, not what earlier tests registered
        return train(tiny_recipe(), tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("argv", [["sample", "{run}", "--out", "{tmp}/s.png"], ["eval", "{run}"],
                                  ["run", "--resume", "{run}"]])
def test_a_run_whose_plugin_is_gone_names_it(base_run, argv, tmp_path, monkeypatch, capsys):
    argv = [a.format(run=base_run, tmp=tmp_path) for a in argv]
    monkeypatch.setenv("MEMCORE_DISABLE_PLUGINS", "base")
    with use_registry(None):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown generator 'dcgan'" in err and "Traceback" not in err
    assert (f"the run was made with plugin(s) not loaded now: 'base' 0.1.0 (recorded in "
            f"{base_run / 'plugins.json'})") in err


def test_a_run_without_its_plugin_record_says_what_is_unknown(base_run, tmp_path, monkeypatch,
                                                              capsys):
    copy = tmp_path / "copy"
    (copy / "checkpoints").mkdir(parents=True)
    for checkpoint in (base_run / "checkpoints").glob("step-*.pt"):
        (copy / "checkpoints" / checkpoint.name).write_bytes(checkpoint.read_bytes())
    monkeypatch.setenv("MEMCORE_DISABLE_PLUGINS", "base")
    with use_registry(None):
        assert main(["sample", str(copy), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "unknown generator 'dcgan'" in err and "not loaded now" not in err
