"""The metric components: features from the registered extractor (sharded, gathered), the number
from torch-fidelity's own functions, computed once on rank 0 and shared, with its protocol.

Every result carries protocol strings (extractor, weights hash, resize, sample counts, reference,
versions); the core logs each value as ``metric/<value>@<extractor>`` so extractors never mix.
"""
from __future__ import annotations

import warnings

import torch

import memcore
from memcore import dist

from .reference import (cache_root, check_reference_split, fake_features, reference_features,
                        reference_images)

_EXTRACTORS: dict = {}  # (kind, options) -> extractor: metrics sharing an extractor load it once


def build_extractor(spec, ctx):
    key = (spec.kind, spec.options)
    if key not in _EXTRACTORS:
        entry = memcore.get_registry().get("extractor", spec.kind)
        _EXTRACTORS[key] = entry.load_factory()(spec.options, ctx)
    return _EXTRACTORS[key]


def versions() -> dict[str, str]:
    import torch_fidelity
    return {"torch_fidelity": torch_fidelity.__version__, "torch": torch.__version__}


class FidelityMetric(memcore.Metric):
    """Shared plumbing; subclasses set ``metric``, ``main`` and implement ``score``."""

    metric = "fidelity"
    main = "fidelity"            # the value that selects the best checkpoint
    needs_real = True
    needs_logits = False
    min_samples = 1              # fewer fake (and real) samples give no value

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        self.where = getattr(ctx, "role", "") or "metrics"
        self.check_counts(options)
        if self.needs_real:
            check_reference_split(getattr(ctx, "data", None), options.reference_split, self.where)
        self.extractor = build_extractor(options.extractor, ctx)
        self.key = self.main

    def needed(self, options) -> tuple[int, str]:
        """The fewest samples the value is defined for, and why."""
        return self.min_samples, "a covariance or kernel estimate needs two samples"

    def check_counts(self, options) -> None:
        need, why = self.needed(options)
        counts = [("num_samples", options.num_samples)]
        if self.needs_real and options.num_real is not None:
            counts.append(("num_real", options.num_real))
        for key, n in counts:
            if n < need:
                raise memcore.MemcoreError(f"{self.where}.{key} = {n}: metric '{self.metric}' "
                                           f"needs at least {need} ({why})")

    def preflight(self) -> None:
        try:
            self.extractor.preflight()
        except memcore.MemcoreError as exc:
            raise memcore.MemcoreError(f"{self.where}.extractor: {exc}") from None
        if self.needs_logits and not self.extractor.has_logits:
            raise memcore.MemcoreError(f"{self.where}: metric '{self.metric}' needs class logits; "
                                       f"extractor '{self.options.extractor.kind}' gives features only")

    def compute(self, session) -> dict:
        n_fake = self.options.num_samples
        fake = fake_features(session, self.extractor, n_fake)
        protocol = {**self.extractor.protocol(), "fake_samples": str(len(fake["features"]))}
        real = None
        if self.needs_real:
            ref = reference_images(session, self.options.reference_split,
                                   self.options.num_real or n_fake, self.where)
            real, digest = reference_features(ref, self.extractor, session.device,
                                              cache_root(self.options.cache_dir))
            protocol.update(real_samples=str(len(real["features"])), reference=ref.describe(),
                            reference_cache=digest[:12])
        # torch-fidelity once, on rank 0; every rank gets the same numbers (best checkpoint agrees)
        values = self.score(fake, real, protocol) if dist.is_main() else None
        values, extra = dist.gather_object(values)[0]
        protocol.update(extra, **versions())
        return {**values, **protocol}

    def score(self, fake: dict, real: dict | None, protocol: dict) -> tuple[dict, dict]:
        raise NotImplementedError


class FID(FidelityMetric):
    metric = main = "fid"
    values = ("fid",)
    min_samples = 2

    def score(self, fake, real, protocol):
        from torch_fidelity.metric_fid import (KEY_METRIC_FID, fid_features_to_statistics,
                                               fid_statistics_to_metric)
        stats_fake = fid_features_to_statistics(fake["features"])
        stats_real = fid_features_to_statistics(real["features"])
        out = fid_statistics_to_metric(stats_fake, stats_real, verbose=False)
        return {"fid": out[KEY_METRIC_FID]}, {}


def default_kid_subset(samples: int) -> int:
    """A tenth of the samples (at least 2, at most torch-fidelity's 1000): subsets of all of them
    would be the same set each time, and kid_std their (zero) spread."""
    return max(2, min(1000, samples // 10))


class KID(FidelityMetric):
    metric = main = "kid"
    values = ("kid", "kid_std")
    min_samples = 2

    def score(self, fake, real, protocol):
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, \
            kid_features_to_metric
        available = min(len(fake["features"]), len(real["features"]))
        subset = min(self.options.kid_subset_size or default_kid_subset(available), available)
        if self.options.kid_subset_size and subset < self.options.kid_subset_size:
            warnings.warn(f"{self.where}.kid_subset_size = {self.options.kid_subset_size} is more "
                          f"than the {available} samples available; using subsets of {subset}",
                          stacklevel=2)
        out = kid_features_to_metric(fake["features"], real["features"], kid_subset_size=subset,
                                     kid_subsets=self.options.kid_subsets, verbose=False)
        return ({"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD]},
                {"kid_subset_size": str(subset), "kid_subsets": str(self.options.kid_subsets)})


class ISC(FidelityMetric):
    """Inception score on Inception's logits; with another classifier (fashion-classifier) it is the
    in-domain classifier score memoryGAN reports for Fashion-MNIST, named by its extractor."""

    metric = main = "isc"
    values = ("isc", "isc_std")
    higher_is_better = True
    needs_real = False
    needs_logits = True

    def score(self, fake, real, protocol):
        from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, \
            isc_features_to_metric
        splits = min(self.options.splits, len(fake["logits"]))
        out = isc_features_to_metric(fake["logits"], splits=splits, shuffle=True, rng_seed=2020)
        return ({"isc": out[KEY_METRIC_ISC_MEAN], "isc_std": out[KEY_METRIC_ISC_STD]},
                {"isc_splits": str(splits)})


class PRC(FidelityMetric):
    """Improved precision and recall (Kynkaanniemi et al.); the F-score selects the best checkpoint."""

    metric, main = "prc", "f_score"
    values = ("precision", "recall", "f_score")
    higher_is_better = True

    def needed(self, options) -> tuple[int, str]:
        k = options.neighborhood
        return k + 1, f"the k-NN radius of {self.where}.neighborhood = {k} needs k other samples"

    def score(self, fake, real, protocol):
        from torch_fidelity.metric_prc import KEY_METRIC_F_SCORE, KEY_METRIC_PRECISION, \
            KEY_METRIC_RECALL, prc_features_to_metric
        out = prc_features_to_metric(fake["features"], real["features"],
                                     prc_neighborhood=self.options.neighborhood, verbose=False)
        return ({"precision": out[KEY_METRIC_PRECISION], "recall": out[KEY_METRIC_RECALL],
                 "f_score": out[KEY_METRIC_F_SCORE]},
                {"prc_neighborhood": str(self.options.neighborhood)})
