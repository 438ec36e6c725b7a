"""Start-up stays light: plugins register names and strings, heavy modules load when used.

Each check runs the command line in a fresh interpreter, so modules imported by other tests
cannot hide (or fake) an eager import.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from memcore.cli import Commands
from memcore.registry import PluginError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torchvision", "torch_fidelity", "matplotlib", "accelerate", "tensorboard", "torch._dynamo")
# One main recipe per first-party plugin (base: the quickstart's dcgan), each on data this machine
# has (recipes naming a folder, CIFAR-10 or a prior run fail validation without them).
RECIPES = {
    "base": "recipes/quickstart.toml",
    "datasets": "plugins/mfh/recipes/mfh-animal-mnist.toml",  # animal-mnist (quickstart: fashion)
    "fastgan": "plugins/fastgan/recipes/fastgan.toml",
    "fidelity": "plugins/fidelity/recipes/quickstart-fid.toml",
    "fpainter": "plugins/fpainter/recipes/fpa-fashion.toml",
    "memorygan": "plugins/memorygan/recipes/fashion-memorygan.toml",
    "mfh": "plugins/mfh/recipes/mfh-fashion-mnist.toml",
    "moca": "plugins/moca/recipes/moca-fastgan.toml",
    "sagan": "plugins/sagan/recipes/study32.toml",
    "stylegan2": "plugins/stylegan2/recipes/stylegan2-fashion.toml",
}
TOOLS = {"kit", "experiments"}  # plugins that add commands, no component a recipe names

# Runs each argv list through memcore's main() in one process, then prints the heavy modules loaded.
SCRIPT = """
import contextlib, io, json, sys
from memcore.cli import main
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()):
        if main(argv) != 0:
            sys.exit(f"memcore {' '.join(argv)} failed")
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


def loaded_after(commands: list[list[str]], modules) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands), json.dumps(modules)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_recipe_of_every_first_party_plugin_is_checked():
    assert set(RECIPES) | TOOLS == {p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml")}


def test_validate_imports_no_heavy_module():
    commands = [["validate", recipe] for recipe in RECIPES.values()]
    assert loaded_after(commands, [*HEAVY, "sympy"]) == []


def test_version_plugins_and_list_do_not_import_torch():
    commands = [["--version"], ["plugins"], ["plugins", "--json"], ["list"], ["list", "metric"]]
    assert loaded_after(commands, ["torch", *HEAVY]) == []


def test_string_command_handler_is_imported_when_the_command_runs():
    commands = Commands(argparse.ArgumentParser().add_subparsers(dest="command"))
    commands.plugin = "demo"
    commands.add("dump", "help", lambda p: None, "json:dumps")
    commands.add_viz("missing", "help", lambda p: None, "memcore_no_such_module:run")
    assert commands.handlers["dump"]([1]) == "[1]"
    with pytest.raises(PluginError, match="plugin 'demo' cannot import command 'viz missing'"):
        commands.handlers[("viz", "missing")](argparse.Namespace(viz_command="missing"))
