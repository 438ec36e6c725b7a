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
The contract checks per protocol are in :mod:`memcore.contracts`.
"""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable

import pytest

from .contracts import (check_block, check_dataset, check_discriminator, check_generator,  # noqa: F401
                        check_loss, check_memory, check_memory_distributed, check_metric,
                        factory_of)
from .hookspecs import hookimpl
from .registry import Registry, use_registry


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

    from .cli import main
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


# -- 2-process CPU runner -------------------------------------------------------------------
_LAUNCHER = '''
import importlib, importlib.util, os, pickle, sys


def load(name, file):
    try:
        return importlib.import_module(name)
    except ImportError:  # e.g. a test module imported by pytest under a name not on sys.path
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module


with open(sys.argv[1], "rb") as fh:
    (module_name, qualname), modules, args = pickle.load(fh)
for name, file in modules.items():
    load(name, file)
fn = sys.modules[module_name]
for part in qualname.split("."):
    fn = getattr(fn, part)
import torch.distributed as tdist
tdist.init_process_group("gloo")
result = fn(*pickle.loads(args))
with open(os.path.join(sys.argv[2], f"rank{tdist.get_rank()}.pkl"), "wb") as fh:
    pickle.dump(result, fh)
tdist.barrier()
tdist.barrier()  # no rank leaves while another still talks to it
tdist.destroy_process_group()
'''


class _ModuleRecorder(pickle.Pickler):
    """Pickles the arguments and notes the module of every class and function in them, so the
    children can import (or load from file) those modules before unpickling."""

    def __init__(self, fh, modules: dict):
        super().__init__(fh)
        self.modules = modules

    def reducer_override(self, obj):
        if isinstance(obj, (type, types.FunctionType)):
            module = sys.modules.get(getattr(obj, "__module__", None) or "")
            if module is not None:
                self.modules[module.__name__] = getattr(module, "__file__", None)
        return NotImplemented


def run_distributed(script_or_fn: str | Path | Callable, nproc: int = 2, *, args: tuple = (),
                    env: dict | None = None, timeout: float = 300) -> list[Any]:
    """Run on ``nproc`` CPU processes with ``python -m torch.distributed.run`` and gloo.

    A function (defined at the top level of a module) is called as ``fn(*args)`` on every rank
    after ``init_process_group("gloo")``, and the list of its per-rank return values (pickled) comes
    back. A script path is run as is (it initialises the group itself) and ``[CompletedProcess]``
    comes back. The children see this process's ``sys.path``; ``OMP_NUM_THREADS`` is 1. A
    failure fails the test with the tail of the processes' output.
    """
    with tempfile.TemporaryDirectory(prefix="memcore-dist-") as folder:
        folder = Path(folder)
        if callable(script_or_fn):
            fn = script_or_fn
            modules = {fn.__module__: getattr(sys.modules[fn.__module__], "__file__", None)}
            packed = io.BytesIO()
            _ModuleRecorder(packed, modules).dump(tuple(args))
            launcher = folder / "launch.py"
            launcher.write_text(_LAUNCHER)
            spec = folder / "call.pkl"
            with open(spec, "wb") as fh:
                pickle.dump(((fn.__module__, fn.__qualname__), modules, packed.getvalue()), fh)
            target = [str(launcher), str(spec), str(folder)]
        else:
            target = [str(script_or_fn), *map(str, args)]
        paths = [p for p in sys.path if p and Path(p).exists()]
        child_env = {**os.environ, "OMP_NUM_THREADS": "1",
                     "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc), *target]
        proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, (f"{nproc}-process run failed (exit {proc.returncode}):\n"
                                      f"{(proc.stdout + proc.stderr)[-4000:]}")
        if not callable(script_or_fn):
            return [proc]
        results = []
        for rank in range(nproc):
            with open(folder / f"rank{rank}.pkl", "rb") as fh:
                results.append(pickle.load(fh))
        return results
