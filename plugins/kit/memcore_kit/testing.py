"""pytest plugin for memcore and its plugins, loaded automatically through the ``pytest11`` entry
point (no conftest needed).

Fixtures:

* ``isolated_registry``: a registry with every installed plugin loaded afresh, private to the test
  (``memcore.get_registry()`` returns it while the test runs).
* ``empty_registry``: the same with no plugin at all, for tests that register their own.
* ``register_plugin(name, **hooks)``: register hook functions as a plugin for one test.
* ``use_plugin(module, name)``: make sure a plugin module is loaded (through its entry point when
  installed, else registered directly), so a plugin's tests pass before and after ``pip install``.
* ``tiny_recipe_dict`` / :func:`tiny_recipe`: a few-step recipe as a dict;
  ``tiny_recipe_file(**sections)`` writes one as TOML into ``tmp_path``.

Functions: :func:`train` runs a recipe for a few steps and returns the run directory;
:func:`run_distributed` runs a function on 2 CPU processes (gloo) and returns each rank's result.
The contract checks per protocol are in :mod:`memcore_kit.contracts`. This module is
``memcore_kit.testing``; ``memcore_kit.testing`` is its public name.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any, Callable

import pytest

from memcore.hookspecs import hookimpl
from memcore.registry import Registry, use_registry
from .distributed import run_distributed  # noqa: F401  (public as memcore_kit.testing.run_distributed)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long runs, excluded by default (run with -m slow)")
    config.addinivalue_line("markers", "distributed: spawns several processes with torchrun")


# -- registries -----------------------------------------------------------------------------
@pytest.fixture
def isolated_registry():
    """A registry with every installed plugin loaded afresh, private to the test."""
    reg = Registry()
    reg.load_entry_points()
    with use_registry(reg):
        yield reg


@pytest.fixture
def empty_registry():
    """A registry with no plugins loaded, private to the test."""
    with use_registry(Registry()) as reg:
        yield reg


@pytest.fixture
def register_plugin(isolated_registry):
    """``register_plugin(name, **hooks)`` registers hook functions as a plugin for one test
    (marked ``@memcore.hookimpl`` here when they are not already)."""
    def register(name, **hooks):
        module = types.ModuleType(name)
        for hook_name, fn in hooks.items():
            marked = hasattr(fn, f"{hookimpl.project_name}_impl")
            setattr(module, hook_name, fn if marked else hookimpl(fn))
        return isolated_registry.register_module(module, name)
    return register


@pytest.fixture
def use_plugin(isolated_registry):
    """``use_plugin(module, name)`` -> PluginInfo: the plugin loaded and working in this test."""
    def use(module, name: str):
        info = isolated_registry.plugins.get(name)
        if info is None or info.status == "disabled":
            info = isolated_registry.register_module(module, name)
        assert info.status == "ok", f"plugin '{name}' {info.error}\n{info.traceback or ''}"
        return info
    return use


# -- recipes --------------------------------------------------------------------------------
def tiny_recipe(**sections) -> dict:
    """A few-step recipe on 256 Fashion-MNIST images with the base plugin's DCGAN, as a dict."""
    recipe = {
        "run": {"root": "runs"},
        "train": {"steps": 4, "batch_size": 8, "seed": 0, "log_every": 2, "sample_every": 4,
                  "checkpoint_every": 2, "grid_size": 16, "progress": False},
        "data": {"kind": "fashion-mnist", "limit": 256},
        "generator": {"kind": "dcgan", "z_dim": 16, "width": 16},
        "discriminator": {"kind": "dcgan", "width": 16},
        "losses": [{"kind": "hinge"}],
    }
    for key, value in sections.items():
        recipe[key] = value
    return recipe


@pytest.fixture
def tiny_recipe_dict():
    return tiny_recipe


@pytest.fixture
def tiny_recipe_file(tmp_path):
    """``tiny_recipe_file(name="tiny", **sections)`` -> path of a tiny recipe written as TOML."""
    import tomli_w

    def write(name: str = "tiny", **sections) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(tomli_w.dumps(tiny_recipe(**sections)))
        return path
    return write


TINY_OVERRIDES = ("train.batch_size=8", "data.limit=64", "train.progress=false",
                  "train.log_every=1", "train.grid_size=16")


def train(recipe, folder, steps: int = 2, overrides=()) -> Path:
    """Run ``recipe`` (a TOML path or a dict) for ``steps`` tiny steps inside ``folder``.

    Returns the run directory; fails the test with memcore's message when the run fails.
    """
    import contextlib
    import io

    import tomli_w

    from memcore.cli import main
    folder = Path(folder)
    if isinstance(recipe, dict):
        path = folder / "recipe.toml"
        path.write_text(tomli_w.dumps(recipe))
        recipe = path
    argv = ["run", str(Path(recipe).resolve()), "--set", f"train.steps={steps}",
            "--set", f"train.checkpoint_every={steps}", "--set", f"train.sample_every={steps}",
            "--set", "run.root=" + str(folder / "runs")]
    for item in (*TINY_OVERRIDES, *overrides):
        argv += ["--set", item]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, f"memcore {' '.join(argv)} exited with {code}: {err.getvalue()[-2000:]}"
    runs = sorted((folder / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return runs[-1]


# -- safe loading ---------------------------------------------------------------------------
class _RunsCommand:
    """Unpickling this runs ``touch marker``: what a loader that executes pickles would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def code_marker(tmp_path):
    """The marker path to give :func:`plant_code_pickle`; the test fails if it exists at the end
    (a planted pickle ran code)."""
    path = tmp_path / "planted-pickle-ran"
    yield path
    assert not path.exists(), "a planted pickle ran code"


def plant_code_pickle(path: Path, marker: Path, fmt: str = "zip") -> Path:
    """Write a file at ``path`` that creates ``marker`` if anything unpickles it with code
    execution; ``fmt`` is torch's ``"zip"`` format, its ``"legacy"`` one or a ``"gzip"``-ed plain
    pickle. A plugin that reads files tests its loader with it: the load must raise a
    MemcoreError and ``marker`` must not exist afterwards."""
    import gzip
    import pickle

    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": _RunsCommand(Path(marker)), "w": torch.zeros(2)}
    if fmt == "gzip":
        with gzip.open(path, "wb") as fh:
            pickle.dump(payload, fh)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=fmt == "zip")
    return path
