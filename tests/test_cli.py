"""Every core command, in-process (exit codes and output)."""
import json
import re

import attrs
import pytest
import tomli

from helpers import ROOT, run_cli
from memcore.registry import KINDS, PluginError, Registry, get_registry


def test_version_lists_plugins(capsys):
    assert run_cli("--version") == 0
    out = capsys.readouterr().out
    assert out.startswith("memcore 0.1.0") and "registered plugins:" in out and "base 0.1.0" in out


def test_plugins_table_and_json(capsys):
    assert run_cli("plugins") == 0
    assert "generator:dcgan" in capsys.readouterr().out
    assert run_cli("plugins", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    base = next(r for r in rows if r["name"] == "base")
    assert base["status"] == "ok" and base["dist"] == "memcore-base" and base["version"] == "0.1.0"


def test_list(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    assert "dataset:" in out and "fashion-mnist" in out and "loss:" in out
    assert run_cli("list", "loss") == 0
    out = capsys.readouterr().out
    assert "hinge" in out and "fashion-mnist" not in out
    assert run_cli("list", "losss") == 2
    assert "did you mean 'loss'" in capsys.readouterr().err


def test_list_of_each_kind_names_its_components(capsys):
    for kind in KINDS:  # the first-party plugins register every kind
        assert run_cli("list", kind) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"{kind}:" and len(lines) > 1, kind


def test_a_kind_nobody_registers_is_listed_as_none(capsys, empty_registry):
    assert run_cli("list", "block") == 0
    assert capsys.readouterr().out.startswith("block: none (no installed plugin registers one")


def test_memory_is_no_kind_and_says_where_memories_live(capsys):
    for argv in [("list", "memory"), ("list", "memry"), ("show", "memory:fifo")]:
        assert run_cli(*argv) == 2
        err = capsys.readouterr().err
        assert "unknown kind 'mem" in err and "lives inside the block, generator or " \
            "discriminator" in err and "(kinds: generator," in err, argv
    with pytest.raises(PluginError, match="registers unknown kind 'memory'; a memory"):
        Registry().add("memory", "fifo", "m:Fifo")


def test_show(capsys):
    assert run_cli("show", "loss:r1") == 0
    out = capsys.readouterr().out
    assert "gamma" in out and "[[losses]]" in out and 'kind = "r1"' in out and "every = 16" in out
    assert run_cli("show", "generator:dcgam") == 2
    assert "did you mean 'dcgan'" in capsys.readouterr().err
    assert run_cli("show", "dcgan") == 2
    assert "KIND:NAME" in capsys.readouterr().err


def test_every_snippet_is_toml_with_each_required_key_marked(capsys):
    registry = get_registry()
    for kind, name in sorted(registry.entries):
        assert run_cli("show", f"{kind}:{name}") == 0
        snippet = capsys.readouterr().out.split("# TOML\n", 1)[1]
        table = tomli.loads(snippet)
        table = next(iter(table.values()))
        table = table[0] if isinstance(table, list) else table
        table = table.get("blocks", [table])[0] if kind == "block" else table
        for f in attrs.fields(registry.get(kind, name).load_config()):
            if f.default is attrs.NOTHING:
                assert f.name in table, (kind, name, f.name)
                assert re.search(rf"^{f.name} = .*  # required$", snippet, re.M), (kind, name)


def test_a_required_option_without_example_gets_a_placeholder(capsys):
    assert run_cli("show", "dataset:image-folder") == 0
    assert '[data]\nkind = "image-folder"\npath = "<path>"  # required\n' in capsys.readouterr().out


def test_validate_prints_resolved(capsys):
    assert run_cli("validate", ROOT / "recipes" / "quickstart.toml") == 0
    out = capsys.readouterr().out
    assert 'kind = "fashion-mnist"' in out and "[ema]" in out and "keep_last = 3" in out


def test_no_command_prints_help(capsys):
    assert run_cli() == 2
    assert "usage: memcore" in capsys.readouterr().out


def test_missing_run_dir_errors(capsys, tmp_path):
    assert run_cli("sample", tmp_path / "nope") == 2
    assert "no such run directory" in capsys.readouterr().err
    assert run_cli("run", "--resume", tmp_path) == 2
    assert "not a memcore run directory" in capsys.readouterr().err
    assert run_cli("eval", tmp_path) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def test_plugins_dir_loads_local_files(tmp_path, capsys, isolated_registry):
    (tmp_path / "gain.py").write_text(
        "import memcore\n"
        "@memcore.hookimpl\n"
        "def memcore_register_components(registry):\n"
        "    registry.add('loss', 'zero-loss', lambda o, c: None, help='does nothing')\n")
    assert run_cli("--plugins-dir", tmp_path, "list", "loss") == 0
    assert "zero-loss" in capsys.readouterr().out and "local:gain" in isolated_registry.plugins
    assert run_cli("--plugins-dir", tmp_path / "nope", "list") == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "broken.py").write_text("raise ImportError('missing dependency torch_foo')")
    assert run_cli("--plugins-dir", tmp_path, "list") == 0  # isolated, like an entry point
    assert "local:broken             failed to load: ImportError: missing dependency torch_foo" \
        in capsys.readouterr().out
