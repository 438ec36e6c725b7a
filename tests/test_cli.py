"""Every core command, in-process (exit codes and output)."""
import json

from helpers import ROOT, run_cli


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


def test_show(capsys):
    assert run_cli("show", "loss:r1") == 0
    out = capsys.readouterr().out
    assert "gamma" in out and "[[losses]]" in out and 'kind = "r1"' in out and "every = 16" in out
    assert run_cli("show", "generator:dcgam") == 2
    assert "did you mean 'dcgan'" in capsys.readouterr().err
    assert run_cli("show", "dcgan") == 2
    assert "KIND:NAME" in capsys.readouterr().err


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
