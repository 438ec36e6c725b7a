"""Stacked Fashion-MNIST, a dataset with known modes, and the two measures of memoryGAN's claims
on it: modes covered with the KL of the mode histogram (metric ``stacked-modes``) and the share of
between-cluster samples along latent paths (metric ``latent-paths``).

As StackedMNIST (Metz et al. 2017, Srivastava et al. 2017), each image holds three independently
drawn Fashion-MNIST images in its red, green and blue channels, so the data has 10^3 = 1,000
modes, equally likely. A mode of a sample is read by the fidelity plugin's in-domain Fashion-MNIST
classifier, channel by channel; a channel whose top class has a probability below ``confidence``
is low-confidence: between clusters rather than in one. Both metrics read any number of channels
(1 channel: the plain Fashion-MNIST runs, 10 modes).
"""
from __future__ import annotations

import math
from typing import Literal

import torch

import memcore
from memcore import dist, option

SPLIT_STREAM = {"train": 0, "test": 1}
CLASSES = 10


# -- the dataset ---------------------------------------------------------------------------------
@memcore.config
class StackedOptions(memcore.DatasetOptions):
    count: int = option(60_000, help="Images drawn (each three Fashion-MNIST images).",
                        check=memcore.positive)
    split: Literal["train", "test"] = option("train", help="The Fashion-MNIST split the channels "
                                             "are drawn from.")
    seed: int = option(0, help="Seed of the draw.", check=memcore.non_negative)
    labels: bool = option(False, help="Give each image its mode (100 r + 10 g + b) as a class "
                          "label (the memoryGAN study is unconditional).")


def draw(source: torch.Tensor, source_labels: torch.Tensor, count: int, seed: int, stream: int):
    """(images uint8 (count, 3, H, W), modes (count,)) from grey (N, 1, H, W) source images."""
    gen = torch.Generator().manual_seed(seed * 2 + stream)
    pick = torch.randint(len(source), (count, 3), generator=gen)
    images = source[pick][:, :, 0]                                 # (count, 3, H, W)
    modes = (source_labels[pick] * torch.tensor([100, 10, 1])).sum(1)
    return images.contiguous(), modes


def stacked_fashion(options: StackedOptions, ctx: memcore.BuildContext | None = None):
    o = options
    source = memcore.build_component("dataset", {"kind": "fashion-mnist", "split": o.split},
                                     where="data (stacked-fashion's source)")
    images, modes = draw(source.images, source.labels, o.count, o.seed, SPLIT_STREAM[o.split])
    images, modes = images[:o.limit], modes[:o.limit]
    return StackedDataset(images, modes if o.labels else None,
                          f"stacked-fashion {o.split} {len(images)} (seed {o.seed})")


class StackedDataset(memcore.ImageDataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, description: str):
        self.images, self.labels = images.contiguous(), labels
        self.channels, self.resolution = 3, images.shape[-1]
        self.num_classes = CLASSES ** 3 if labels is not None else 0
        self.class_names = tuple(f"{m:03d}" for m in range(self.num_classes))
        self.description = description


# -- reading modes --------------------------------------------------------------------------------
def default_extractor():
    return memcore.slot("extractor")(kind="fashion-classifier", options=_extractor_options())


def fidelity(module: str):
    """A module of the fidelity plugin, whose extractors read the modes."""
    import importlib
    try:
        return importlib.import_module(f"memcore_fidelity.{module}")
    except ImportError:
        raise memcore.MemcoreError("the stacked-modes and latent-paths metrics read images with "
                                   "the fidelity plugin's extractors: install memcore-fidelity "
                                   "(plugins/fidelity)") from None


def _extractor_options():
    return fidelity("options").ExtractorOptions()


def read_channels(extractor, images: torch.Tensor, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(classes (N, C), confidence (N, C)): the classifier's top class and its probability for
    each channel of uint8 (N, C, H, W) images, each channel read as a grey image."""
    classes, confidence = [], []
    for k in range(images.shape[1]):
        prob = extractor.extract(images[:, k:k + 1].contiguous(), device)["logits"].softmax(1)
        best = prob.max(1)
        classes.append(best.indices)
        confidence.append(best.values)
    return torch.stack(classes, 1).cpu(), torch.stack(confidence, 1).cpu()


def mode_index(classes: torch.Tensor) -> torch.Tensor:
    """(N, C) classes -> (N,) mode in 0..10^C - 1 (first channel most significant)."""
    weights = CLASSES ** torch.arange(classes.shape[1] - 1, -1, -1)
    return (classes * weights).sum(1)


def coverage(modes: torch.Tensor, channels: int) -> dict[str, float]:
    """Modes hit at least once, and KL(sample histogram || uniform over the 10^C modes)."""
    total = CLASSES ** channels
    q = torch.bincount(modes, minlength=total).double() / len(modes)
    seen = q > 0
    return {"modes": int(seen.sum()),
            "kl": float((q[seen] * (q[seen] * total).log()).sum())}


class ClassifierMetric(memcore.Metric):
    """Shared: the extractor (with logits) and the confidence threshold."""

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        self.where = getattr(ctx, "role", "") or "metrics"
        self.extractor = fidelity("metrics").build_extractor(options.extractor, ctx)

    def preflight(self) -> None:
        try:
            self.extractor.preflight()
        except memcore.MemcoreError as exc:
            raise memcore.MemcoreError(f"{self.where}.extractor: {exc}") from None
        if not self.extractor.has_logits:
            raise memcore.MemcoreError(f"{self.where}.extractor: '{self.options.extractor.kind}' "
                                       "gives no class logits; the modes need a classifier")

    def protocol(self) -> dict[str, str]:
        return {**self.extractor.protocol(), "confidence": str(self.options.confidence)}


@memcore.config
class StackedModesOptions(memcore.MetricOptions):
    extractor: memcore.slot("extractor") = option(
        factory=default_extractor, help="Classifier read on every channel (it needs logits).")
    confidence: float = option(0.5, help="A channel whose top class has a lower probability "
                               "is low-confidence.", check=memcore.in_range(0.0, 1.0))


class StackedModes(ClassifierMetric):
    """``modes`` (main value, higher is better): modes with at least one of ``num_samples``
    samples; ``kl``: KL divergence of the samples' mode histogram from the uniform one;
    ``low_confidence``: share of samples with a low-confidence channel."""

    key = "modes"
    higher_is_better = True
    values = ("modes", "kl", "low_confidence")

    def compute(self, session) -> dict:
        parts = [read_channels(self.extractor, batch, session.device)
                 for batch in session.generate(self.options.num_samples)]
        classes = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, 0, dtype=torch.long)
        confidence = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, 0)
        classes = dist.gather_rows(classes.to(session.device)).cpu()
        confidence = dist.gather_rows(confidence.to(session.device)).cpu()
        low = (confidence < self.options.confidence).any(1).double().mean()
        return {**coverage(mode_index(classes), classes.shape[1]), "low_confidence": float(low),
                "mode_count": str(CLASSES ** classes.shape[1]), "samples": str(len(classes)),
                **self.protocol()}


# -- latent paths -----------------------------------------------------------------------------------
@memcore.config
class LatentPathsOptions(StackedModesOptions):
    num_samples: int = option(200, help="Latent paths, each between two latent draws.",
                              check=memcore.positive)
    points: int = option(8, help="Points inside each path (the two ends are added).",
                         check=memcore.positive)


def snap_to_memory(G, latents: dict) -> dict:
    """memoryGAN's Fig. 1: an interpolated key K̂ becomes the key of its slot of highest
    posterior, argmax_c p(c | K̂); other generators' latents are used as interpolated."""
    memory = getattr(G, "memory", None)
    if memory is None or "key" not in latents:
        return latents
    slots = memory.log_scores(latents["key"]).argmax(1)
    return {**latents, "key": memory.keys[slots]}


def path_latents(G, n: int, points: int, gen: torch.Generator, device) -> list[dict]:
    """The latents at ``points + 2`` evenly spaced places (ends included) on ``n`` straight paths
    between pairs of the generator's own latent draws."""
    a, b = G.sample_latent(n, gen, device), G.sample_latent(n, gen, device)
    for name, value in a.items():
        if not value.is_floating_point():
            raise memcore.MemcoreError(f"latent-paths: the generator's latent {name!r} is "
                                       f"{value.dtype}, not a point on a continuous path")
    return [snap_to_memory(G, {k: (1 - t) * a[k] + t * b[k] for k in a})
            for t in torch.linspace(0, 1, points + 2).tolist()]


class LatentPaths(ClassifierMetric):
    """memoryGAN's interpolation claim (Fig. 1): ``between`` (main value, lower is better) is the
    share of samples inside ``num_samples`` latent paths with a low-confidence channel;
    ``ends`` the same share at the paths' two ends (plain samples), ``excess`` the difference.
    A small classifier is over-confident on a cross-fade of two classes (a 50/50 blend of two
    Fashion-MNIST images still gets ~0.55-0.8), so the thresholded shares miss milder morphs; the
    mean confidence of a sample's weakest channel, inside (``confidence_between``) and at the
    ends (``confidence_ends``), sees them."""

    key = "between"
    values = ("between", "ends", "excess", "confidence_between", "confidence_ends")

    def compute(self, session) -> dict:
        G, n = session.G, self.options.num_samples
        gen = torch.Generator().manual_seed(session.seed * 1_000_003 + 17)
        was_training = G.training
        G.eval()
        weakest = []
        try:
            with torch.no_grad():
                for latents in path_latents(G, n, self.options.points, gen, session.device):
                    images = memcore.to_uint8(G(**latents).float()).cpu()
                    _, confidence = read_channels(self.extractor, images, session.device)
                    weakest.append(confidence.min(1).values)
        finally:
            G.train(was_training)
        weakest = torch.stack(weakest).double()                    # (points + 2, n)
        low = (weakest < self.options.confidence).double()
        between, ends = float(low[1:-1].mean()), float(low[[0, -1]].mean())
        return {"between": between, "ends": ends, "excess": between - ends,
                "confidence_between": float(weakest[1:-1].mean()),
                "confidence_ends": float(weakest[[0, -1]].mean()), "paths": str(n),
                "points": str(self.options.points), **self.protocol()}
