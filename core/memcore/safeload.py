"""Reading files that can hold pickles, without running code from them.

A pickle can name any importable callable and so run any command when it is loaded. Every file
memcore or a plugin reads from a path (checkpoints, extractor weights, feature caches, data files)
goes through one of these two readers instead of ``torch.load`` / ``pickle.load``:

* :func:`load_tensors` — torch's weights-only unpickler: tensors, containers and plain values.
* :func:`load_numpy_pickle` — an unpickler that admits numpy arrays and dtypes and nothing else.

A file that asks for anything more is refused with a :class:`MemcoreError` naming it.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

from .errors import MemcoreError

_REFUSED = ("refused: it holds Python objects beyond tensors and plain values, and loading it "
            "could run code")


def _describe(what: str, path: Path) -> str:
    return f"{what} {path}"


def load_tensors(path: str | Path, *, what: str = "file", map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with every failure a MemcoreError naming ``what``."""
    import torch

    path = Path(path).expanduser()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise MemcoreError(f"{_describe(what, path)}: no such file") from None
    except IsADirectoryError:
        raise MemcoreError(f"{_describe(what, path)}: is a folder, expected a file") from None
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemcoreError(f"{_describe(what, path)}: {_REFUSED} ({reason[:200]})") from None
    except Exception as exc:
        raise MemcoreError(f"cannot read {_describe(what, path)}: {type(exc).__name__}: "
                           f"{str(exc)[:300]}") from None


# numpy pickles an array as _reconstruct(ndarray, shape, dtype) + __setstate__; these names are
# all such a file may ask for. numpy 2 moved numpy.core to numpy._core: both spellings map there.
_NUMPY_NAMES = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_NAMES:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        import numpy as np
        if name != "_reconstruct":
            return getattr(np, name)
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy 1.x
            from numpy.core.multiarray import _reconstruct
        return _reconstruct


def load_numpy_pickle(data: bytes, *, what: str, path: str | Path):
    """Unpickle ``data`` (read from ``path``) admitting only numpy arrays."""
    try:
        return _NumpyOnly(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise MemcoreError(f"{_describe(what, Path(path))}: refused: it is not a plain numpy "
                           f"array pickle and loading it could run code ({exc})") from None
    except Exception as exc:
        raise MemcoreError(f"cannot read {_describe(what, Path(path))}: "
                           f"{type(exc).__name__}: {exc}") from None
