"""Role-keyed checkpoints, written atomically and read with ``weights_only=True``.

One file holds everything a bitwise resume needs: every network (memory buffers included), both
optimizers, the GradScaler, the augmentation and loss state, the step, the data position, the RNG
of every rank, the resolved recipe and the plugin versions.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from .errors import MemcoreError

FORMAT = 1
_NAME = re.compile(r"step-(\d+)\.pt$")


def save_atomic(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path, map_location="cpu") -> dict:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise MemcoreError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise MemcoreError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MemcoreError(f"{path} is not a memcore checkpoint (format {FORMAT})")
    return state


def checkpoints(run_dir: Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt") if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def latest(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def resolve(path_or_run: str | Path, prefer: str = "latest") -> Path:
    """A checkpoint file from a file path or a run directory (its latest, or ``best.pt``)."""
    p = Path(path_or_run).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        best = p / "checkpoints" / "best.pt"
        if prefer == "best" and best.exists():
            return best
        found = latest(p)
        if found is not None:
            return found
        raise MemcoreError(f"{p} holds no checkpoint (looked in {p / 'checkpoints'})")
    raise MemcoreError(f"no such run directory or checkpoint: {p}")


def prune(run_dir: Path, keep: int) -> None:
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)


def mark_best(path: Path) -> None:
    best = path.parent / "best.pt"
    tmp = best.with_name(".best.pt.tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, best)


def restore_models(models, state: dict) -> None:
    """Load G, D, the EMA generator and the augmentation of a :class:`memcore.Models`."""
    saved = state["models"]
    models.G.load_state_dict(saved["G"])
    models.D.load_state_dict(saved["D"])
    if models.G_ema is not None and "G_ema" in saved:
        models.G_ema.load_state_dict(saved["G_ema"])
    if models.augment is not None and "augment" in saved:
        models.augment.load_state_dict(saved["augment"])
