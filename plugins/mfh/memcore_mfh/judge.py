"""Small classifiers that ``mfh-eval`` trains on the fly: a *judge* over all classes of the dataset
(used only to judge which class an image shows, never to train or select a generator) and a
*base-only* net over the run's base classes, whose pooled features are the ProtoNet space.

Why on the fly and not cached: each is a small net trained on CPU from a fixed seed (the net's
initial weights and the batch order both come from it; 800 steps take tens of seconds on one
shared core), so the numbers it gives are reproducible
from the run and the command alone, with no weights file to version, ship or trust.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """Three 3x3 convolutions (two max-pooled), global mean pooling, a linear head."""

    def __init__(self, channels: int, num_classes: int, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class TrainedNet:
    net: SmallCNN
    steps: int
    images: int
    seed: int

    def describe(self, role: str) -> dict:
        return {"role": role, "net": "SmallCNN (3 conv, width 16)", "trained": "on the fly",
                "steps": self.steps, "batch": BATCH, "images": self.images, "seed": self.seed}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x).argmax(1) for x in images.split(512)])

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net.features(x) for x in images.split(512)]).double()


BATCH = 64


def per_class_subset(labels: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of up to ``count`` random images of each class."""
    return torch.cat([torch.nonzero(labels == c)[:, 0][torch.randperm(int((labels == c).sum()),
                      generator=gen)[:count]] for c in labels.unique()])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int,
                     seed: int, lr: float = 2e-3) -> TrainedNet:
    """Adam on cross-entropy for ``steps`` batches of 64; images float in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = SmallCNN(images.shape[1], num_classes)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < BATCH:
            order = torch.cat([order, torch.randperm(len(images), generator=gen)])
        batch, order = order[:BATCH], order[BATCH:]
        loss = F.cross_entropy(net(images[batch]), labels[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return TrainedNet(net.eval(), steps, len(images), seed)
