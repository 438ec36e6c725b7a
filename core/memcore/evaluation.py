"""What a metric gets: sharded generation from the EMA generator and access to the real data."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from . import dist
from .protocols import to_uint8


class MetricSession:
    def __init__(self, G, dataset, device, run_dir: Path | None, step: int, recipe=None,
                 seed: int = 0):
        self.G, self.dataset, self.device = G, dataset, device
        self.run_dir, self.step, self.recipe = run_dir, step, recipe
        self.seed = seed
        self.rank, self.world = dist.rank(), dist.world_size()

    def shard(self, n: int) -> range:
        """The sample indices this rank generates (contiguous, rank order)."""
        per = -(-n // self.world)
        return range(min(n, self.rank * per), min(n, (self.rank + 1) * per))

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
