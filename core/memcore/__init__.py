"""memcore: memory and attention in GANs, with everything but the core in plugins.

The public API plugins may use is what this module exports; everything else is internal.
"""
__version__ = "0.1.0"

from .errors import MemcoreError, RecipeError, TrainingStopped  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .registry import API_VERSION, KINDS, get_registry  # noqa: E402
from .config import (config, option, NoOptions, positive, non_negative, in_range, each,  # noqa: E402
                     slot)
from .protocols import (BuildContext, Generator, Discriminator, Loss, LossOptions, Metric,  # noqa: E402
                        MetricOptions, DatasetOptions, ImageDataset, Models, logits_of, to_float,
                        to_uint8)
from .memory import Memory, slot_statistics  # noqa: E402
from .blocks import BlockOptions, BlockSlots  # noqa: E402
from .step import StepContext  # noqa: E402
from .runs import LoadedRun, load_run, train  # noqa: E402
from .evaluation import ImageSession, MetricSession, score_images  # noqa: E402
from .build import build_component  # noqa: E402
from . import dist  # noqa: E402

__all__ = [
    "__version__", "API_VERSION", "KINDS", "MemcoreError", "RecipeError", "TrainingStopped",
    "hookimpl", "get_registry", "config", "option", "NoOptions", "positive", "non_negative",
    "in_range", "each", "slot", "BuildContext", "Generator", "Discriminator", "Loss", "LossOptions",
    "Metric", "MetricOptions", "DatasetOptions", "ImageDataset", "Models", "logits_of",
    "to_float", "to_uint8", "Memory", "slot_statistics", "BlockOptions", "BlockSlots",
    "StepContext", "LoadedRun", "load_run", "train", "MetricSession", "ImageSession",
    "score_images", "build_component", "dist",
]
