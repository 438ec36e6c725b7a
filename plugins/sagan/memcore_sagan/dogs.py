"""Stanford Dogs (Khosla et al. 2011), cropped to the dog bounding boxes, as in the SAGAN study.

The standard layout, as unpacked from ``images.tar`` and ``annotation.tar``::

    ROOT/Images/n02085620-Chihuahua/n02085620_10074.jpg
    ROOT/Annotation/n02085620-Chihuahua/n02085620_10074        (VOC XML, no extension)

Every ``<object><bndbox>`` of an annotation gives one training image (an image with two dogs gives
two crops), as the Kaggle "Generative Dog Images" notebooks do. A box is grown to a square around
its centre (clamped to the image) before resizing, so dogs keep their proportions. Labels are the
breed folders (120 classes), in sorted order.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from PIL import Image

import memcore
from memcore import option, positive

ENV = "MEMCORE_STANFORD_DOGS"


@memcore.config
class StanfordDogsOptions(memcore.DatasetOptions):
    root: Optional[str] = option(None, help=f"Folder holding Images/ and Annotation/ (default: "
                                 f"${ENV}).")
    resolution: int = option(64, help="Side of the square crops (SAGAN study: 64).", check=positive)
    crop: Literal["boxes", "image"] = option("boxes", help="'boxes': one square crop per dog box; "
                                             "'image': the centre square of each image.")
    labels: bool = option(False, help="Use the 120 breeds as class labels (the study is "
                          "unconditional).")
    min_box: int = option(16, help="Skip boxes whose shorter side is below this many pixels.",
                          check=positive)


def read_boxes(path: Path) -> list[tuple[int, int, int, int]]:
    """(xmin, ymin, xmax, ymax) of every object in a VOC XML file."""
    boxes = []
    for obj in ET.parse(path).getroot().iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        boxes.append(tuple(int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")))
    return boxes


def square_around(box, width: int, height: int) -> tuple[int, int, int, int]:
    """The box grown to a square around its centre, shifted (and if need be shrunk) into the image."""
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0), width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def crops_of(image_path: Path, annotation_path: Path, o: StanfordDogsOptions) -> list[np.ndarray]:
    with Image.open(image_path) as im:
        im = im.convert("RGB")
        if o.crop == "image" or not annotation_path.exists():
            regions = [centre_square(im.width, im.height)]
        else:
            boxes = [b for b in read_boxes(annotation_path)
                     if min(b[2] - b[0], b[3] - b[1]) >= o.min_box]
            regions = [square_around(b, im.width, im.height) for b in boxes]
        return [np.asarray(im.crop(r).resize((o.resolution, o.resolution), Image.BICUBIC))
                for r in regions]


def stanford_dogs(options: StanfordDogsOptions, ctx: memcore.BuildContext | None = None):
    o = options
    root_text = o.root or os.environ.get(ENV)
    root = Path(root_text).expanduser() if root_text else None
    if root is None or not (root / "Images").is_dir():
        where = f"data.root = {o.root!r}" if o.root else f"data.root is unset (and ${ENV})"
        raise memcore.MemcoreError(
            f"{where}: expected a folder holding Images/<breed>/*.jpg and Annotation/<breed>/<id> "
            "(unpack images.tar and annotation.tar from http://vision.stanford.edu/aditya86/"
            "ImageNetDogs/)")
    breeds = sorted(p.name for p in (root / "Images").iterdir() if p.is_dir())
    images, labels = [], []
    for label, breed in enumerate(breeds):
        for image_path in sorted((root / "Images" / breed).glob("*.jpg")):
            annotation = root / "Annotation" / breed / image_path.stem
            for crop in crops_of(image_path, annotation, o):
                images.append(crop)
                labels.append(label)
            if o.limit and len(images) >= o.limit:
                break
        if o.limit and len(images) >= o.limit:
            break
    if not images:
        raise memcore.MemcoreError(f"data.root = {str(root)!r}: no dog crops found under Images/")
    images, labels = images[:o.limit or None], labels[:o.limit or None]
    return DogsDataset(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2),
                       torch.tensor(labels) if o.labels else None,
                       tuple(b.split("-", 1)[-1] for b in breeds) if o.labels else ())


class DogsDataset(memcore.ImageDataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, class_names):
        self.images = images.contiguous()                               # uint8 (N, 3, R, R)
        self.labels = labels
        self.channels, self.resolution = 3, images.shape[-1]
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.description = f"stanford-dogs {len(images)} crops at {self.resolution} px"
