"""SAGAN G and D: shapes per resolution, SN/BN/LeakyReLU, block placement, conditioning."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import memcore
from memcore_sagan.attention import SelfAttention, SelfAttentionOptions
from memcore_sagan.sagan import (ConditionalBatchNorm, Discriminator, DiscriminatorOptions,
                                 Generator, GeneratorOptions)


def attention_at(*resolutions):
    block = memcore.slot("block")
    return tuple(block(kind="self-attention", options=SelfAttentionOptions(at=r)) for r in resolutions)


def build(resolution, g_blocks=(), d_blocks=(), num_classes=0, channels=3, width=8):
    torch.manual_seed(0)
    ctx = lambda role, blocks: memcore.BuildContext(resolution=resolution, channels=channels,
                                                    num_classes=num_classes, role=role,
                                                    blocks=blocks)
    G = Generator(GeneratorOptions(z_dim=16, width=width), ctx("generator", attention_at(*g_blocks)))
    D = Discriminator(DiscriminatorOptions(width=width), ctx("discriminator", attention_at(*d_blocks)))
    return G, D


@pytest.mark.parametrize("resolution, g_sides, d_sides", [
    (16, [4, 8], [8, 4]),             # every side that halves twice to a 4-8 px start works,
    (20, [5, 10], [10, 5]),           # not only the 28-128 px the recipes use
    (28, [7, 14], [14, 7]),
    (32, [4, 8, 16], [16, 8, 4]),
    (64, [4, 8, 16, 32], [32, 16, 8, 4]),
    (128, [4, 8, 16, 32, 64], [64, 32, 16, 8, 4]),
])
def test_shapes_and_offered_slots(resolution, g_sides, d_sides):
    G, D = build(resolution, width=4)
    assert sorted(G.slots.resolutions) == sorted(g_sides)
    assert sorted(D.slots.resolutions) == sorted(d_sides)
    latents = G.sample_latent(2, torch.Generator().manual_seed(0), "cpu")
    images = G(**latents)
    assert images.shape == (2, 3, resolution, resolution)
    assert images.abs().max() <= 1
    assert D(images).shape == (2,)


def test_widths_at_64_px_follow_the_sagan_code():
    G, D = build(64, width=64)
    assert G.slots.resolutions == {4: 512, 8: 256, 16: 128, 32: 64}
    assert D.slots.resolutions == {32: 64, 16: 128, 8: 256, 4: 512}


def test_spectral_norm_batchnorm_and_leaky_relu():
    G, D = build(32)
    for net in (G, D):
        weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        assert weighted and all(parametrize.is_parametrized(m, "weight") for m in weighted)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    slopes = {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}


def test_blocks_sit_at_the_requested_resolutions():
    G, D = build(64, g_blocks=(16, 32), d_blocks=(8, 4))
    seen = []
    for net in (G, D):
        for m in net.modules():
            if isinstance(m, SelfAttention):
                m.register_forward_hook(lambda m, i, o: seen.append((m.at, tuple(i[0].shape[1:]))))
    D(G(**G.sample_latent(2, torch.Generator().manual_seed(0), "cpu")))
    # (side, (channels, side, side)) in call order: G 16, G 32, then D 8, D 4.
    assert seen == [(16, (16, 16, 16)), (32, (8, 32, 32)), (8, (32, 8, 8)), (4, (64, 4, 4))]


def test_a_resolution_the_backbone_lacks_is_a_clear_error():
    with pytest.raises(memcore.RecipeError, match=r"generator.blocks\[0\].at = 12: .* 4, 8, 16, 32"):
        build(64, g_blocks=(12,))
    with pytest.raises(memcore.RecipeError, match=r"discriminator.blocks\[1\].at = 64"):
        build(64, d_blocks=(8, 64))        # the image side is not a D feature stage


@pytest.mark.parametrize("resolution", [8, 12, 18, 36, 100])   # start maps of 8 x 1, 3, 9, 9, 25
def test_bad_resolution_is_a_clear_error(resolution):
    with pytest.raises(memcore.MemcoreError, match=f"data.resolution = {resolution}: "):
        build(resolution)


def test_class_conditional_bn_and_projection():
    G, D = build(32, num_classes=5)
    assert G.num_classes == 5 and D.num_classes == 5
    assert any(isinstance(m, ConditionalBatchNorm) and m.gain is not None for m in G.modules())
    z = torch.randn(4, 16)
    c0, c1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    G.eval()   # eval: no power-iteration update of the spectral norms between the two calls
    # Fresh conditional gains are 1 and biases 0: labels change nothing until trained.
    torch.testing.assert_close(G(z, c0), G(z, c1))
    with torch.no_grad():
        next(m for m in G.modules() if isinstance(m, ConditionalBatchNorm)).bias.weight[1] += 1
    assert not torch.allclose(G(z, c0), G(z, c1))
    x = G(z, c0).detach()
    D.eval()
    assert not torch.allclose(D(x, c0), D(x, c1))
    assert D(x).shape == (4,)                   # no labels: the unconditional head only


def test_unconditional_option_ignores_labels():
    ctx = memcore.BuildContext(resolution=32, channels=1, num_classes=10, role="generator")
    G = Generator(GeneratorOptions(z_dim=8, width=4, conditional=False), ctx)
    assert G.num_classes == 0
    assert set(G.sample_latent(2, torch.Generator().manual_seed(0), "cpu")) == {"z"}
