"""Argument types for memcore's commands and the commands plugins add.

Every numeric or path argument is parsed by one of these, so a bad value ends in argparse's own
refusal: exit 2, ``argument --n: expected ..., got '0'``, before anything is loaded or written.
Use them in a plugin's ``configure(parser)``::

    from memcore.cliargs import count, finite_float, seed64, out_file
    parser.add_argument("--n", type=count(1, 1024), default=8)
    parser.add_argument("--out", type=out_file(".png"))

Bounds are where a value stops meaning anything (a grid of 10^9 images, 10^30 processes), not
tuning: an argument whose cost depends on the run (images of its size) is also checked once the
run is loaded, with :func:`fits_in_memory`.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from . import safewrite
from .config import MAX_COUNT
from .errors import MemcoreError

# the largest seed a command takes: torch seeds are 64-bit, and commands add small offsets to them
MAX_SEED = 2**63 - 1
MAX_EVAL_SAMPLES = 1_000_000   # generated images of one evaluation (FID's protocol: 50,000)
CORES = os.cpu_count() or 1
IMAGE_EXTENSIONS = safewrite.IMAGE_SUFFIXES
_DIGITS = len(str(MAX_COUNT * MAX_COUNT))   # longer text is out of every range (and of int())


def _integer(text: str) -> int | None:
    text = text.strip()
    if len(text) > _DIGITS + 1 or not text.lstrip("+-").isdigit():
        return None
    return int(text)


def count(lo: int = 1, hi: int = MAX_COUNT, why: str = ""):
    """An integer in [lo, hi]; ``why`` says what the upper bound stands for."""
    def parse(text: str) -> int:
        value = _integer(text)
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(
                f"expected an integer in [{lo}, {hi}]{f' ({why})' if why else ''}, got {text!r}")
        return value
    parse.__name__ = f"integer in [{lo}, {hi}]"
    parse.bounds = (lo, hi)   # read by the tests that generate bad values for every argument
    return parse


seed64 = count(0, MAX_SEED, "a 64-bit seed")
# processes of one run (--nproc; 0 or 1 is one): each wants a core of its own, but a few more
# than a small machine has still test distributed code
processes = count(0, max(CORES, 8), "this machine's cores, or 8")


def finite_float(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False):
    """A finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (value > lo if lo_open else value >= lo) and value <= hi
        if not (math.isfinite(value) and inside):
            low = f"({lo:g}" if lo_open else f"[{lo:g}"
            raise argparse.ArgumentTypeError(f"expected a finite number in {low}, {hi:g}], "
                                             f"got {text!r}")
        return value
    parse.__name__ = "finite number"
    parse.bounds, parse.lo_open = (lo, hi), lo_open
    return parse


def out_file(*extensions: str):
    """A file to write, with one of ``extensions`` (e.g. ``".png"``), in a writable place."""
    def parse(text: str) -> Path:
        problem = safewrite.output_problem(Path(text), extensions)
        if problem:
            raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
        return Path(text)
    parse.__name__ = "file"
    parse.extensions = extensions
    return parse


def out_folder(text: str) -> Path:
    """A folder to write into (created when missing)."""
    problem = safewrite.output_folder_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return Path(text)


def image_file(text: str) -> Path:
    """An image file Pillow can read (PNG, JPEG, ...)."""
    from PIL import Image, UnidentifiedImageError
    path = Path(text)
    if path.exists() and not path.is_file():   # a FIFO would wait for a writer forever
        raise argparse.ArgumentTypeError(f"expected an image file, got {text!r}: not a regular "
                                         "file")
    try:
        with Image.open(path) as im:
            im.verify()
        return path
    except (UnidentifiedImageError, SyntaxError):
        problem = "an image file (PNG, JPEG, ...): this one is not an image Pillow can read"
    except (OSError, ValueError) as exc:
        problem = f"a readable image file ({getattr(exc, 'strerror', None) or exc})"
    raise argparse.ArgumentTypeError(f"expected {problem}, got {text!r}")


def machine_memory() -> int:
    """Bytes of memory this machine has."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_in_memory(argument: str, what: str, need: int) -> None:
    """Refuse ``argument`` (e.g. ``--n 1000000``) when ``what`` would need more than the
    machine's memory, naming the size, before it is allocated."""
    available = machine_memory()
    if need > available:
        raise MemcoreError(f"{argument}: {what} would need {need / 2**30:,.1f} GiB, more than "
                           f"this machine's {available / 2**30:,.1f} GiB of memory")
