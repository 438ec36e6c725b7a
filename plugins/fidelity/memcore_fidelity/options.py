"""Recipe options of the extractors and metrics (kept light: no torch import)."""
from __future__ import annotations

from typing import Literal, Optional

import memcore
from memcore import option, positive


@memcore.config
class ExtractorOptions:
    """Execution settings shared by every extractor; they change speed, never the protocol."""

    batch_size: int = option(64, help="Images per forward pass.", check=positive)
    channels_last: bool = option(True, help="Run convolutions in channels-last memory format "
                                 "(faster on CPU; features equal to ~1e-5).")
    fold_batchnorm: bool = option(True, help="Fold eval-mode BatchNorm into the preceding "
                                  "convolution (faster; features equal to ~1e-5).")
    threads: int = option(0, help="torch intra-op threads while extracting (0: leave as is).",
                          check=memcore.non_negative)


@memcore.config
class InceptionOptions(ExtractorOptions):
    # "" rather than None: `memcore show` cannot print a None nested in a metric's extractor table
    weights: str = option("", help="Path to pt_inception-2015-12-05-6726825d.pth (empty: "
                          "$MEMCORE_INCEPTION_WEIGHTS, then torch hub's checkpoint cache).")
    download: bool = option(False, help="Allow preflight to download the weights into torch "
                            "hub's cache when they are missing (needs internet).")


def _default_extractor():
    return memcore.slot("extractor")(kind="inception-v3-compat", options=InceptionOptions())


@memcore.config
class FidelityOptions(memcore.MetricOptions):
    extractor: memcore.slot("extractor") = option(
        factory=_default_extractor, help="Feature extractor: a name or a table with kind = "
        "\"<extractor>\" and its options (memcore list extractor).")
    num_real: Optional[int] = option(None, help="Reference images (default: num_samples; capped "
                                     "by the reference set's size, with a warning).",
                                     check=positive)
    reference_split: Literal["train", "test", "all"] = option(
        "train", help="'train': the run's own training data (data.limit included); otherwise the "
        "same dataset with this split and no limit.")
    cache_dir: Optional[str] = option(None, help="Reference feature cache (default: "
                                      "$MEMCORE_CACHE/fidelity, else ~/.cache/memcore/fidelity).")


@memcore.config
class KIDOptions(FidelityOptions):
    kid_subset_size: Optional[int] = option(
        None, help="Samples per subset (default: a tenth of the samples compared, at least 2 and "
        "at most torch-fidelity's 1000, so that the subsets differ and kid_std measures their "
        "spread; subsets of all the samples make kid_std ~0); a larger value than the samples "
        "available is reduced, with a warning.",
        check=memcore.at_least(2, "samples per subset: the unbiased MMD² divides by m (m - 1)"))
    kid_subsets: int = option(100, help="Number of random subsets averaged.", check=positive)


@memcore.config
class ISCOptions(FidelityOptions):
    splits: int = option(10, help="Splits whose scores give the mean and std.", check=positive)


@memcore.config
class PRCOptions(FidelityOptions):
    neighborhood: int = option(3, help="k of the k-NN radius of each manifold.", check=positive)
