"""A small Fashion-MNIST classifier: in-domain features (64-d) and class logits (10) for metrics.

Trained by ``scripts/train_fashion_classifier.py``; the weights ship in ``weights/``. Inputs are
uint8 images of any size and channel count: RGB is averaged to grey and the image is resized to
28 px (bilinear, antialiased) because that is what the network saw in training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESOLUTION = 28


def conv_bn_relu(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(dim_out), nn.ReLU(inplace=True))


def to_grey_28(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1|3, H, W) -> float (B, 1, 28, 28) in [-1, 1]."""
    x = images.float().mean(1, keepdim=True)
    if x.shape[-1] != RESOLUTION or x.shape[-2] != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True,
                          align_corners=False)
    return x / 127.5 - 1


class FashionNet(nn.Module):
    """Four 3x3 conv layers in two 2x-pooled stages, global average pooling, one linear layer."""

    feature_dim, num_classes = 64, 10

    def __init__(self, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(1, width), conv_bn_relu(width, width), nn.MaxPool2d(2),         # 14 px
            conv_bn_relu(width, 2 * width), conv_bn_relu(2 * width, 2 * width), nn.MaxPool2d(2),  # 7 px
            conv_bn_relu(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(0.2)
        self.classify = nn.Linear(4 * width, self.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float (B, 1, 28, 28) in [-1, 1] -> (features (B, 64), logits (B, 10))."""
        features = self.body(x)
        return features, self.classify(self.dropout(features))
