"""The code's CIFAR-10 networks (ResNet, layer norm, ELU), the -Memory head, the real-only
brightness/contrast augmentation, and 2-step runs of both CIFAR-10 recipes on fake 32 px images."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import memcore
import memcore_kit.testing
from memcore_kit.contracts import check_discriminator, check_generator, factory_of
from memcore_memorygan.augment import BrightnessContrast, BrightnessContrastOptions
from memcore_memorygan.losses import MemoryGANLoss, MemoryGANLossOptions
from memcore_memorygan.memory import DiscriminativeMemory
from memcore_memorygan.networks import DMN, DMNOptions
from memcore_memorygan.resnet import (LayerNorm2d, ResidualBlock, ResNetEncoder, ResNetGenerator,
                                      ResNetGeneratorOptions, upsample)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CTX = memcore.BuildContext(resolution=32, channels=3, role="generator")
SMALL_D = {"backbone": "resnet", "width": 8, "key_dim": 16, "slots": 64, "top_k": 8}


def dmn(**options):
    torch.manual_seed(0)
    return DMN(DMNOptions(**{**SMALL_D, **options}), CTX)


# -- shapes -------------------------------------------------------------------------------------
def test_generator_and_inference_network_shapes():
    torch.manual_seed(0)
    G = ResNetGenerator(ResNetGeneratorOptions(z_dim=16, width=8), CTX)
    images = G(torch.randn(5, 16))
    assert images.shape == (5, 3, 32, 32) and images.abs().max() <= 1
    out = dmn()(images)
    assert set(out) == {"logits", "prob", "query", "raw_query"}
    assert out["raw_query"].shape == (5, 16) and out["logits"].shape == (5,)
    grey = memcore.BuildContext(resolution=32, channels=1)
    assert ResNetEncoder(16, 8, True, grey)(torch.randn(2, 1, 32, 32)).shape == (2, 16)


def test_sizes_other_than_32_are_a_clear_error():
    for res in (28, 64):
        ctx = memcore.BuildContext(resolution=res, channels=3, role="generator.inner")
        with pytest.raises(memcore.MemcoreError, match=f"needs 32 px images.*got {res} px"):
            ResNetGenerator(ResNetGeneratorOptions(), ctx)
        with pytest.raises(memcore.MemcoreError, match='backbone = "resnet".*needs 32 px'):
            DMN(DMNOptions(backbone="resnet"), ctx)


def test_contracts():
    check_generator(factory_of("generator", "memorygan-resnet", {"z_dim": 8, "width": 8},
                               resolution=32, channels=3), resolution=32, channels=3)
    for memory in (True, False):
        check_discriminator(factory_of("discriminator", "memorygan", {**SMALL_D, "memory": memory},
                                       resolution=32, channels=3), resolution=32, channels=3)


# -- layers and structure -----------------------------------------------------------------------
def test_layer_norm_is_tf_contrib_layer_norm():
    torch.manual_seed(0)
    ln = LayerNorm2d(4)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2.0)
        ln.bias.normal_()
    x = torch.randn(3, 4, 5, 6) * torch.tensor([1.0, 3.0, 0.5, 2.0])[:, None, None] + 1.5
    # tf.contrib.layers.layer_norm: moments over (H, W, C) per sample, biased variance, eps 1e-12,
    # per-channel gamma and beta
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-12) * ln.weight[:, None, None] \
        + ln.bias[:, None, None]
    assert torch.allclose(ln(x), expected, atol=1e-5)
    # the statistics span the channels: per-channel means are not zeroed (not instance norm)
    plain = LayerNorm2d(4)(x)
    assert torch.allclose(plain.mean((1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert plain.mean((2, 3)).abs().max() > 0.1


def depth_to_space(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """``tf.depth_to_space`` (NHWC semantics) on an NCHW tensor: output[b, c, h*s + i, w*s + j] =
    input[b, (i*s + j) * C_out + c, h, w] (not torch's pixel_shuffle channel order)."""
    b, c, h, w = x.shape
    out = c // (block * block)
    x = x.view(b, block, block, out, h, w).permute(0, 3, 4, 1, 5, 2)   # b, c, h, i, w, j
    return x.reshape(b, out, h * block, w * block)


def test_upsampling_is_depth_to_space_of_the_tiled_tensor():
    x = torch.randn(2, 12, 3, 5)
    y = depth_to_space(x, 2)                                         # TF's NHWC definition
    for h, i, w, j, c in [(0, 0, 0, 0, 0), (2, 1, 4, 0, 1), (1, 1, 3, 1, 2), (0, 1, 1, 0, 2)]:
        assert y[:, c, h * 2 + i, w * 2 + j].equal(x[:, (i * 2 + j) * 3 + c, h, w])
    z = torch.randn(2, 3, 4, 4)
    assert upsample(z).equal(F.interpolate(z, scale_factor=2, mode="nearest"))
    assert upsample(z).equal(depth_to_space(torch.cat([z, z, z, z], dim=1), 2))  # the code's op


@pytest.mark.parametrize("resample,size", [("down", 4), ("up", 16), (None, 8)])
def test_residual_block_has_bn_inside_and_ln_at_the_output(resample, size):
    torch.manual_seed(0)
    block = ResidualBlock(6, 6, resample)
    assert isinstance(block.norm1, nn.BatchNorm2d) and isinstance(block.norm_out, LayerNorm2d)
    x = torch.randn(4, 6, 8, 8)
    out = block(x)
    assert out.shape == (4, 6, size, size)
    # out = ELU(LN(shortcut(x) + conv2(ELU(BN(conv1(x)))))), BN with this batch's statistics
    h = block.conv1(x)
    h = (h - h.mean((0, 2, 3), keepdim=True)) / torch.sqrt(h.var((0, 2, 3), unbiased=False,
                                                                keepdim=True) + 1e-5)
    h = block.conv2(F.elu(h))
    skip = x if resample is None else block.shortcut(x)
    s = skip + h
    mean, var = s.mean((1, 2, 3), keepdim=True), s.var((1, 2, 3), unbiased=False, keepdim=True)
    assert torch.allclose(out, F.elu((s - mean) / torch.sqrt(var + 1e-12)), atol=1e-4)
    no_bn = ResidualBlock(6, 6, resample, batch_norm=False)
    assert isinstance(no_bn.norm1, nn.Identity)


def test_networks_are_the_codes_layout():
    D = dmn(width=128, key_dim=512, slots=16384, top_k=256)
    enc = D.encoder
    kinds = lambda m, t: sum(isinstance(x, t) for x in m.modules())  # noqa: E731
    assert kinds(enc, nn.BatchNorm2d) == 3 and kinds(enc, LayerNorm2d) == 4   # 3 blocks + stem
    assert [type(b.shortcut).__name__ for b in enc.res] == ["ConvMeanPool", "Identity", "Identity"]
    assert enc.to_key.kernel_size == (4, 4) and enc.to_key.stride == (2, 2)
    assert not any(isinstance(m, (nn.LeakyReLU, nn.ReLU)) for m in D.modules())
    G = ResNetGenerator(ResNetGeneratorOptions(z_dim=528), CTX)
    assert kinds(G, nn.BatchNorm2d) == 3 and kinds(G, LayerNorm2d) == 4        # fc + 3 blocks
    assert all(c.out_channels == 128 for c in G.modules() if isinstance(c, nn.Conv2d)
               and c is not G.to_image)
    # the paper: "MemoryGAN with 4,128K parameters" on CIFAR-10 (G fed [K_c (512), z (16)])
    params = sum(p.numel() for p in [*G.parameters(), *D.parameters()])
    assert round(params / 1000) == 4128
    weights = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.Conv2d)])
    assert weights.abs().max() <= 0.04 and abs(weights.std().item() - 0.0176) < 0.002  # trunc N(0, .02)


def test_block_slots_are_offered_and_called_at_each_stage():
    G = ResNetGenerator(ResNetGeneratorOptions(z_dim=4, width=8), CTX)
    D = dmn()
    assert G.slots.resolutions == {4: 8, 8: 8, 16: 8, 32: 8}
    assert D.encoder.slots.resolutions == {16: 8, 8: 8}
    calls = []
    for slots in (G.slots, D.encoder.slots):
        slots.forward = lambda res, x: calls.append((res, tuple(x.shape[1:]))) or x
    D(G(torch.randn(2, 4)))
    assert calls == [(4, (8, 4, 4)), (8, (8, 8, 8)), (16, (8, 16, 16)), (32, (8, 32, 32)),
                     (16, (8, 16, 16)), (8, (8, 8, 8))]


# -- -Memory --------------------------------------------------------------------------------------
def test_no_memory_head():
    D = dmn(memory=False)
    assert not any(isinstance(m, DiscriminativeMemory) for m in D.modules())
    assert not any(k.startswith("memory.") for k in D.state_dict())
    # the same inference network as the memory variant, weight for weight under one seed
    with_memory = dmn().state_dict()
    assert all(torch.equal(v, with_memory[k])
               for k, v in D.state_dict().items() if k.startswith("encoder."))
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    out = D(x)
    assert set(out) == {"logits"} and out["logits"].shape == (4,)
    assert torch.allclose(out["logits"], D.head(D.encoder(x)).squeeze(1))
    out["logits"].sum().backward()
    assert x.grad.abs().sum() > 0
    # dcgan backbone too
    dcgan = DMN(DMNOptions(slots=32, top_k=4, key_dim=8, width=4, memory=False),
                memcore.BuildContext(resolution=28, channels=1))
    assert set(dcgan(torch.randn(2, 1, 28, 28))) == {"logits"}


def test_memorygan_loss_on_a_memory_free_dmn_is_a_clear_error():
    D = dmn(memory=False)
    loss = MemoryGANLoss(MemoryGANLossOptions(), CTX)
    G = ResNetGenerator(ResNetGeneratorOptions(z_dim=4, width=8), CTX)
    models = memcore.Models(G=G, D=D, G_ema=None, augment=None, losses=[loss])
    with pytest.raises(memcore.MemcoreError, match=r"discriminator.memory = false.*saturating"):
        for m in models.modules_with("on_build"):
            m.on_build(models)


def test_memorygan_loss_on_the_no_memory_recipe_stops_the_run(tmp_path, monkeypatch, capsys):
    from memcore.cli import main
    monkeypatch.chdir(tmp_path)
    images = fake_cifar(tmp_path / "images", 2)
    code = main(["run", str(RECIPES / "cifar10-no-memory.toml"),
                 "--set", 'losses=[{kind = "memorygan"}]',
                 "--set", f'data={{kind = "image-folder", path = "{images}", resolution = 32}}',
                 "--set", "generator.width=8", "--set", "discriminator.width=8"])
    err = capsys.readouterr().err
    assert code != 0 and "discriminator.memory = false" in err and "Traceback" not in err, err


# -- augmentation ---------------------------------------------------------------------------------
def augment(x, **options):
    torch.manual_seed(0)
    return BrightnessContrast(BrightnessContrastOptions(**options))(x)


def test_brightness_is_one_offset_per_image_within_the_range():
    x = torch.rand(4000, 3, 4, 4) * 2 - 1
    b = 32 / 255
    delta = augment(x, contrast=(1.0, 1.0)) - x
    per_image = delta[:, :1, :1, :1]
    assert torch.allclose(delta, per_image.expand_as(delta), atol=1e-6)  # same on every pixel
    assert per_image.min() >= -b and per_image.max() <= b
    assert per_image.min() < -0.98 * b and per_image.max() > 0.98 * b  # uniform over the range
    assert abs(per_image.mean()) < 5 * b / (3 * 4000) ** 0.5       # U[-b, b]: mean 0 ...
    assert abs(per_image.std() - b / 3 ** 0.5) < 0.03 * b           # ... and std b / sqrt(3)


def test_contrast_scales_each_channel_around_its_mean():
    x = torch.rand(4000, 3, 4, 4) * 2 - 1
    out = augment(x, brightness=0.0)
    mean = x.mean((2, 3), keepdim=True)
    assert torch.allclose(out.mean((2, 3), keepdim=True), mean, atol=1e-5)  # means kept
    factor = (out - mean) / (x - mean)
    per_image = factor[:, 0, 0, 0]
    assert torch.allclose(factor, per_image[:, None, None, None].expand_as(factor), atol=1e-3)
    assert per_image.min() >= 0.8 - 1e-4 and per_image.max() <= 1.2 + 1e-4
    assert per_image.min() < 0.81 and per_image.max() > 1.19
    assert out.abs().max() > 1  # no clipping, as TF on float images


def test_batch_draw_shares_one_delta_and_factor():
    x = torch.rand(8, 3, 4, 4)
    delta = augment(x, contrast=(1.0, 1.0), draw="batch") - x
    assert torch.allclose(delta, delta[0, 0, 0, 0].expand_as(delta), atol=1e-6)


def test_bad_contrast_range_is_refused():
    with pytest.raises(memcore.RecipeError, match="contrast"):
        memcore.build_component("augment", {"kind": "brightness-contrast", "contrast": [1.2, 0.8]})


def test_augmentation_applies_to_reals_only():
    """Fakes reach D untouched and the real batch is not augmented again inside the step."""
    aug = BrightnessContrast(BrightnessContrastOptions())
    assert aug.applies_to == "real"
    seen = []

    class Recorder(memcore.Discriminator):
        def forward(self, x, c=None):
            seen.append(x.clone())
            return x.flatten(1).mean(1)

    G = ResNetGenerator(ResNetGeneratorOptions(z_dim=4, width=8), CTX)
    D = Recorder()
    models = memcore.Models(G=G, D=D, G_ema=None, augment=aug, losses=[])
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    for phase in ("D", "G"):
        seen.clear()
        ctx = memcore.StepContext(phase=phase, pass_name=phase, step=0, nets={"G": G, "D": D},
                                  models=models, real=real, labels=None,
                                  latent_generator=torch.Generator().manual_seed(0),
                                  device="cpu", memories={}, recipe=None)
        ctx.d_fake, ctx.d_real
        shown = torch.cat(seen)
        assert torch.equal(shown, torch.cat([real, ctx.fake.detach()]) if phase == "D"
                           else torch.cat([ctx.fake.detach(), real]))


# -- 2-step runs of both recipes -------------------------------------------------------------------
def fake_cifar(folder: Path, n: int = 16) -> Path:
    from PIL import Image
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


SMALL = ["discriminator.width=8", "discriminator.key_dim=16", "train.batch_size=8",
         "train.grid_size=4"]


@pytest.mark.parametrize("recipe,extra", [
    ("cifar10-memorygan.toml", ["discriminator.slots=64", "discriminator.top_k=8",
                                "generator.key_dim=16", "generator.inner.width=8"]),
    ("cifar10-no-memory.toml", ["generator.width=8", "generator.z_dim=8"]),
])
def test_cifar_recipes_train_two_steps(tmp_path, recipe, extra):
    images = fake_cifar(tmp_path / "images")
    data = f'data={{kind = "image-folder", path = "{images}", resolution = 32}}'
    run_dir = memcore_kit.testing.train(RECIPES / recipe, tmp_path, steps=2,
                                    overrides=[data, *SMALL, *extra])
    state = torch.load(run_dir / "checkpoints" / "step-0000002.pt", weights_only=True)
    assert int(state["step"]) == 2
    D = state["models"]["D"]
    if recipe == "cifar10-memorygan.toml":
        assert D["memory.keys"].shape == (64, 16) and int(D["memory.write_count"]) == 2
    else:
        assert "head.weight" in D and not any(k.startswith("memory.") for k in D)
    assert "brightness-contrast" in (run_dir / "recipe.resolved.toml").read_text()
