"""Memorisation: how close samples come to the training images (metric ``memorisation``).

In few-shot training a generator that reproduces its 100 training images scores well on FID
against them; this metric says how much of that is copying. For every sample it finds the nearest
training image, and compares that distance with the distance from the same training image to its
own nearest other training image (the authenticity test of Alaa et al. 2022, "How faithful is your
synthetic data?"): a sample closer to a training image than any other training image is to it
counts as memorised.

Distances are Euclidean, in pixel space (uint8 images scaled to [0, 1] and flattened; the
default) or in the feature space of a registered extractor.
"""
from __future__ import annotations

from typing import Optional

import torch

import memcore
from memcore import dist, option

from .metrics import build_extractor
from .reference import fake_features

CHUNK = 1024  # rows of the distance matrix at a time, so a large training set fits in memory


@memcore.config
class MemorisationOptions(memcore.MetricOptions):
    extractor: Optional[memcore.slot("extractor")] = option(
        None, help="Feature space of the distances: an extractor (memcore list extractor); "
        "absent: pixel space (images scaled to [0, 1], flattened).")
    num_train: Optional[int] = option(None, help="Training images compared with, in the fixed "
                                      "shuffled order of the metrics' real images (default: the "
                                      "whole training set; the cost grows with its square).",
                                      check=memcore.positive)


def nearest(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False):
    """(distance, index) of each row of ``a``'s nearest row of ``b``; with ``exclude_self``
    (``a`` is ``b``) a row is not its own neighbour."""
    dists, index = [], []
    for start in range(0, len(a), CHUNK):
        d = torch.cdist(a[start:start + CHUNK].double(), b.double())
        if exclude_self:
            rows = torch.arange(start, min(start + CHUNK, len(a)))
            d[rows - start, rows] = float("inf")
        best = d.min(1)
        dists.append(best.values)
        index.append(best.indices)
    return torch.cat(dists), torch.cat(index)


def memorisation(fake: torch.Tensor, train: torch.Tensor) -> dict[str, float]:
    """The values for fake and training rows (N, D) in one space."""
    if len(train) < 2:
        raise memcore.MemcoreError(f"memorisation needs at least 2 training images (a training "
                                   f"image's nearest other one); got {len(train)}")
    to_train, index = nearest(fake, train)
    among_train, _ = nearest(train, train, exclude_self=True)
    scale = among_train[index]
    # a training image with a duplicate has scale 0: an exact copy of it is still memorised
    ratio = torch.where(to_train == 0, 0.0, to_train / scale)
    return {"memorised": float((ratio < 1).double().mean()),
            "nn_distance": float(to_train.mean()),
            "nn_ratio": float(torch.quantile(ratio, 0.5)),
            "train_nn_distance": float(among_train.mean())}


def pixels(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1).double() / 255


class Memorisation(memcore.Metric):
    """``memorised`` (the main value, lower is better): share of samples closer to their nearest
    training image than that image's nearest other training image; ``nn_distance``: mean distance
    of a sample to its nearest training image; ``nn_ratio``: median of that distance over the
    training image's own nearest-neighbour distance; ``train_nn_distance``: mean distance of a
    training image to its nearest other one (the scale to read ``nn_distance`` against)."""

    key = "memorised"
    values = ("memorised", "nn_distance", "nn_ratio", "train_nn_distance")

    def __init__(self, options: MemorisationOptions, ctx):
        super().__init__(options, ctx)
        self.where = getattr(ctx, "role", "") or "metrics"
        self.extractor = build_extractor(options.extractor, ctx) if options.extractor else None

    def preflight(self) -> None:
        if self.extractor is not None:
            try:
                self.extractor.preflight()
            except memcore.MemcoreError as exc:
                raise memcore.MemcoreError(f"{self.where}.extractor: {exc}") from None

    def compute(self, session) -> dict:
        n_train = min(self.options.num_train or len(session.dataset), len(session.dataset))
        train = session.real(n_train)
        if self.extractor is None:
            local = [batch for batch in session.generate(self.options.num_samples)]
            mine = torch.cat(local) if local else torch.zeros((0,) + tuple(train.shape[1:]),
                                                                dtype=torch.uint8)
            fake = pixels(dist.gather_rows(mine.to(session.device)).cpu())
            train_rows, protocol = pixels(train), {"extractor": "pixels"}
        else:
            fake = fake_features(session, self.extractor, self.options.num_samples)["features"]
            train_rows = self.extractor.extract(train, session.device)["features"].cpu()
            protocol = self.extractor.protocol()
        values = memorisation(fake.double(), train_rows.double())
        return {**values, **protocol, "fake_samples": str(len(fake)),
                "train_images": str(len(train_rows))}
