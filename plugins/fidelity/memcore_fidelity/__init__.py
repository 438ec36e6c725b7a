"""memcore-fidelity: FID, KID, IS and precision/recall computed by torch-fidelity from features
extracted (sharded over ranks) by registered extractors, with protocol strings beside every number.

Third-party extractors subclass :class:`Extractor` and register with
``registry.add("extractor", "my-net", "my_pkg:MyExtractor", "my_pkg:MyOptions")``.
"""
__all__ = ["Extractor", "ExtractorOptions", "fold_batchnorm", "torch_fidelity_adapter"]

# Imported on first use (PEP 562): loading the plugin (every memcore start-up) imports this
# package, and these modules import torch.
_MODULE = {"ExtractorOptions": "options", "Extractor": "extractors",
           "fold_batchnorm": "extractors", "torch_fidelity_adapter": "extractors"}


def __getattr__(name):
    if name not in _MODULE:
        raise AttributeError(f"module 'memcore_fidelity' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{_MODULE[name]}", __name__), name)
    globals()[name] = value
    return value
