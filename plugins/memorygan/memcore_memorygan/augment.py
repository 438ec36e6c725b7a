"""The brightness/contrast augmentation of real CIFAR-10 images in memoryGAN's code
(``tf.image.random_brightness(max_delta=16/255)`` then ``tf.image.random_contrast(0.8, 1.2)``).

TF semantics, reproduced here (TF 1.4, float images):

* ``random_brightness``: delta ~ U[-max_delta, max_delta), ``x + delta`` on every pixel and
  channel; no clipping for float images.
* ``random_contrast``: factor ~ U[lower, upper); for each channel, ``(x - mean) * factor + mean``
  where mean is that channel's mean over the image's H x W (``adjust_contrast``); no clipping.
* Each call draws ONE scalar: applied to a 4-D batch the whole batch shares delta and factor,
  applied per image (the usual input pipeline) each image gets its own. ``draw`` chooses; the
  default is per image.

The two commute ((x + d - (m + d)) f + m + d = (x - m) f + m + d), so their order does not matter.
The code's 16/255 is in [0, 1] pixel units; memcore images are in [-1, 1], so the default here is
32/255. Contrast is scale-free. Only real images are augmented (``applies_to = "real"``): the core
applies this once to each real batch when it is drawn and never to G's samples.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

import memcore
from memcore import non_negative, option


def _contrast_range(value) -> str | None:
    lower, upper = value
    return None if 0 <= lower <= upper else "[lower, upper] with 0 <= lower <= upper"


@memcore.config
class BrightnessContrastOptions:
    brightness: float = option(32 / 255, help="Max |delta| added to every pixel, in memcore's "
                               "[-1, 1] units (code: 16/255 on [0, 1] images = 32/255 here); 0 = off.",
                               check=non_negative)
    contrast: tuple[float, float] = option((0.8, 1.2), help="Range [lower, upper] of the factor "
                                           "that scales each channel around its mean (code: "
                                           "0.8, 1.2); [1, 1] = off.", check=_contrast_range)
    draw: Literal["image", "batch"] = option(
        "image", help="One delta and one factor per image, or one for the whole batch (what "
        "tf.image.random_* do on a 4-D tensor).")


class BrightnessContrast(nn.Module):
    """Random brightness and contrast of real images; (B, C, H, W) -> same, no clipping."""

    applies_to = "real"  # the core applies it once to each real batch, never to fakes

    def __init__(self, options: BrightnessContrastOptions, ctx: memcore.BuildContext | None = None):
        super().__init__()
        self.brightness = options.brightness
        self.lower, self.upper = options.contrast
        self.per_image = options.draw == "image"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0] if self.per_image else 1
        shape = (n, 1, 1, 1)
        delta = (torch.rand(shape, device=x.device) * 2 - 1) * self.brightness
        factor = self.lower + torch.rand(shape, device=x.device) * (self.upper - self.lower)
        mean = x.mean(dim=(2, 3), keepdim=True)                          # per image and channel
        return ((x - mean) * factor + mean + delta).to(x.dtype)
