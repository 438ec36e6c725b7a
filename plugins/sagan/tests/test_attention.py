"""The self-attention block: the SAGAN equations, gamma = 0 identity, fused == explicit, options."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import memcore
from memcore_sagan.attention import SelfAttention, SelfAttentionOptions, record_attention

BIGGAN = dict(value_ratio=2, out_projection=True, pool_keys=True, spectral_norm=True, bias=False)


def block(channels=32, at=8, **options):
    torch.manual_seed(0)
    ctx = memcore.BuildContext(resolution=at, channels=channels, role="generator.blocks[0]")
    return SelfAttention(SelfAttentionOptions(at=at, **options), ctx)


def with_gamma(layer, value=0.7):
    with torch.no_grad():
        layer.gamma.fill_(value)
    return layer


def test_gamma_zero_is_the_identity_at_initialisation():
    x = torch.randn(2, 32, 8, 8)
    for options in ({}, BIGGAN):
        layer = block(**options)
        assert layer.gamma.item() == 0.0
        assert torch.equal(layer(x), x)


def test_gamma_gets_a_gradient_at_zero():
    layer = block()
    layer(torch.randn(2, 32, 8, 8)).square().sum().backward()
    assert layer.gamma.grad is not None and layer.gamma.grad.abs() > 0


def test_explicit_path_matches_the_sagan_equations():
    layer = with_gamma(block(fused=False))
    x = torch.randn(2, 32, 6, 5)
    conv = lambda c, t: torch.einsum("oc,bchw->bohw", c.weight[:, :, 0, 0], t) \
        + c.bias[None, :, None, None]
    f, g, h = conv(layer.query, x).flatten(2), conv(layer.key, x).flatten(2), conv(layer.value, x).flatten(2)
    beta = torch.softmax(torch.einsum("bci,bcj->bij", f, g), dim=-1)      # (B, N, N): query i, key j
    o = torch.einsum("bij,bcj->bci", beta, h).view_as(x)
    torch.testing.assert_close(layer(x), x + 0.7 * o, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [{}, BIGGAN], ids=["sagan", "biggan"])
def test_fused_and_explicit_agree(options):
    fused = with_gamma(block(**options, fused=True))
    explicit = with_gamma(block(**options, fused=False))
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(3, 32, 16, 16)
    torch.testing.assert_close(fused(x), explicit(x), atol=1e-5, rtol=1e-5)
    with record_attention(fused):   # recording forces the explicit path
        torch.testing.assert_close(fused(x), explicit(x), atol=1e-5, rtol=1e-5)


def test_sdpa_gets_no_sqrt_d_scaling():
    # With the default 1/sqrt(d) scale the fused path would differ from the explicit one.
    layer = with_gamma(block(fused=False))
    x = torch.randn(2, 32, 8, 8)
    q = layer.query(x).flatten(2).transpose(1, 2)
    k = layer.key(x).flatten(2).transpose(1, 2)
    v = layer.value(x).flatten(2).transpose(1, 2)
    scaled = F.scaled_dot_product_attention(q, k, v)              # default scale
    unscaled = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    assert not torch.allclose(scaled, unscaled, atol=1e-4)
    expected = x + 0.7 * unscaled.transpose(1, 2).reshape_as(x)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options, key_side", [({}, 8), (BIGGAN, 4)], ids=["full", "pooled"])
def test_recorded_maps_are_distributions_over_keys(options, key_side):
    layer = with_gamma(block(**options))
    with record_attention(layer) as found:
        layer(torch.randn(2, 32, 8, 8))
    [(who, maps)] = found
    assert who is layer and maps.shape == (2, 8, 8, key_side, key_side)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2, 8, 8))
    assert layer.recording is None      # the context restores the fused path


def test_variant_widths_and_spectral_norm():
    plain, big = block(), block(**BIGGAN)
    assert (plain.query.out_channels, plain.value.out_channels) == (4, 32)
    assert isinstance(plain.out, torch.nn.Identity) and plain.query.bias is not None
    assert not any(parametrize.is_parametrized(m) for m in (plain.query, plain.key, plain.value))
    assert (big.query.out_channels, big.value.out_channels, big.out.in_channels) == (4, 16, 16)
    assert all(parametrize.is_parametrized(m, "weight") for m in (big.query, big.key, big.value, big.out))
    assert big.query.bias is None


def test_bad_options_name_the_recipe_key():
    with pytest.raises(memcore.MemcoreError, match=r"generator.blocks\[0\].value_ratio = 4"):
        block(value_ratio=4)
    with pytest.raises(memcore.MemcoreError, match=r"4 channels at 8 px"):
        block(channels=4)


def test_state_dict_round_trip():
    a, b = with_gamma(block(**BIGGAN), 0.3), block(**BIGGAN)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 32, 8, 8)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x))
