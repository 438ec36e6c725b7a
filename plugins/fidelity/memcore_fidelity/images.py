"""Metrics between two sets of images held in memory, outside a training run (tests, benchmarks,
scripts): ``score_images("fid", fake, real, extractor="fashion-classifier")``.

:class:`ImageSession` plays the part of memcore's metric session: ``generate(n)`` yields this rank's
share of the fake images (the same contiguous sharding), ``real(n)`` the first ``n`` real ones.
"""
from __future__ import annotations

import torch

import memcore

from .reference import shard


class ImageSet:
    """The few dataset attributes a metric reads, around uint8 (N, C, H, W) images."""

    def __init__(self, images: torch.Tensor, description: str = "images"):
        self.images = images
        self.channels, self.resolution = images.shape[1], images.shape[-1]
        self.description = description

    def __len__(self) -> int:
        return len(self.images)


class ImageSession:
    recipe = None
    run_dir = None
    step = 0

    def __init__(self, fake: torch.Tensor, real: torch.Tensor, device="cpu", batch: int = 64):
        self.fake, self.dataset, self.device, self.batch = fake, ImageSet(real), device, batch

    def generate(self, n: int, batch: int | None = None):
        if n > len(self.fake):
            raise memcore.MemcoreError(f"{n} samples asked, {len(self.fake)} fake images given")
        mine, batch = shard(n), batch or self.batch
        for start in range(mine.start, mine.stop, batch):
            yield self.fake[start:min(start + batch, mine.stop)]

    def real(self, n: int) -> torch.Tensor:
        return self.dataset.images[:n]


def build_metric(kind: str, extractor: str | dict = "inception-v3-compat", role: str = "metrics[0]",
                 **options):
    """A metric component from the registry; ``extractor`` is a name or a table with ``kind``."""
    registry = memcore.get_registry()
    table = {"kind": extractor} if isinstance(extractor, str) else dict(extractor)
    ext_entry = registry.get("extractor", table.pop("kind"))
    spec = memcore.slot("extractor")(kind=ext_entry.name, options=ext_entry.load_config()(**table))
    entry = registry.get("metric", kind)
    ctx = memcore.BuildContext(resolution=0, channels=0, role=role)
    return entry.load_factory()(entry.load_config()(extractor=spec, **options), ctx)


def score_images(kind: str, fake: torch.Tensor, real: torch.Tensor, device="cpu", **options) -> dict:
    """Compute metric ``kind`` of uint8 ``fake`` against ``real`` images (all of both by default)."""
    options.setdefault("num_samples", len(fake))
    options.setdefault("num_real", len(real))
    metric = build_metric(kind, **options)
    metric.preflight()
    return metric.compute(ImageSession(fake, real, device))
