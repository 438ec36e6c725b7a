"""Fixtures of the memoryGAN tests: a stand-in MNIST folder (idx files of synthetic digits)."""
import gzip

import numpy as np
import pytest


def write_idx(path, array: np.ndarray) -> None:
    """MNIST's idx format: 0, 0, type 0x08 (uint8), ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def bar_digits(n: int) -> np.ndarray:
    """(n, 28, 28): a horizontal bar through the frame's centre, MNIST-like in extent."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 13:15, 4:24] = 255
    return images


@pytest.fixture(name="bar_digits")
def bar_digits_fixture():
    return bar_digits


@pytest.fixture
def mnist_folder(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for part, n in (("train", 96), ("t10k", 16)):
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", bar_digits(n))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder
