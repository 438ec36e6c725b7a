"""Run directories: numbered folders holding the resolved recipe, plugin versions and outputs."""
from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

from . import __version__, safewrite
from .errors import MemcoreError
from .recipe import Recipe, dumps
from .registry import get_registry


def plugin_versions() -> dict[str, str]:
    return {name: (info.version or "local") for name, info in sorted(get_registry().plugins.items())
            if info.status == "ok"}


@contextlib.contextmanager
def naming_unloaded_plugins(run_dir: Path):
    """Around reading a run's recipe: an unknown component there most likely came from a plugin
    the run was made with that is not loaded now, so the error names the plugins its
    ``plugins.json`` records and this memcore lacks."""
    try:
        yield
    except MemcoreError as exc:
        try:
            recorded = json.loads((Path(run_dir) / "plugins.json").read_text())["plugins"]
            loaded = plugin_versions()
            missing = [f"'{name}' {version}" for name, version in recorded.items()
                       if name not in loaded]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no or a damaged record
            missing = []
        if not missing or "unknown " not in str(exc):
            raise
        raise MemcoreError(f"{exc}\nthe run was made with plugin(s) not loaded now: "
                           f"{', '.join(missing)} (recorded in {Path(run_dir) / 'plugins.json'}); "
                           "install them, or enable them (MEMCORE_DISABLE_PLUGINS, "
                           "MEMCORE_LOAD_PLUGINS)") from None


def new_run_dir(recipe: Recipe, recipe_path: str | None) -> Path:
    if recipe.run.dir:
        return Path(recipe.run.dir).expanduser()
    name = recipe.run.name or (Path(recipe_path).stem if recipe_path else "run")
    root = Path(recipe.run.root).expanduser()
    taken = [int(m.group(1)) for p in root.glob("*") if (m := re.match(r"(\d{4,})-", p.name))] \
        if root.exists() else []
    return root / f"{max(taken, default=0) + 1:04d}-{name}"


# What a run writes into its directory (plugins' viz outputs aside).
RUN_FILES = ("recipe.resolved.toml", "plugins.json", "log.jsonl", "metrics.jsonl", "report.md",
             "losses.png", "metric-*.png", "eval-step-*.json", "samples", "checkpoints",
             "tensorboard")
# What a run writes into its subfolders; anything else there is the user's, and stays.
# ``.*.tmp-*``: what a kill during a write left (safewrite's temporary names).
RUN_FOLDER_FILES = {"samples": ("step-*.png", "latest.png", ".*.tmp-*"),
                    "checkpoints": ("step-*.pt", "best.pt", ".*.tmp-*"),
                    "tensorboard": ("events.out.tfevents.*",)}


def run_files(run_dir: Path) -> list[Path]:
    """The entries of ``run_dir`` that a memcore run wrote."""
    run_dir = Path(run_dir)
    return sorted({p for pattern in RUN_FILES for p in run_dir.glob(pattern)}) \
        if run_dir.is_dir() else []


def where(recipe: Recipe) -> str:
    """The recipe key that chose the run directory (for messages)."""
    return f"run.dir = {recipe.run.dir!r}" if recipe.run.dir else f"run.root = {recipe.run.root!r}"


def check_new_run_dir(run_dir: Path, recipe: Recipe, overwrite: bool) -> None:
    """Refuse, before anything is built, a run directory that cannot take a new run."""
    run_dir = Path(run_dir)
    blocker = next((p for p in [run_dir, *run_dir.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise MemcoreError(f"{where(recipe)}: {blocker} is an existing file, not a folder; "
                           "choose another run directory")
    earlier = run_files(run_dir)
    if earlier and not overwrite:
        names = ", ".join(p.name for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise MemcoreError(f"{where(recipe)}: {run_dir} already holds a run ({names}); continue "
                           f"it with `memcore run --resume {run_dir}`, choose another run.dir, "
                           "or pass --overwrite to replace it")


def remove_run_files(run_dir: Path, keep=()) -> list[str]:
    """Delete what a run wrote into ``run_dir`` (except the names in ``keep``); other files stay,
    in its subfolders too (:func:`foreign_files` names them). A link is removed, never followed."""
    gone = []
    for path in run_files(run_dir):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            _remove_folder_files(path)
        else:
            path.unlink()
        gone.append(path.name)
    return gone


def _remove_folder_files(folder: Path) -> None:
    for pattern in RUN_FOLDER_FILES.get(folder.name, ()):
        for path in folder.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    with contextlib.suppress(OSError):  # not empty: the user's files stay with their folder
        folder.rmdir()


def foreign_files(run_dir: Path) -> list[str]:
    """Files in a run's subfolders that a run did not write (what ``--overwrite`` leaves)."""
    return sorted(str(p.relative_to(run_dir)) for name in RUN_FOLDER_FILES
                  if (run_dir / name).is_dir() and not (run_dir / name).is_symlink()
                  for p in (run_dir / name).iterdir())


def write_run_files(run_dir: Path, resolved: dict) -> None:
    safewrite.write_text(run_dir / "recipe.resolved.toml", dumps(resolved))
    safewrite.write_text(run_dir / "plugins.json", json.dumps(
        {"memcore": __version__, "plugins": plugin_versions()}, indent=2))


def check_run_tree(run_dir: Path) -> None:
    """Refuse, before training, a run folder whose subfolders or logs are links (planted: a
    folder memcore writes into, or a log it appends to, is never followed out of the run)."""
    for name in [*RUN_FOLDER_FILES, "log.jsonl", "metrics.jsonl"]:
        safewrite.check_not_link(Path(run_dir) / name)


def create_run_dir(run_dir: Path, resolved: dict, recipe: Recipe) -> Path | None:
    """Make a new run's directory with its recipe. Returns the outermost folder this made
    (``run.root`` too, if it was missing), for :func:`discard_run_dir`; None if all existed.

    A failed write (read-only or full file system) removes what it made and names the key.
    """
    run_dir = Path(run_dir)
    made = next((p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()), None)
    try:
        write_run_files(run_dir, resolved)
    except BaseException as exc:  # an interrupt too: no half-made run directory
        discard_run_dir(run_dir, made)
        if not isinstance(exc, OSError):
            raise
        raise MemcoreError(f"{where(recipe)}: cannot create the run directory {run_dir}: "
                           f"{exc.strerror or exc}"
                           f"{f' ({exc.filename})' if exc.filename else ''}") from None
    return made


def discard_run_dir(run_dir: Path, made: Path | None) -> None:
    """Undo a run that never trained: its files go, and the folders that it made."""
    run_dir = Path(run_dir)
    try:
        remove_run_files(run_dir)
        if made is None:
            return
        for folder in [run_dir, *run_dir.parents]:
            folder.rmdir()  # only empty ones: an error stops the climb
            if folder == made:
                break
    except OSError:  # a read-only file system, or a folder something else wrote into
        pass
