"""A run's checkpoints by step; the networks are rebuilt by ``memcore.load_run``."""
from __future__ import annotations

import re
from pathlib import Path

import memcore

_STEP = re.compile(r"step-(\d+)\.pt$")


def checkpoint_files(run_dir: Path) -> dict[int, Path]:
    """step -> checkpoint file of a run directory."""
    found = {}
    for p in (Path(run_dir) / "checkpoints").glob("step-*.pt"):
        if m := _STEP.search(p.name):
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def resolve_checkpoint(run: str | Path, step: int | None = None) -> Path:
    path = Path(run).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise memcore.MemcoreError(f"no such run directory or checkpoint: {path}")
    found = checkpoint_files(path)
    if not found:
        raise memcore.MemcoreError(f"{path} holds no checkpoint (looked in {path / 'checkpoints'})")
    if step is None:
        return found[max(found)]
    if step not in found:
        raise memcore.MemcoreError(f"--step {step}: {path} has checkpoints at steps "
                                   f"{', '.join(map(str, found))}")
    return found[step]


def load_networks(run: str | Path, step: int | None = None, use_ema: bool = True):
    """(G, D, state) in eval mode on CPU; G is the EMA generator when the run has one."""
    loaded = memcore.load_run(resolve_checkpoint(run, step), use_ema=use_ema)
    return loaded.G, loaded.models.D, loaded.state
