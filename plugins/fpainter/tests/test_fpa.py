"""The FPA and FPA/U-Net generators: shapes, options, state-dict names, gradient flow."""
import pytest
import torch

import memcore
from memcore_fpainter.fpa import FPA, FPAOptions
from memcore_fpainter.painting import paint_loop
from memcore_fpainter.unet import FPAUNet, FPAUNetOptions

TINY = dict(z_dim=16, steps=6, hidden=32, input_dim=16)


def ctx(resolution=16, channels=3):
    return memcore.BuildContext(resolution=resolution, channels=channels, role="generator")


def build(cls=FPA, options=FPAOptions, resolution=16, channels=3, **kw):
    torch.manual_seed(0)
    return cls(options(**{**TINY, **kw}), ctx(resolution, channels))


@pytest.mark.parametrize("kw", [
    dict(input_generator="v1"), dict(input_generator="v1", step_embedding=True, layers=2),
    dict(input_generator="v2", input_tanh=True, latent_to_init=False),
    dict(rule="hebbian"), dict(rule="oja", value_norm=True), dict(rule="oja-softmax"),
    dict(vector_lr=True),
    dict(value_tanh=True, out_tanh=False), dict(painting="loop"),
])
def test_fpa_variants_paint_images(kw):
    G = build(**kw)
    z = torch.randn(3, 16)
    out = G(z)
    assert out.shape == (3, 3, 16, 16) and torch.isfinite(out).all()
    if kw.get("out_tanh", True):
        assert out.abs().max() <= 1


def test_non_square_canvas():
    G = build(height=12, width=20, channels=1)
    keys, values, lrs = G.painter.strokes(torch.randn(2, 16))
    assert keys.shape == (2, 1, 6, 20) and values.shape == (2, 1, 6, 12) and lrs.shape == (2, 1, 6, 1)
    assert G(torch.randn(2, 16)).shape == (2, 1, 12, 20)
    assert build(height=12, width=20, vector_lr=True).painter.strokes(torch.randn(2, 16))[2] \
        .shape == (2, 3, 6, 12)


def test_update_net_phi_and_sigma():
    keys, values, lrs = build(first_step_outer=False).painter.strokes(torch.randn(4, 16))
    torch.testing.assert_close(keys.sum(-1), torch.ones(4, 3, 6))
    assert (keys > 0).all() and ((lrs > 0) & (lrs < 1)).all()


def test_first_step_is_the_plain_outer_product():
    G = build(first_step_outer=True)
    keys, values, lrs = G.painter.strokes(torch.randn(2, 16))
    assert (lrs[:, :, 0] == 1).all() and (lrs[:, :, 1:] < 1).all()
    first = paint_loop(keys[:, :, :1], values[:, :, :1], lrs[:, :, :1])
    torch.testing.assert_close(first, values[:, :, 0, :, None] * keys[:, :, 0, None, :])
    _, _, lrs_off = build(first_step_outer=False).painter.strokes(torch.randn(2, 16))
    assert (lrs_off[:, :, 0] < 1).all()


def test_fast_and_loop_painting_agree_in_the_generator():
    z = torch.randn(4, 16)
    fast, loop = build(painting="fast"), build(painting="loop")
    torch.testing.assert_close(fast(z), loop(z), atol=1e-5, rtol=1e-5)


def test_painter_steps_end_at_the_output():
    G = build(steps=5)
    z = torch.randn(2, 16)
    updates, canvases = G.painter.steps(z)
    assert updates.shape == canvases.shape == (2, 3, 5, 16, 16)
    torch.testing.assert_close(G.painter.finish(canvases[:, :, -1]), G(z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw,key", [(dict(vector_lr=True, rule="oja"), "generator.vector_lr"),
                                    (dict(step_embedding=True), "generator.step_embedding")])
def test_bad_combinations_name_the_key(kw, key):
    with pytest.raises(memcore.MemcoreError, match=key):
        build(**kw)


def test_unet_generator_keys_extend_the_fpa_keys():
    fpa = build()
    both = build(FPAUNet, FPAUNetOptions, unet_width=8, unet_mults=[1, 2], unet_groups=4)
    painter_keys = {k for k in both.state_dict() if k.startswith("painter.")}
    assert painter_keys == set(fpa.state_dict())
    assert any(k.startswith("unet.") for k in both.state_dict())
    assert both(torch.randn(2, 16)).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("stop_grad", [True, False])
def test_stop_grad_keeps_the_unet_gradient_from_the_painter(stop_grad):
    G = build(FPAUNet, FPAUNetOptions, unet_width=8, unet_mults=[1, 2], unet_groups=4,
              unet_attention_at=8, stop_grad=stop_grad)
    G(torch.randn(2, 16)).sum().backward()
    painter_grads = [p.grad for p in G.painter.parameters()]
    assert all(p.grad is not None for p in G.unet.parameters())
    assert all(g is None for g in painter_grads) == stop_grad


def test_residual_unet_starts_from_the_painter_image():
    G = build(FPAUNet, FPAUNetOptions, unet_width=8, unet_mults=[1, 2], unet_groups=4,
              unet_residual=True)
    z = torch.randn(2, 16)
    torch.testing.assert_close(G(z), G.painter(z))
    G.unet.head[-1].bias.data.fill_(0.5)
    assert not torch.allclose(G(z), G.painter(z))


def test_unet_shape_errors_name_the_keys():
    with pytest.raises(memcore.MemcoreError, match="generator.unet_mults"):
        build(FPAUNet, FPAUNetOptions, resolution=28, unet_width=8, unet_mults=[1, 2, 2, 2],
              unet_groups=4)
    with pytest.raises(memcore.MemcoreError, match="generator.unet_groups"):
        build(FPAUNet, FPAUNetOptions, unet_width=6, unet_mults=[1, 2], unet_groups=4)


def test_lightgan_heads_use_the_memcore_sign_and_decoders_match_targets():
    from memcore_fpainter.lightgan import LightGAN, LightGANOptions
    torch.manual_seed(0)
    D = LightGAN(LightGANOptions(width=8), memcore.BuildContext(resolution=32, channels=1))
    x = torch.randn(3, 1, 32, 32)
    out = D(x)
    features = x
    for attn, down in zip(D.attn, D.downs):
        features = down(attn(features))
    # lightweight-gan's head is low for real; memcore's logits are its negative (high for real)
    torch.testing.assert_close(out["logits"], -D.to_logits(features).flatten())
    assert out["recon"].shape == out["target"].shape == (3, 1, 32, 32)
    assert out["recon_quadrant"].shape == out["target_quadrant"].shape


@pytest.mark.parametrize("lazy", [False, True])
def test_lightgan_penalty_schedule(lazy):
    """Code schedule (lazy = false): every = 1 for the trainer, so the term joins the D pass with
    weight 10 unscaled, and it returns nothing on the steps in between. lazy = true: memcore's
    separate pass, every = 4 (the trainer then scales it by 4)."""
    from types import SimpleNamespace
    from memcore_fpainter.lightgan import (LightGAN, LightGANOptions, LightGANPenalty,
                                           LightGANPenaltyOptions)
    torch.manual_seed(0)
    D = LightGAN(LightGANOptions(width=8), memcore.BuildContext(resolution=32, channels=1))
    term = LightGANPenalty(LightGANPenaltyOptions(lazy=lazy))
    assert (term.every, term.weight) == ((4, 10.0) if lazy else (1, 10.0))
    real = torch.randn(3, 1, 32, 32)
    ctx = lambda step: SimpleNamespace(step=step, real=real, labels=None,
                                       discriminate=lambda x, c, augment: D(x))
    if not lazy:
        assert term(ctx(1)) is None and term(ctx(6)) is None
    images = real.clone().requires_grad_(True)
    out = D(images)
    (grad,) = torch.autograd.grad((out["logits"] + out["logits_32"]).sum(), images)
    expected = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
    torch.testing.assert_close(term(ctx(8)), expected)


def test_lightgan_last_side_sets_the_maps_the_decoders_read():
    from memcore_fpainter.lightgan import LightGAN, LightGANOptions
    for last_side, maps in ((4, [(512, 4), (512, 8)]), (8, [(512, 8), (256, 16)])):
        D = LightGAN(LightGANOptions(width=128, max_width=512, last_side=last_side),
                     memcore.BuildContext(resolution=64, channels=3))
        x, features = torch.randn(1, 3, 64, 64), []
        for attn, down in zip(D.attn, D.downs):
            x = down(attn(x))
            features.append((x.shape[1], x.shape[-1]))
        assert features[-1:-3:-1] == maps
    with pytest.raises(memcore.MemcoreError, match="discriminator.last_side"):
        LightGAN(LightGANOptions(last_side=16), memcore.BuildContext(resolution=32, channels=1))
