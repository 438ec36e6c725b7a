"""The datasets of the datasets plugin: fashion-mnist, animal-mnist, image-folder, cifar10.

All return images as uint8 tensors held in memory (decoded once), resized to ``resolution`` and
converted to ``channels``; labels are class indices. ``classes`` keeps only some classes (for
base/novel splits) and relabels them 0..k-1 in the order given.
"""
from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from memcore import (BuildContext, DatasetOptions, ImageDataset, MemcoreError, config,
                     load_numpy_pickle, option, positive)

FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep",
                  "zebra")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def cache_dir() -> Path:
    return Path(os.environ.get("MEMCORE_CACHE", Path.home() / ".cache" / "memcore"))


def _class_indices(classes) -> str | None:
    """Indices >= 0, each once: a repeated class would be relabelled twice and leave a label
    with no images."""
    for i, c in enumerate(classes):
        if c < 0:
            return f"class indices >= 0 (entry {i} is {c})"
        if c in classes[:i]:
            return f"distinct class indices ({c} is given twice)"
    return None


@config
class ImageOptions(DatasetOptions):
    resolution: Optional[int] = option(None, help="Resize to this side (default: native).",
                                       check=positive)
    channels: Optional[Literal[1, 3]] = option(None, help="1 (grey) or 3 (RGB); default: native.")
    classes: list[int] = option(factory=list, help="Keep only these class indices, relabelled "
                                "0..k-1 in this order (empty: all).", check=_class_indices)


@config
class MnistLikeOptions(ImageOptions):
    split: Literal["train", "test", "all"] = option("train", help="Which split.")


@config
class FashionOptions(MnistLikeOptions):
    path: Optional[str] = option(None, help="Folder with the four idx .gz files (default: "
                                 "$MEMCORE_FASHION_MNIST, Debian's /usr/share/datasets/"
                                 "fashion-mnist, then a torchvision download).")


class TensorImageDataset(ImageDataset):
    """Images held in memory: a uint8 N×C×H×W tensor, or a function that reads them on first use
    (given with their ``shape``), so that ``memcore validate`` learns the size and shape of a
    dataset without decoding it."""

    def __init__(self, images: torch.Tensor | Callable[[], torch.Tensor],
                 labels: torch.Tensor | None, class_names=(), description="",
                 shape: tuple[int, int, int, int] | None = None):
        if callable(images):
            self._read, self._images = images, None
        else:
            self._read, self._images = None, images.contiguous()
            shape = tuple(images.shape)
        self._length, self.channels, self.resolution = shape[0], shape[1], shape[2]
        self.labels = labels
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names) if labels is not None else 0
        self.description = description

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            self._images = self._read().contiguous()
        return self._images

    def __len__(self) -> int:
        return self._length


def finish(images: np.ndarray | torch.Tensor, labels, options: ImageOptions, class_names,
           description) -> TensorImageDataset:
    """NHWC/NHW uint8 -> dataset with the options' class filter, limit, resolution and channels."""
    images = _nchw(images)
    keep, labels, class_names = select(labels, options, class_names, len(images))
    images = convert_images(images if keep is None else images[keep], options.resolution,
                            options.channels)
    return TensorImageDataset(images, labels, class_names, description)


def _nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(images))
    if images.dim() == 3:
        return images[:, None]
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        return images.permute(0, 3, 1, 2)
    return images


def select(labels, options: ImageOptions, class_names, count: int):
    """``(index of the images kept or None for all, their labels, their class names)`` after the
    options' class filter (relabelled 0..k-1 in the order given) and limit."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long) if labels is not None else None
    keep = None
    if options.classes:
        if labels is None:
            raise MemcoreError("data.classes needs a labelled dataset")
        bad = [c for c in options.classes if c >= len(class_names)]
        if bad:
            raise MemcoreError(f"data.classes = {list(options.classes)}: class {bad[0]} does not "
                               f"exist ({len(class_names)} classes)")
        chosen = torch.zeros_like(labels, dtype=torch.bool)
        remap = torch.full((len(class_names),), -1, dtype=torch.long)
        for new, old in enumerate(options.classes):
            chosen |= labels == old
            remap[old] = new
        keep = chosen.nonzero().squeeze(1)
        labels = remap[labels[keep]]
        class_names = [class_names[c] for c in options.classes]
    if options.limit is not None:
        keep = (torch.arange(count) if keep is None else keep)[: options.limit]
        labels = labels[: options.limit] if labels is not None else None
    return keep, labels, class_names


def convert_images(images: torch.Tensor, resolution: int | None, channels: int | None,
                   chunk: int = 4096) -> torch.Tensor:
    """Resize (antialiased bilinear) and convert channels of uint8 NCHW images."""
    if channels is not None and channels != images.shape[1]:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if resolution is not None and resolution != images.shape[-1]:
        out = []
        for part in images.split(chunk):
            part = F.interpolate(part.float(), size=(resolution, resolution), mode="bilinear",
                                 antialias=True, align_corners=False)
            out.append(part.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(out) if out else images
    return images.contiguous()


# -- Fashion-MNIST ----------------------------------------------------------------------------
def _idx_header(fh) -> list[int]:
    """The array dimensions at the start of an (uncompressed) idx stream."""
    ndim = fh.read(4)[3]
    return [int.from_bytes(fh.read(4), "big") for _ in range(ndim)]


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            dims = _idx_header(fh)
            return np.frombuffer(fh.read(), dtype=np.uint8).reshape(dims)
    except (OSError, EOFError, IndexError, ValueError) as e:
        raise MemcoreError(f"{path}: not a readable idx file ({e})") from None


def _idx_dims(path: Path) -> list[int]:
    """The array dimensions in an idx file's header, checked against the uncompressed size that
    gzip records in its last 4 bytes, so a truncated file is found without decompressing it."""
    try:
        with gzip.open(path, "rb") as fh:
            dims = _idx_header(fh)
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            recorded = int.from_bytes(fh.read(4), "little")
    except (OSError, EOFError, IndexError) as e:
        raise MemcoreError(f"{path}: not a readable idx file ({e})") from None
    expected = 4 + 4 * len(dims) + int(np.prod(dims, dtype=np.int64))
    if recorded != expected % 2**32:
        raise MemcoreError(f"{path}: its header promises an array of {dims} ({expected:,} bytes "
                           f"uncompressed), gzip records {recorded:,} (truncated or damaged?)")
    return dims


DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"


def _fashion_folder(options: FashionOptions) -> Path | None:
    def has_files(folder):
        return (Path(folder).expanduser() / "train-images-idx3-ubyte.gz").exists()
    if options.path:
        if not has_files(options.path):
            raise MemcoreError(f"data.path = {options.path!r}: no train-images-idx3-ubyte.gz there")
        return Path(options.path).expanduser()
    for folder in (os.environ.get("MEMCORE_FASHION_MNIST"), DEBIAN_FASHION):
        if folder and has_files(folder):
            return Path(folder).expanduser()
    return None


def _fashion_download() -> Path:
    root = cache_dir() / "fashion-mnist"
    try:
        from torchvision.datasets import FashionMNIST
        FashionMNIST(root=str(root), download=True)
    except Exception as exc:
        raise MemcoreError(
            "Fashion-MNIST not found. Install it with `sudo apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu), or set data.path / MEMCORE_FASHION_MNIST to a folder holding "
            f"train-images-idx3-ubyte.gz etc. (download attempt failed: {type(exc).__name__}: "
            f"{str(exc)[:120]})") from None
    return root / "FashionMNIST" / "raw"


def fashion_mnist(options: FashionOptions, ctx: BuildContext | None = None) -> TensorImageDataset:
    folder = _fashion_folder(options) or _fashion_download()
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[options.split]
    labels = np.concatenate([_read_idx(folder / f"{p}-labels-idx1-ubyte.gz") for p in parts])
    dims = [_idx_dims(folder / f"{p}-images-idx3-ubyte.gz") for p in parts]
    if any(len(d) != 3 for d in dims) or sum(d[0] for d in dims) != len(labels):
        raise MemcoreError(f"Fashion-MNIST in {folder}: the image files hold "
                           f"{sum(d[0] for d in dims)} images of {[d[1:] for d in dims]} px, the "
                           f"label files {len(labels)} labels (files of different sets?)")
    side = dims[0][1]
    keep, labels, class_names = select(labels, options, FASHION_CLASSES, len(labels))

    def read_images() -> torch.Tensor:  # 47 MB decompressed: read when training starts
        images = _nchw(np.concatenate(
            [_read_idx(folder / f"{p}-images-idx3-ubyte.gz") for p in parts]))
        return convert_images(images if keep is None else images[keep], options.resolution,
                              options.channels)

    shape = (len(labels), options.channels or 1, options.resolution or side,
             options.resolution or side)
    return TensorImageDataset(read_images, labels, class_names,
                              f"Fashion-MNIST {options.split} from {folder}", shape=shape)


# -- animal-mnist -----------------------------------------------------------------------------
def _numpy_pickle(path: Path, what: str) -> np.ndarray:
    """The package ships its arrays as gzipped pickles: read them admitting numpy arrays only."""
    with gzip.open(path, "rb") as fh:
        return load_numpy_pickle(fh.read(), what=what, path=path)


def animal_mnist(options: MnistLikeOptions, ctx: BuildContext | None = None) -> TensorImageDataset:
    try:
        import animal_mnist as package
    except ImportError:
        raise MemcoreError("animal-mnist is not installed: `pip install --no-deps animal-mnist`") \
            from None
    folder = Path(package.__file__).parent / "data" / "Animal_MNIST"
    images, labels = (_numpy_pickle(folder / name, "animal-mnist data file")
                      for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"))
    # The package has no split and sorts by class: a fixed per-class 90/10 split keeps both balanced.
    position = np.arange(len(labels)) % 1000
    if options.split != "all":
        keep = position < 900 if options.split == "train" else position >= 900
        images, labels = images[keep], labels[keep]
    return finish(images, labels, options, ANIMAL_CLASSES, f"animal-mnist {options.split}")


# -- image folder -----------------------------------------------------------------------------
@config
class FolderOptions(ImageOptions):
    path: str = option(help="Folder searched recursively for png/jpg/jpeg/webp/bmp images.")
    labels: bool = option(False, help="Use the first-level sub-folder names as class labels.")
    crop: Literal["center", "none"] = option("center", help="Centre-crop to a square before "
                                            "resizing, or squash the whole image.")


def image_folder(options: FolderOptions, ctx: BuildContext | None = None) -> TensorImageDataset:
    from PIL import Image
    root = Path(options.path).expanduser()
    if not root.is_dir():
        raise MemcoreError(f"data.path = {options.path!r}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise MemcoreError(f"data.path = {options.path!r}: no images found (looked for "
                           f"{', '.join(sorted(IMAGE_SUFFIXES))}, recursively)")
    if options.limit is not None and not options.classes:
        files = files[: options.limit * 2]  # decode no more than needed; room for corrupt files
    class_names = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1}) \
        if options.labels else []
    if options.labels and not class_names:
        raise MemcoreError(f"data.labels = true but {options.path!r} has no sub-folders of images")
    resolution = options.resolution or 64
    channels = options.channels or 3
    images, labels, bad = [], [], []
    for p in files:
        try:
            with Image.open(p) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                if options.crop == "center":
                    side = min(im.size)
                    left, top = (im.width - side) // 2, (im.height - side) // 2
                    im = im.crop((left, top, left + side, top + side))
                im = im.resize((resolution, resolution), Image.BICUBIC)
                images.append(np.asarray(im, dtype=np.uint8).reshape(resolution, resolution, channels))
        except Exception as exc:
            bad.append(f"{p.name} ({type(exc).__name__})")
            continue
        if options.labels:
            parts = p.relative_to(root).parts
            labels.append(class_names.index(parts[0]) if len(parts) > 1 else -1)
    if bad:
        warnings.warn(f"image-folder: skipped {len(bad)} unreadable file(s) of {len(files)}: "
                      + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""), stacklevel=2)
    if not images:
        raise MemcoreError(f"data.path = {options.path!r}: none of {len(files)} image files could "
                           "be read")
    array = np.stack(images)
    label_array = np.asarray(labels) if options.labels else None
    if label_array is not None and (label_array < 0).any():
        array, label_array = array[label_array >= 0], label_array[label_array >= 0]
    return finish(array, label_array, options, class_names, f"images from {root}")


# -- CIFAR-10 ---------------------------------------------------------------------------------
@config
class CifarOptions(ImageOptions):
    split: Literal["train", "test"] = option("train", help="Which split.")
    path: Optional[str] = option(None, help="torchvision root (default: the memcore cache); "
                                 "downloaded there when online.")


def cifar10(options: CifarOptions, ctx: BuildContext | None = None) -> TensorImageDataset:
    root = Path(options.path).expanduser() if options.path else cache_dir() / "cifar10"
    try:
        from torchvision.datasets import CIFAR10
        ds = CIFAR10(root=str(root), train=options.split == "train", download=True)
    except ImportError:
        raise MemcoreError("cifar10 needs torchvision: `pip install torchvision`") from None
    except Exception as exc:
        raise MemcoreError(f"CIFAR-10 is not in {root} and could not be downloaded "
                           f"({type(exc).__name__}: {str(exc)[:120]}); put cifar-10-batches-py "
                           "there or set data.path") from None
    return finish(ds.data, ds.targets, options, CIFAR_CLASSES, f"CIFAR-10 {options.split}")
