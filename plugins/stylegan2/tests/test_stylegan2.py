"""StyleGAN2 + ADA plugin: shapes, equations against direct computations, ADA adaptation and its
state, 2-process agreement, and few-step training runs of the recipes."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import memcore
import memcore_kit.testing
from memcore_kit.testing import run_distributed, train
from memcore_stylegan2 import networks as nw
from memcore_stylegan2.ada import ADA, ADAOptions
from memcore_stylegan2.losses import PathLength, PathLengthOptions

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = ("generator.channel_base=256", "generator.channel_max=16", "generator.z_dim=16",
        "generator.w_dim=16", "discriminator.channel_base=256", "discriminator.channel_max=16",
        "train.batch_size=8")


def tiny_G(res, channels=3, num_classes=0, **kw):
    opts = nw.GeneratorOptions(z_dim=8, w_dim=8, channel_base=512, channel_max=8, **kw)
    return nw.Generator(opts, memcore.BuildContext(resolution=res, channels=channels,
                                                   num_classes=num_classes))


def tiny_D(res, channels=3, num_classes=0, **kw):
    opts = nw.DiscriminatorOptions(channel_base=512, channel_max=8, **kw)
    return nw.Discriminator(opts, memcore.BuildContext(resolution=res, channels=channels,
                                                       num_classes=num_classes))


# -- networks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("res", [32, 64, 128, 256])
def test_shapes_at_each_resolution(res):
    torch.manual_seed(0)
    G, D = tiny_G(res), tiny_D(res)
    z = torch.randn(4, 8)
    img = G(z)
    assert img.shape == (4, 3, res, res)
    assert G.num_ws == 2 * int(math.log2(res)) - 2           # stylegan2: 2 per block, 1 at 4 px, +1
    assert sorted(G.synthesis.slots.resolutions) == [2 ** i for i in range(2, int(math.log2(res)) + 1)]
    assert D(img).shape == (4,)


def test_conditional_and_grey():
    torch.manual_seed(0)
    G, D = tiny_G(32, channels=1, num_classes=10), tiny_D(32, channels=1, num_classes=10)
    latents = G.sample_latent(4, torch.Generator().manual_seed(0), "cpu")
    img = G(**latents)
    assert img.shape == (4, 1, 32, 32) and D(img, latents["c"]).shape == (4,)
    with pytest.raises(memcore.MemcoreError, match="conditional"):
        D(img)


def test_presets_and_overrides():
    G = nw.Generator(nw.GeneratorOptions(preset="cifar", channel_max=16),
                     memcore.BuildContext(resolution=32, channels=3))
    assert len(G.mapping.net) == 2 and G.style_mixing == 0.0       # cifar: 2 layers, no mixing
    D = nw.Discriminator(nw.DiscriminatorOptions(preset="cifar", channel_max=16),
                         memcore.BuildContext(resolution=32, channels=3))
    assert D.blocks[0].skip is None and D.epilogue.mbstd_group == 32  # cifar: 'orig' D
    D = nw.Discriminator(nw.DiscriminatorOptions(preset="cifar", channel_max=16, architecture="resnet"),
                         memcore.BuildContext(resolution=32, channels=3))
    assert D.blocks[0].skip is not None
    G = nw.Generator(nw.GeneratorOptions(channel_base=4096), memcore.BuildContext(resolution=64, channels=3))
    assert G.synthesis.blocks[-1].conv1.weight.shape[0] == 64   # 4096 / 64


def test_bad_resolution_names_the_key():
    with pytest.raises(memcore.MemcoreError, match="data.resolution = 28"):
        tiny_G(28)


def test_modulated_conv_equals_per_sample_conv():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 5, 7, 7), torch.randn(4, 5, 3, 3), torch.randn(3, 5)
    for demodulate in (True, False):
        out = nw.modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=1)
        for b in range(3):
            wb = weight * styles[b][None, :, None, None]
            if demodulate:
                wb = wb / (wb.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
            torch.testing.assert_close(out[b:b + 1], F.conv2d(x[b:b + 1], wb, padding=1))


def test_resampling_keeps_constants_and_shapes():
    f = nw.fir_filter()
    x = torch.ones(1, 2, 8, 8)
    up, down = nw.upsample2d(x, f), nw.downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))   # gain 4 is right
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))


def test_minibatch_std_groups_never_mix_real_and_fake():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 6, 4, 4), torch.randn(4, 6, 4, 4) * 5
    joint = nw.minibatch_std(torch.cat([real, fake]), group_size=4)
    torch.testing.assert_close(joint[:4], nw.minibatch_std(real, group_size=4))
    expected = (real.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    torch.testing.assert_close(joint[0, -1], expected.expand(4, 4))


def test_style_mixing_only_in_training_and_w_avg_tracked():
    torch.manual_seed(0)
    G = tiny_G(32, style_mixing=1.0)
    z = torch.randn(2, 8)
    _, ws = G(z, return_ws=True)
    assert not torch.equal(ws[:, 0], ws[:, -1])                   # a second w after the cutoff
    assert G.mapping.w_avg.abs().sum() > 0
    G.eval()
    avg = G.mapping.w_avg.clone()
    _, ws = G(z, return_ws=True)
    assert torch.equal(ws[:, 0], ws[:, -1]) and torch.equal(avg, G.mapping.w_avg)
    _, ws_trunc = G(z, truncation_psi=0.0, return_ws=True)
    torch.testing.assert_close(ws_trunc[0, 0], avg)


# -- losses ------------------------------------------------------------------------------------
def fake_ctx(**kw):
    logs = {}
    fields = {"device": "cpu", "labels": None, "phase": "D", "pass_name": "D", **kw}
    return types.SimpleNamespace(logs=logs, log=lambda k, v: logs.__setitem__(k, v), **fields)


def test_path_length_against_direct_jacobian():
    torch.manual_seed(0)
    n, L, wd, h = 4, 3, 5, 2
    M = torch.randn(L, wd, h * h, requires_grad=True)          # a "parameter"

    def G(z, return_ws):  # linear toy synthesis: images = sum_l ws_l M_l
        ws = z[:, None, :].expand(-1, L, -1).clone().requires_grad_(True)
        return torch.einsum("blw,lwp->bp", ws, M).view(-1, 1, h, h), ws

    loss = PathLength(PathLengthOptions(batch_shrink=2, decay=0.5))
    z = torch.randn(n, wd)
    ctx = fake_ctx(latents={"z": z}, batch_size=n, G=G, phase="G", pass_name="Greg")
    torch.manual_seed(1)
    value = loss(ctx)
    torch.manual_seed(1)
    y = torch.randn(n // 2, 1, h, h) / h                          # the same pl noise
    grad = torch.einsum("lwp,bp->blw", M, y.flatten(1))           # J_w^T y per layer
    lengths = grad.square().sum(2).mean(1).sqrt()
    pl_mean = 0.5 * lengths.mean()                                # lerp(0, mean, 0.5)
    torch.testing.assert_close(loss.pl_mean, pl_mean)
    torch.testing.assert_close(value, (lengths - pl_mean).square().mean())
    assert "pl_mean" in loss.state_dict()


# -- ADA ---------------------------------------------------------------------------------------
def after_d(ada):
    ada.after_phase(types.SimpleNamespace(pass_name="D"))


def test_ada_p_moves_towards_the_target():
    ada = ADA(ADAOptions(p=0.5, interval=2, speed_kimg=1.0))
    for _ in range(2):                                    # D confident on reals: r_t = 1 > 0.6
        ada.accumulate(torch.full((10,), 3.0))
        after_d(ada)
    assert float(ada.p) == pytest.approx(0.5 + 20 / 1000) and float(ada.rt) == 1.0
    for _ in range(2):                                    # r_t = (5 - 15) / 20 < 0.6: p down
        ada.accumulate(torch.cat([torch.ones(5), -torch.ones(15)]))
        after_d(ada)
    assert float(ada.p) == pytest.approx(0.52 - 40 / 1000) and float(ada.rt) == -0.5
    ada.accumulate(torch.ones(10))
    ada.after_phase(types.SimpleNamespace(pass_name="Dreg"))     # only main D passes count
    assert int(ada.passes) == 4
    fixed = ADA(ADAOptions(p=0.3, adaptive=False, interval=1))
    fixed.accumulate(torch.ones(4))
    after_d(fixed)
    assert float(fixed.p) == pytest.approx(0.3)


def test_ada_state_round_trip():
    ada = ADA(ADAOptions(p=0.25, interval=3))
    ada.accumulate(torch.tensor([1.0, -1.0, 2.0]))
    after_d(ada)
    restored = ADA(ADAOptions())
    restored.load_state_dict(ada.state_dict())
    for name in ("p", "sign_sum", "sign_count", "passes"):
        assert torch.equal(getattr(restored, name), getattr(ada, name)), name
    assert float(restored.p) == 0.25 and float(restored.sign_sum) == 1.0   # signs: 1 - 1 + 1


def test_ada_blits_are_exact_and_everything_is_differentiable():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    assert ADA(ADAOptions(p=0.0))(x) is x
    flips = ADA(ADAOptions(p=1.0, transforms=["xflip"]))(x)
    rots = ADA(ADAOptions(p=1.0, transforms=["rotate90"]))(x)
    for b in range(16):
        assert any(torch.allclose(flips[b], c, atol=1e-5) for c in (x[b], x[b].flip(-1)))
        assert any(torch.allclose(rots[b], x[b].rot90(k, dims=(1, 2)), atol=1e-5) for k in range(4))
    assert any(not torch.allclose(flips[b], x[b]) for b in range(16))
    xg = torch.randn(4, 1, 8, 8, requires_grad=True)
    for c, img in ((3, x[:4].clone().requires_grad_(True)), (1, xg)):
        out = ADA(ADAOptions(p=1.0))(img)
        assert out.shape == img.shape and torch.isfinite(out).all()
        (g,) = torch.autograd.grad(out.square().sum(), img)
        assert g.abs().sum() > 0


def _ada_two_ranks(signs_per_rank):
    import torch.distributed as tdist
    ada = ADA(ADAOptions(p=0.5, interval=1, speed_kimg=1.0))
    ada.accumulate(torch.tensor(signs_per_rank[tdist.get_rank()]))
    after_d(ada)
    return float(ada.p), float(ada.rt)


def test_ada_p_identical_on_two_processes():
    signs = [[1.0] * 8, [-1.0] * 4]                  # pooled r_t = 4/12 < 0.6; rank 0 alone: 1
    results = run_distributed(_ada_two_ranks, args=(signs,))
    assert results[0] == results[1]
    p, rt = results[0]
    assert rt == pytest.approx(4 / 12) and p == pytest.approx(0.5 - 12 / 1000)


# -- training runs -----------------------------------------------------------------------------
def test_fashion_recipe_trains_and_saves_ada_and_pl_state(tmp_path):
    run = train(RECIPES / "stylegan2-fashion.toml", tmp_path, steps=3,
                overrides=TINY + ("augment.interval=1", "augment.p=0.2"))
    state = torch.load(sorted((run / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    p = float(state["models"]["augment"]["p"])
    assert p != 0.2 and abs(p - 0.2) <= 3 * 8 / 20000 + 1e-9    # moved by one step per D pass
    assert float(state["losses"][2]["pl_mean"]) > 0              # path-length mean persisted
    assert (run / "samples" / "latest.png").exists()


def test_resume_continues_p_exactly(tmp_path):
    overrides = TINY + ("augment.interval=1", "augment.p=0.2", "train.checkpoint_every=2")
    straight = train(RECIPES / "stylegan2-fashion.toml", tmp_path / "a", steps=4, overrides=overrides)
    part = train(RECIPES / "stylegan2-fashion.toml", tmp_path / "b", steps=2, overrides=overrides)
    from memcore.cli import main
    assert main(["run", "--resume", str(part), "--set", "train.steps=4"]) == 0
    a = torch.load(straight / "checkpoints" / "step-0000004.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "step-0000004.pt", weights_only=True)
    assert torch.equal(a["models"]["augment"]["p"], b["models"]["augment"]["p"])
    assert float(b["models"]["augment"]["p"]) != 0.2
    for k, v in a["models"]["G"].items():
        torch.testing.assert_close(b["models"]["G"][k], v, msg=k)


def test_ada_stats_without_ada_is_a_clear_error(tmp_path):
    recipe = memcore_kit.testing.tiny_recipe(losses=[{"kind": "hinge"}, {"kind": "ada-stats"}])
    with pytest.raises(AssertionError, match="feeds the adaptive augmentation"):
        train(recipe, tmp_path, steps=1)


def test_adaptive_ada_without_its_feed_is_a_clear_error(tmp_path):
    recipe = memcore_kit.testing.tiny_recipe(augment={"kind": "ada"})
    with pytest.raises(AssertionError, match="needs the loss that feeds it"):
        train(recipe, tmp_path, steps=1)


@pytest.mark.parametrize("stem,block", [("sa-stylegan2-fashion", "self-attention"),
                                        ("moca-stylegan2-fashion", "moca")])
def test_block_recipes(tmp_path, stem, block):
    if block not in memcore.get_registry().names("block"):
        pytest.skip(f"block '{block}' is not installed")
    run = train(RECIPES / f"{stem}.toml", tmp_path, steps=2, overrides=TINY)
    state = torch.load(sorted((run / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert any(k.startswith("synthesis.slots.stages.16.0.") for k in state["models"]["G"])
    if block == "moca":  # the MoCA issue's feature-noise evaluation runs on this backbone too
        from memcore.cli import main
        assert main(["eval", str(run), "--metrics", "fid@fashion-classifier", "--num-samples",
                     "16", "--feature-noise", "1,0"]) == 0
        assert list(run.glob("eval-step-*.json"))


@pytest.mark.distributed
def test_two_process_training_with_lazy_terms(tmp_path):
    """R1 and path length under DDP (every parameter must be in each pass's graph), ADA updates,
    and the core's rank-consistency check on G, D and G_ema at the checkpoint."""
    cmd = [sys.executable, "-m", "memcore", "run", str(RECIPES / "stylegan2-fashion.toml"),
           "--nproc", "2"]
    for item in TINY + ("train.steps=4", "train.checkpoint_every=4", "train.progress=false",
                        "data.limit=64", "augment.interval=1", "augment.p=0.2",
                        f"run.root={tmp_path / 'runs'}"):
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    state = torch.load(run / "checkpoints" / "step-0000004.pt", weights_only=True)
    assert state["world_size"] == 2 and float(state["models"]["augment"]["p"]) != 0.2
