"""Role-keyed checkpoints, written atomically and read with ``weights_only=True``.

One file holds everything a bitwise resume needs: every network (memory buffers included), both
optimizers, the GradScaler, the augmentation and loss state, the step, the data position, the RNG
of every rank, the resolved recipe and the plugin versions.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from . import safewrite
from .errors import MemcoreError
from .safeload import load_tensors

FORMAT = 1
_NAME = re.compile(r"step-(\d+)\.pt$")


def save_atomic(obj, path: Path, inside: Path | None = None) -> None:
    """Write ``obj`` to ``path`` through a temporary file (:func:`memcore.safewrite.replacing`),
    so ``path`` is never half-written nor a link followed (``inside``: the run folder).

    Whatever stops the write (a full disk, an interrupt) removes the temporary file and leaves
    the checkpoints already there as they were.
    """
    path = Path(path)
    try:
        with safewrite.replacing(path, inside) as tmp:
            torch.save(obj, tmp)
    except BaseException as exc:
        if _is_write_failure(exc):
            raise MemcoreError(_write_failure(path, exc, _nbytes(obj))) from None
        raise


def _is_write_failure(exc: BaseException) -> bool:
    # torch's zip writer reports a failed write (ENOSPC, EIO) as a RuntimeError without errno
    # ("basic_ios::clear: iostream error", then "[enforce fail at inline_container.cc] unexpected
    # pos" while closing the file), so the whole chain is looked at.
    markers = ("PytorchStreamWriter", "iostream error", "inline_container", "file write failed")
    return any(isinstance(e, OSError) or (isinstance(e, RuntimeError)
                                          and any(m in str(e) for m in markers))
               for e in _chain(exc))


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, innermost last."""
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _write_failure(path: Path, exc: BaseException, needed: int) -> str:
    root = _chain(exc)[-1]  # the first failure: the later ones are torch cleaning up after it
    reason = root.strerror if isinstance(root, OSError) and root.strerror else str(root).strip()
    try:
        free = shutil.disk_usage(path.parent).free
        space = f"{_mb(free)} free there" + (": the disk is full" if free < needed else "")
    except OSError:
        space = "free space unknown"
    kept = [p for p in checkpoints(path.parent.parent) if p != path]
    last = f"the last good checkpoint {kept[-1]} is kept" if kept else "no earlier checkpoint"
    return (f"cannot write checkpoint {path}: {reason.splitlines()[0][:200]}. It needs about "
            f"{_mb(needed)} ({space}); {last}. Free some space, then "
            f"`memcore run --resume {path.parent.parent}`")


def _nbytes(obj) -> int:
    """Bytes of the tensors in a nested state (what a checkpoint's size is made of)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return len(obj) if isinstance(obj, (str, bytes)) else 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def clean_leftovers(run_dir: Path) -> list[str]:
    """Remove temporary checkpoint files an interrupted or failed write left; say what went."""
    folder = Path(run_dir) / "checkpoints"
    gone = []
    for tmp in sorted(folder.glob(".step-*.pt.tmp-*")) + sorted(folder.glob(".best.pt.tmp-*")):
        size = tmp.stat().st_size
        tmp.unlink(missing_ok=True)
        gone.append(f"{tmp.name} ({_mb(size)})")
    return gone


def load(path: Path, map_location="cpu") -> dict:
    state = load_tensors(path, what="checkpoint", map_location=map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise MemcoreError(f"{path} is not a memcore checkpoint (format {FORMAT})")
    damaged = [f"{key} ({kind.__name__})" for key, kind in _ENTRIES.items()
               if not isinstance(state.get(key), kind)]
    damaged += [f"models.{role} (dict)" for role in ("G", "D")
                if not damaged and not isinstance(state["models"].get(role), dict)]
    if damaged:
        raise MemcoreError(f"checkpoint {path}: missing or malformed {', '.join(damaged)}; the "
                           "file is damaged or was not written by memcore")
    return state


# What every reader of a checkpoint relies on; a resume needs the rest too (Trainer._load).
_ENTRIES = {"step": int, "models": dict}


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
    try:
        with safewrite.replacing(best) as tmp:
            shutil.copyfile(path, tmp)
    except BaseException as exc:
        if isinstance(exc, OSError):
            raise MemcoreError(_write_failure(best, exc, path.stat().st_size)) from None
        raise


def embedded_recipe(state: dict, path: Path) -> dict:
    """The resolved recipe a checkpoint carries, as a dict; unreadable is a clean error."""
    import tomli
    text = state.get("recipe")
    try:
        if not isinstance(text, str):
            raise ValueError(f"expected TOML text, found {type(text).__name__}")
        return tomli.loads(text)
    except ValueError as exc:  # TOMLDecodeError is a ValueError
        raise MemcoreError(f"checkpoint {path}: its embedded recipe cannot be read "
                           f"({type(exc).__name__}: {exc}); the file is damaged or not written "
                           "by memcore") from None


def recipe_differences(state: dict, current: dict) -> list[str]:
    """The architecture keys (generator, discriminator, image shape) on which the recipe a
    checkpoint carries and ``current`` disagree (none when the carried one is unreadable: then
    the tensors alone decide)."""
    try:
        saved = embedded_recipe(state, Path("checkpoint"))
    except MemcoreError:
        saved = {}
    flat_saved, flat_current = _flat(saved), _flat(current)
    keys = [k for k in dict.fromkeys([*flat_saved, *flat_current])
            if k.split(".")[0] in ("generator", "discriminator")
            or k in ("data.kind", "data.resolution", "data.channels")]
    missing = "(not set)"
    return [f"{k} = {flat_saved.get(k, missing)!r} in the checkpoint, "
            f"{flat_current.get(k, missing)!r} here"
            for k in keys if flat_saved.get(k, missing) != flat_current.get(k, missing)]


def _flat(table, prefix: str = "") -> dict:
    if isinstance(table, dict):
        items = table.items()
    elif isinstance(table, list) and all(isinstance(v, dict) for v in table):
        items = ((str(i), v) for i, v in enumerate(table))
    else:
        return {prefix[:-1]: table}
    out = {}
    for key, value in items:
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def tensor_mismatches(net: torch.nn.Module, saved: dict, allow_missing: bool = False) -> list[str]:
    """Tensors of ``saved`` that do not fit ``net``: other shapes, names ``net`` lacks and
    (unless ``allow_missing``) names of ``net`` that ``saved`` lacks, in the network's order."""
    own = net.state_dict()
    out = [f"{k}: {_shape(saved[k])} in the checkpoint, {_shape(v)} in the network"
           for k, v in own.items() if k in saved and _shape(saved[k]) != _shape(v)]
    out += [f"{k} {_shape(v)}: in the checkpoint only" for k, v in saved.items() if k not in own]
    if not allow_missing:
        out += [f"{k} {_shape(v)}: in the network only" for k, v in own.items() if k not in saved]
    return out


def _shape(t) -> tuple:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ()


def refuse_foreign(source: str, mismatches: dict[str, list[str]], differences: list[str]) -> None:
    """Raise the error for a checkpoint whose tensors do not fit, if any role has mismatches."""
    bad = {role: found for role, found in mismatches.items() if found}
    if not bad:
        return
    lines = [f"{source} does not fit the networks of this recipe; nothing was loaded."]
    if differences:
        lines.append("recipe differences: " + "; ".join(differences[:6])
                     + (f" (+{len(differences) - 6} more)" if len(differences) > 6 else ""))
    for role, found in bad.items():
        more = f" (+{len(found) - 5} more)" if len(found) > 5 else ""
        lines.append(f"{role}: " + "; ".join(found[:5]) + more)
    raise MemcoreError("\n  ".join(lines))


_ROLES = ("G", "D", "G_ema", "augment")


def restore_models(models, state: dict, source: str = "checkpoint",
                   recipe: dict | None = None) -> None:
    """Load G, D, the EMA generator and the augmentation of a :class:`memcore.Models`.

    All or nothing: when any saved network does not fit (another architecture or width), the
    error names the recipe differences against ``recipe`` and the first mismatched tensors.
    """
    saved = state["models"]
    nets = {role: getattr(models, role) for role in _ROLES}
    pairs = {role: (net, saved[role]) for role, net in nets.items()
             if net is not None and role in saved}
    for role in ("G", "D"):
        if role not in saved:
            raise MemcoreError(f"{source}: holds no {role} network")
    mismatches = {role: tensor_mismatches(net, sd) for role, (net, sd) in pairs.items()}
    differences = recipe_differences(state, recipe) if recipe is not None else []
    refuse_foreign(source, mismatches, differences)
    for net, sd in pairs.values():
        net.load_state_dict(sd)
