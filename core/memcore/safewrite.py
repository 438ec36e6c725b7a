"""Writes that stay where they belong: never through a link planted in a run folder.

A run folder, a sweep root or a checkpoint may come from elsewhere (an archive, a shared disk),
so a link inside it is data, not the user's choice. Every memcore writer goes through here:

- a whole file (a JSON, a PNG, a checkpoint, the report) is written to a fresh temporary file
  beside it and renamed over the name: a link there is replaced, its target never touched, and a
  kill mid-write leaves the old file, never half a new one;
- an append (``log.jsonl``, ``metrics.jsonl``, ``sweep.log``) opens the file itself without
  following a link; a link, or anything but a single regular file there, is refused (exit 2,
  naming the file): replacing it would silently drop the log it stands for;
- a subfolder memcore writes into (``samples/``, ``checkpoints/``, ``tensorboard/``, a
  variant's folder of a sweep) must not be a link: refused (exit 2, naming the folder).

``inside`` is the folder the user named (the run folder, the sweep root): links above it are the
user's own choice and followed; links from it down are refused. A process that swaps a folder for
a link while memcore writes into it is outside this model (it could as well write there itself).
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import MemcoreError

MAX_NAME_BYTES = 255  # a file name's limit on Linux and macOS file systems
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def name_problem(name: object) -> str | None:
    """What a name that becomes one folder inside another must be (None if ``name`` is fine);
    worded as what was expected, as the recipe checks are."""
    if not isinstance(name, str):
        return f"a string, got {type(name).__name__}"
    if name in ("", ".", ".."):
        return f"a folder name, not {name!r}"
    bad = sorted({c for c in name if c in "/\\\0"})
    if bad:
        return f"a folder name, without {' or '.join(map(repr, bad))}"
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        return f"a folder name of at most {MAX_NAME_BYTES} bytes (got {size})"
    return None


def _link_error(path: Path, what: str) -> MemcoreError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return MemcoreError(f"{path} is a symbolic link{target}: memcore does not write {what} a link "
                        "in a run folder; remove it (or the folder) and try again")


def _below(path: Path, inside: Path | None) -> list[Path]:
    """The folders from just below ``inside`` down to ``path`` (none if ``inside`` is not above)."""
    path = Path(path)
    inside = Path(inside) if inside is not None else path
    return [] if inside not in path.parents else \
        [inside.joinpath(*path.relative_to(inside).parts[:i + 1])
         for i in range(len(path.relative_to(inside).parts))]


def check_folder(path: Path, inside: Path | None = None) -> None:
    """Refuse a link among the folders between ``inside`` and ``path`` that exist already."""
    for current in _below(path, inside):
        if current.is_symlink():
            raise _link_error(current, "into")


def folder(path: Path, inside: Path | None = None) -> Path:
    """Make ``path`` (and the folders between ``inside`` and it) and return it; a link among them
    is refused. ``inside`` defaults to ``path`` itself: only what is below it is checked."""
    check_folder(path, inside)
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


@contextlib.contextmanager
def replacing(path: Path, inside: Path | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the whole new file to (by name, with any
    library: its suffix is kept so formats are guessed right); renamed over ``path`` when the
    block ends without an error, removed otherwise."""
    path = Path(path)
    parent = folder(path.parent, inside if inside is not None else path.parent)
    # mkstemp creates the name exclusively: a link planted under a guessable name is never opened.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make every run file private
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes, inside: Path | None = None) -> Path:
    with replacing(path, inside) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path, text: str, inside: Path | None = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), inside)


def open_append(path: Path, inside: Path | None = None):
    """``path`` opened for appending text, created if missing; a link there, or anything but one
    regular file of its own (a folder, a FIFO, a hard link shared with another file), is refused."""
    path = Path(path)
    folder(path.parent, inside if inside is not None else path.parent)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise _link_error(path, "through") from None
        if path.exists():  # a folder, or a FIFO without a reader
            raise MemcoreError(f"{path} is not a regular file: memcore only appends to a file "
                               "of its own; move it away and try again") from None
        raise
    info = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode) else
               f"has {info.st_nlink} hard links (it is also a file elsewhere)"
               if info.st_nlink > 1 else None)
    if problem:
        os.close(fd)
        raise MemcoreError(f"{path} {problem}: memcore only appends to a file of its own; move it "
                           "away and try again")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


def check_not_link(path: Path) -> None:
    """Refuse a link where memcore is about to read and rewrite its own file (a log on resume)."""
    if Path(path).is_symlink():
        raise _link_error(Path(path), "through")


def output_problem(path: Path, suffixes: tuple[str, ...] = ()) -> str | None:
    """What is wrong with ``path`` as a file the user asked for (``--out``), or None: not a
    folder, one of ``suffixes`` (any if none are given), in a folder that can be made."""
    path = Path(path).expanduser()
    if "\0" in str(path) or not path.name:
        return "expected a file name"
    if path.is_dir():
        return f"is a folder; expected a file path, e.g. {path / ('out' + (suffixes or ('',))[0])}"
    if suffixes and path.suffix.lower() not in suffixes:
        return (f"expected a file name ending in {' or '.join(suffixes)}, got "
                f"{path.suffix or 'no extension'!r}")
    return place_problem(path.parent)


def output_folder_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as a folder the user asked for (``--out``), or None."""
    path = Path(path).expanduser()
    if "\0" in str(path) or not str(path):
        return "expected a folder name"
    if path.exists() and not path.is_dir():
        return "is an existing file; expected a folder"
    return place_problem(path)


def place_problem(folder: Path) -> str | None:
    """Why nothing can be created at ``folder`` (its nearest existing folder is a file, or
    read-only), or None."""
    existing = next(p for p in [Path(folder), *Path(folder).parents] if p.exists() or p == p.parent)
    if not existing.is_dir():
        return f"expected a writable place: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"expected a writable place: {existing} is not writable (read-only)"
    try:  # os.access says yes to root everywhere, even where nothing can be made (/proc)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"expected a writable place: nothing can be created in {existing} " \
            f"({exc.strerror or exc})"
    return None


def check_output(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """:func:`output_problem` as an error naming ``option``, before anything is written."""
    problem = output_problem(path, suffixes)
    if problem:
        raise MemcoreError(f"{option} {path}: {problem}")
    return Path(path).expanduser()
