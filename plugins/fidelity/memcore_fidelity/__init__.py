"""memcore-fidelity: FID, KID, IS and precision/recall computed by torch-fidelity from features
extracted (sharded over ranks) by registered extractors, with protocol strings beside every number.

Third-party extractors subclass :class:`Extractor` and register with
``registry.add("extractor", "my-net", "my_pkg:MyExtractor", "my_pkg:MyOptions")``.
"""
from .options import ExtractorOptions
from .extractors import Extractor, fold_batchnorm, torch_fidelity_adapter

__all__ = ["Extractor", "ExtractorOptions", "fold_batchnorm", "torch_fidelity_adapter"]
