"""Metrics between two sets of images held in memory, outside a training run (tests, benchmarks,
scripts): ``score_images("fid", fake, real, extractor="fashion-classifier")``.

The session over fixed images and the generic scoring live in the core
(:class:`memcore.ImageSession`, :func:`memcore.score_images`); these wrappers only choose this
plugin's defaults: every real image is the reference unless ``num_real`` says otherwise.
"""
from __future__ import annotations

import torch

import memcore
from memcore import ImageSession  # noqa: F401  (re-exported for tests and scripts)


def build_metric(kind: str, extractor: str | dict = "inception-v3-compat", role: str = "metrics[0]",
                 **options):
    """A metric component from the registry; ``extractor`` is a name or a table with ``kind``."""
    return memcore.build_component("metric", {"kind": kind, "extractor": extractor, **options},
                                   where=role)


def score_images(kind: str, fake: torch.Tensor, real: torch.Tensor, device="cpu", **options) -> dict:
    """Compute metric ``kind`` of uint8 ``fake`` against ``real`` images (all of both by default)."""
    options.setdefault("num_real", len(real))
    return memcore.score_images(kind, fake, real, device, where="metrics[0]", **options)
