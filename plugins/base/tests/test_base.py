"""The base plugin: backbone shapes and slots, each loss against its formula, R1/GP, DiffAugment."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import memcore
from memcore.config import structure
from memcore.registry import get_registry


def build(kind, name, resolution=28, channels=1, num_classes=0, blocks=(), **options):
    entry = get_registry().get(kind, name)
    opts = structure(options, entry.load_config())
    ctx = memcore.BuildContext(resolution=resolution, channels=channels, num_classes=num_classes,
                               role=kind, blocks=blocks)
    return entry.load_factory()(opts, ctx)


@pytest.mark.parametrize("resolution,stages", [(28, [7, 14, 28]), (32, [4, 8, 16, 32]),
                                               (64, [4, 8, 16, 32, 64])])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_dcgan_shapes(resolution, stages, num_classes):
    G = build("generator", "dcgan", resolution, 3, num_classes, z_dim=8, width=8)
    D = build("discriminator", "dcgan", resolution, 3, num_classes, width=8)
    assert G.sizes == stages and sorted(D.slots.resolutions) == stages
    latents = G.sample_latent(5, torch.Generator().manual_seed(0), "cpu")
    assert ("c" in latents) == bool(num_classes)
    images = G(**latents)
    assert images.shape == (5, 3, resolution, resolution)
    assert images.abs().max() <= 1
    assert D(images, latents.get("c")).shape == (5,)


def test_spectral_norm_option():
    D = build("discriminator", "dcgan", width=8, spectral_norm=True)
    assert any("parametrizations" in n for n, _ in D.named_parameters())
    D = build("discriminator", "dcgan", width=8, spectral_norm=False)
    assert not any("parametrizations" in n for n, _ in D.named_parameters())


def _ctx(phase, real, fake):
    return SimpleNamespace(phase=phase, d_real=real, d_fake=fake)


R, FK = torch.tensor([0.5, -2.0, 3.0]), torch.tensor([-1.0, 0.2, 4.0])
SIG = torch.sigmoid
FORMULAS = {
    "hinge": (lambda r, f: (1 - r).clamp(min=0).mean() + (1 + f).clamp(min=0).mean(),
              lambda f: -f.mean()),
    "non-saturating": (lambda r, f: -(SIG(r).log().mean() + (1 - SIG(f)).log().mean()),
                       lambda f: -SIG(f).log().mean()),
    "saturating": (lambda r, f: -(SIG(r).log().mean() + (1 - SIG(f)).log().mean()),
                   lambda f: (1 - SIG(f)).log().mean()),
    "least-squares": (lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(),
                      lambda f: 0.5 * ((f - 1) ** 2).mean()),
    "wgan": (lambda r, f: f.mean() - r.mean(), lambda f: -f.mean()),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_adversarial_losses_match_formulas(name):
    loss = build("loss", name)
    d_formula, g_formula = FORMULAS[name]
    assert torch.allclose(loss(_ctx("D", R, FK)), d_formula(R, FK), atol=1e-6)
    assert torch.allclose(loss(_ctx("G", None, FK)), g_formula(FK), atol=1e-6)


class _QuadraticD:
    """D(x) = sum(w * x^2): gradient 2 w x, known in closed form."""
    num_classes = 0

    def __init__(self, w):
        self.w = w


def _penalty_ctx(real, fake):
    D = _QuadraticD(2.0)
    return SimpleNamespace(phase="D", real=real, fake=fake, labels=None, device="cpu",
                           discriminate=lambda x, c=None: (D.w * x ** 2).flatten(1).sum(1),
                           log=lambda *a: None)


def test_r1_matches_closed_form():
    real = torch.randn(4, 1, 3, 3)
    loss = build("loss", "r1", gamma=10.0)
    expected = 0.5 * 10.0 * ((4.0 * real) ** 2).flatten(1).sum(1).mean()
    assert torch.allclose(loss(_penalty_ctx(real, real)), expected, rtol=1e-5)
    assert loss.every == 16


def test_gradient_penalty_matches_closed_form():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    loss = build("loss", "gradient-penalty")
    torch.manual_seed(1)
    value = loss(_penalty_ctx(real, fake))
    torch.manual_seed(1)
    alpha = torch.rand(4, 1, 1, 1)
    mixed = alpha * real + (1 - alpha) * fake
    expected = (((4.0 * mixed).flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert torch.allclose(value, expected, rtol=1e-5)


def test_diffaugment_is_differentiable_and_changes_images():
    aug = build("augment", "diffaugment")
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    torch.manual_seed(0)
    y = aug(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaugment_cutout_zeroes_a_square():
    aug = build("augment", "diffaugment", policy=["cutout"], cutout_ratio=0.5)
    y = aug(torch.ones(4, 1, 8, 8))
    zeros = (y == 0).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 16)).all()


def test_diffaugment_translation_shifts_content():
    aug = build("augment", "diffaugment", policy=["translation"], translation_ratio=0.25)
    x = torch.zeros(16, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1
    y = aug(x)
    assert torch.equal(y.flatten(1).sum(1), x.flatten(1).sum(1))  # a shift of 2 keeps the square
    assert not all(torch.equal(y[i], x[i]) for i in range(16))


def test_diffaugment_probability_zero_is_identity():
    aug = build("augment", "diffaugment", probability=0.0)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(aug(x), x)
