"""Deterministic, resumable, rank-sharded batches.

Each epoch is a permutation drawn from ``(seed, epoch)``; global batch ``k`` of the epoch is the
slice ``[k*B, (k+1)*B)`` of it and rank ``r`` takes its ``r``-th share. The stream's state is just
``(epoch, batch)``, saved in checkpoints, so a resumed run sees exactly the images it would have
seen (the incomplete last batch of an epoch is dropped).
"""
from __future__ import annotations

import torch

from .protocols import to_float


class BatchStream:
    def __init__(self, dataset, global_batch: int, seed: int, rank: int = 0, world: int = 1,
                 num_workers: int = 0):
        if len(dataset) < global_batch:
            from .errors import MemcoreError
            raise MemcoreError(f"the dataset has {len(dataset)} images, fewer than train.batch_size "
                               f"= {global_batch}; lower the batch size or raise data.limit")
        self.dataset, self.global_batch, self.seed = dataset, global_batch, seed
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.per_rank = global_batch // world
        self.epoch, self.batch = 0, 0
        self._order = None
        self._loader_iter = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.global_batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._order, self._loader_iter = None, None

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            self._order = torch.randperm(len(self.dataset), generator=g)
        return self._order

    def _indices(self, epoch_batch: int) -> torch.Tensor:
        start = epoch_batch * self.global_batch + self.rank * self.per_rank
        return self._epoch_order()[start:start + self.per_rank]

    def _advance(self) -> None:
        self.batch += 1
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch, self._order, self._loader_iter = self.epoch + 1, 0, None, None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images float (b,C,H,W) in [-1,1], labels int64 (b,), -1 when unlabelled)."""
        if getattr(self.dataset, "images", None) is not None:
            idx = self._indices(self.batch)
            images = to_float(self.dataset.images[idx])
            labels = self.dataset.labels[idx] if self.dataset.labels is not None \
                else torch.full((len(idx),), -1, dtype=torch.long)
        else:
            images, labels = self._next_from_loader()
        self._advance()
        return images, labels

    def _next_from_loader(self):
        if self._loader_iter is None:
            batches = [self._indices(b).tolist() for b in range(self.batch, self.batches_per_epoch)]
            loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=batches,
                                                 num_workers=self.num_workers)
            self._loader_iter = iter(loader)
        images, labels = next(self._loader_iter)
        return images, torch.as_tensor(labels, dtype=torch.long)
