"""What a metric gets: sharded generation and access to the real data.

:class:`MetricSession` serves a generator during training and ``memcore eval``;
:class:`ImageSession` serves two fixed sets of images (a plugin's own evaluation, tests, scripts),
and :func:`score_images` computes any registered metric on two such sets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from . import dist
from .protocols import to_uint8


def shard(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous share of ``n`` items (the union over ranks is ``range(n)``)."""
    per = -(-n // world)
    return range(min(n, rank * per), min(n, (rank + 1) * per))


class MetricSession:
    def __init__(self, G, dataset, device, run_dir: Path | None, step: int, recipe=None,
                 seed: int = 0):
        self.G, self.dataset, self.device = G, dataset, device
        self.run_dir, self.step, self.recipe = run_dir, step, recipe
        self.seed = seed
        self.rank, self.world = dist.rank(), dist.world_size()

    def shard(self, n: int) -> range:
        """The sample indices this rank generates (contiguous, rank order)."""
        return shard(n, self.rank, self.world)

    @torch.no_grad()
    def generate(self, n: int, batch: int = 64) -> Iterator[torch.Tensor]:
        """This rank's share of ``n`` samples as uint8 (b, C, H, W) batches.

        Sample ``i`` is drawn from a generator seeded by ``(seed, i // batch)``, so the union over
        ranks is the same set of images for any number of processes.
        """
        G = self.G
        was_training = G.training
        G.eval()
        mine = self.shard(n)
        try:
            for start in range(mine.start, mine.stop, batch):
                count = min(batch, mine.stop - start)
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + start)
                yield to_uint8(G(**G.sample_latent(count, gen, self.device)).float()).cpu()
        finally:
            G.train(was_training)

    def real(self, n: int) -> torch.Tensor:
        """The first ``n`` real images (uint8, N×C×H×W) in a fixed shuffled order."""
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(2024))[:n]
        if getattr(self.dataset, "images", None) is not None:
            return self.dataset.images[order]
        return torch.stack([to_uint8(self.dataset[int(i)][0]) for i in order])


class ImageSet:
    """The dataset attributes a metric reads, around uint8 (N, C, H, W) images."""

    def __init__(self, images: torch.Tensor, description: str = "images"):
        self.images = images
        self.labels = None
        self.channels, self.resolution = images.shape[1], images.shape[-1]
        self.num_classes = 0
        self.description = description

    def __len__(self) -> int:
        return len(self.images)


class ImageSession:
    """A metric session over given uint8 images: ``generate(n)`` yields this rank's share of the
    first ``n`` fake images (sharded like :class:`MetricSession`), ``real(n)`` the first ``n`` real."""

    recipe = None
    run_dir = None
    step = 0

    def __init__(self, fake: torch.Tensor, real: torch.Tensor, device="cpu", batch: int = 64,
                 description: str = "images"):
        self.fake, self.dataset, self.device, self.batch = fake, ImageSet(real, description), device, batch
        self.rank, self.world = dist.rank(), dist.world_size()

    def generate(self, n: int, batch: int | None = None) -> Iterator[torch.Tensor]:
        if n > len(self.fake):
            from .errors import MemcoreError
            raise MemcoreError(f"{n} samples asked, {len(self.fake)} fake images given")
        mine, batch = shard(n, self.rank, self.world), batch or self.batch
        for start in range(mine.start, mine.stop, batch):
            yield self.fake[start:min(start + batch, mine.stop)]

    def real(self, n: int) -> torch.Tensor:
        return self.dataset.images[:n]


def score_images(kind: str, fake: torch.Tensor, real: torch.Tensor, device="cpu",
                 where: str = "metric", **options) -> dict:
    """Metric ``kind`` (any registered metric; ``options`` as in its ``[[metrics]]`` table) of uint8
    ``fake`` against ``real`` images, all of both by default. ``where`` names it in messages."""
    from .build import build_component
    options.setdefault("num_samples", len(fake))
    metric = build_component("metric", {"kind": kind, **options}, where=where)
    metric.preflight()
    return metric.compute(ImageSession(fake, real, device))
