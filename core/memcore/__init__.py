"""memcore: memory and attention in GANs, with everything but the core in plugins.

The public API plugins may use is what this module exports; everything else is internal.
"""
__version__ = "0.1.0"

from .errors import MemcoreError, RecipeError, TrainingStopped  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .registry import API_VERSION, KINDS, get_registry  # noqa: E402
from .config import (config, option, NoOptions, positive, non_negative, in_range, at_least, each,  # noqa: E402
                     slot)
from .safeload import load_tensors, load_numpy_pickle  # noqa: E402

# The torch-based part of the API is imported on first use (PEP 562), so that plugin registration,
# `memcore --version`, `plugins` and `list` never import torch.
_LAZY = {
    "protocols": ("BuildContext", "Generator", "Discriminator", "Loss", "LossOptions", "Metric",
                  "MetricOptions", "DatasetOptions", "ImageDataset", "Models", "logits_of",
                  "to_float", "to_uint8"),
    "memory": ("Memory", "slot_statistics"),
    "blocks": ("BlockOptions", "BlockSlots"),
    "step": ("StepContext", "add_loss"),
    "runs": ("LoadedRun", "load_run", "train"),
    "evaluation": ("ImageSession", "MetricSession", "score_images"),
    "build": ("build_component",),
}
_LAZY_MODULE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name):
    import importlib
    if name in ("dist", "safewrite"):  # public submodules, as attributes too
        return importlib.import_module(f".{name}", __name__)
    if name not in _LAZY_MODULE:
        raise AttributeError(f"module 'memcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY_MODULE[name]}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "__version__", "API_VERSION", "KINDS", "MemcoreError", "RecipeError", "TrainingStopped",
    "hookimpl", "get_registry", "config", "option", "NoOptions", "positive", "non_negative",
    "in_range", "at_least", "each", "slot", "BuildContext", "Generator", "Discriminator", "Loss", "LossOptions",
    "Metric", "MetricOptions", "DatasetOptions", "ImageDataset", "Models", "logits_of",
    "to_float", "to_uint8", "Memory", "slot_statistics", "BlockOptions", "BlockSlots",
    "StepContext", "add_loss", "LoadedRun", "load_run", "train", "MetricSession", "ImageSession",
    "score_images", "build_component", "load_tensors", "load_numpy_pickle", "dist", "safewrite",
]
