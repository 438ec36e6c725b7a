"""The component protocols: Generator, Discriminator, Loss, Metric, datasets and the build context.

Every component is built by ``factory(options, ctx)`` where ``options`` is an instance of the config
class it registered and ``ctx`` a :class:`BuildContext`. ``docs/protocols.md`` is the long form.

Optional callbacks, looked up on every module inside G, D and the augmentation and on every loss
(no registration needed, so a block deep inside a backbone can take part in the step):

* ``on_build(models)``: once, after G, D, EMA G and the losses exist (``models`` is a
  :class:`Models`); e.g. a generator that samples its condition from D's memory keeps a reference.
* ``before_phase(ctx)`` / ``after_phase(ctx)``: around every phase of every step (``ctx`` is a
  :class:`memcore.step.StepContext`); ``after_phase`` runs after the optimizer step.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator, Mapping

import attrs
import torch
from torch import nn

from .cliargs import MAX_EVAL_SAMPLES
from .config import NoOptions, config, in_range, non_negative, option, positive


@attrs.define
class BuildContext:
    """What a factory knows about the run when it builds a component."""

    resolution: int          # image side in pixels
    channels: int            # image channels (1 grey, 3 RGB)
    num_classes: int = 0     # 0 for unlabelled data
    role: str = ""           # "generator", "discriminator", "loss", ...
    blocks: tuple = ()       # [[<role>.blocks]] components for backbones
    seed: int = 0
    batch_size: int = 0      # images per network call on a real batch in training, per process
    # the recipe's [data] component (kind, options), for a part that opens another split of the
    # training dataset (a metric's reference images); None where no recipe is at hand
    data: Any = None
    _slots_used: bool = False

    def block_slots(self, channels_at: Mapping[int, int]) -> "BlockSlots":
        """Build the recipe's blocks for a backbone offering these ``{resolution: channels}``."""
        from .blocks import BlockSlots
        self._slots_used = True
        return BlockSlots(self.blocks, channels_at, where=f"{self.role}.blocks", ctx=self)


class Generator(nn.Module):
    """Maps latents (and a condition) to images in [-1, 1], shape (B, channels, res, res).

    Subclasses set ``z_dim`` and ``num_classes``; override :meth:`sample_latent` when the latent is
    not a standard normal ``z`` plus uniform class labels.
    """

    z_dim: int = 128
    num_classes: int = 0

    def sample_latent(self, n: int, generator: torch.Generator, device,
                      **condition) -> dict[str, torch.Tensor]:
        """Keyword arguments for :meth:`forward` for ``n`` samples, drawn from ``generator``.

        ``condition`` carries optional user conditions (``exemplar``: images, from
        ``memcore sample --exemplar``); a generator that does not support one must say so.
        """
        if condition:
            from .errors import MemcoreError
            raise MemcoreError(f"{type(self).__name__} does not take {', '.join(condition)} "
                               "(it is an unconditional or label-conditional generator)")
        z = torch.randn(n, self.z_dim, generator=generator).to(device)
        out = {"z": z}
        if self.num_classes:
            out["c"] = torch.randint(self.num_classes, (n,), generator=generator).to(device)
        return out


class Discriminator(nn.Module):
    """Maps images (and labels ``c`` when conditional) to logits.

    The output is a tensor (B,) / (B, k) or a dict whose ``"logits"`` entry is that tensor and whose
    other entries (features, queries, class logits) are for plugin losses.
    """

    num_classes: int = 0


def logits_of(d_out) -> torch.Tensor:
    return d_out["logits"] if isinstance(d_out, Mapping) else d_out


@config
class LossOptions:
    """Base options of every loss: a weight, and how often the term runs."""

    # >= 0: 0 switches the term off (also from --set); a negative weight would make the
    # optimizer maximise the term
    weight: float = option(1.0, help="Multiplier of the term.", check=non_negative)
    every: int = option(1, help="Run every N steps as a separate (lazy) pass, scaled by N.",
                        check=positive)


class Loss:
    """A term added to the D and/or G phase.

    ``phases`` lists where it applies ("D", "G"). ``__call__(ctx)`` returns a scalar tensor (or
    ``None`` to skip) for ``ctx.phase``; the trainer multiplies it by ``weight`` and, for a lazy
    term (``every > 1``), by ``every`` in a separate pass, as stylegan2-ada does for R1.
    Values to log go to ``ctx.log(name, value)``.
    """

    phases: ClassVar[tuple[str, ...]] = ("D", "G")

    def __init__(self, options: Any = None, ctx: BuildContext | None = None):
        self.options = options if options is not None else LossOptions()

    @property
    def weight(self) -> float:
        return getattr(self.options, "weight", 1.0)

    @property
    def every(self) -> int:
        return getattr(self.options, "every", 1)

    def __call__(self, ctx) -> torch.Tensor | None:  # pragma: no cover - protocol
        raise NotImplementedError


@config
class DatasetOptions:
    """Base options of every dataset component."""

    limit: int | None = option(None, help="Use only the first N images.", check=positive)


class ImageDataset(torch.utils.data.Dataset):
    """Map-style dataset of ``(image float (C,H,W) in [-1, 1], label int)`` (label -1: none).

    ``images`` (uint8 N×C×H×W) and ``labels`` (int64 N) may be set by in-memory datasets; the
    trainer then indexes whole batches at once instead of going through a DataLoader.
    """

    resolution: int
    channels: int
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return to_float(self.images[i]), int(self.labels[i]) if self.labels is not None else -1


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images_uint8.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped)."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


@config
class MetricOptions:
    """Base options of every metric component."""

    every: int = option(0, help="Steps between evaluations during training (0: only at the end).",
                        check=lambda v: None if v >= 0 else "a number >= 0")
    num_samples: int = option(5000, help="Generated images per evaluation.",
                              check=in_range(1, MAX_EVAL_SAMPLES))


class Metric:
    """Computes numbers from samples of the EMA generator.

    ``key`` names the main value (used for the best checkpoint), ``higher_is_better`` its direction;
    ``values`` lists every value ``compute`` returns (empty: just ``key``), which is what
    ``train.best_metric`` may name (validation refuses any other name).
    ``preflight()`` runs before training and raises :class:`memcore.MemcoreError` when something
    the metric needs (weights, reference data) is missing, so nothing fails at step N.
    ``compute(session)`` runs on every process (to allow sharding) and returns a dict of numbers and
    strings describing the protocol (extractor, weights hash, sample counts).
    """

    key: str = "metric"
    higher_is_better: bool = False
    values: tuple[str, ...] = ()

    def __init__(self, options: MetricOptions, ctx: BuildContext):
        self.options = options

    def preflight(self) -> None:
        pass

    def compute(self, session) -> dict[str, Any]:  # pragma: no cover - protocol
        raise NotImplementedError


@attrs.define
class Models:
    """The networks of a run, unwrapped (no DDP)."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None
    augment: nn.Module | None
    losses: list

    def modules_with(self, method: str, include_ema: bool = False) -> Iterator[Any]:
        """Every module or loss that defines ``method`` (for the optional callbacks)."""
        seen = set()
        roots = [self.G, self.D] + ([self.augment] if self.augment is not None else [])
        if include_ema and self.G_ema is not None:
            roots.append(self.G_ema)
        for root in roots:
            for m in root.modules():
                if id(m) not in seen and callable(getattr(m, method, None)):
                    seen.add(id(m))
                    yield m
        for loss in self.losses:
            if callable(getattr(loss, method, None)):
                yield loss


__all__ = ["BuildContext", "Generator", "Discriminator", "Loss", "LossOptions", "Metric",
           "MetricOptions", "DatasetOptions", "ImageDataset", "Models", "NoOptions", "logits_of",
           "to_float", "to_uint8"]
