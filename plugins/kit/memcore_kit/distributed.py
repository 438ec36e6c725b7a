"""Run a function or a script on several CPU processes (torchrun, gloo) and collect the results.

Used by the distributed contract checks and by tests (``memcore_kit.testing.run_distributed``).
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
                # trusted-pickle: our own children wrote these into this private temp dir
                results.append(pickle.load(fh))
        return results
