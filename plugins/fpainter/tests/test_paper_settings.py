"""The paper presets (recipes/paper/*.toml) against the values of Irie & Schmidhuber (ICLR 2023),
each with the section it comes from, so that a preset cannot drift from the paper silently.
Values the paper does not give (the code's choices) are in the second table, labelled as such."""
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

import memcore
from memcore.cli import main
from memcore.recipe import load_recipe
from memcore_fpainter.fpa import FPA, FPAOptions

PAPER = Path(__file__).parents[1] / "recipes" / "paper"
DATASETS = ["celeba", "metfaces", "afhq-cat", "afhq-dog", "afhq-wild", "lsun-church"]

# (key path, value, source) shared by every preset
SHARED = [
    ("data.resolution", 64, "sec. 4.1: all datasets at 64x64"),
    ("data.channels", 3, "sec. 4.1: colour images"),
    ("augment", None, "sec. 4.1 / Table 1: no data augmentation"),
    ("train.batch_size", 20, "App. B.2: batch size fixed to 20"),
    ("optim.G.lr", 2e-4, "App. B.2: learning rate 2e-4"),
    ("optim.D.lr", 2e-4, "App. B.2: learning rate 2e-4"),
    ("generator.rule", "delta", "sec. 3.1 eq. 9: the delta rule"),
    ("generator.first_step_outer", False, "eq. 9 from W_0 = 0 (step 1 has its learning rate)"),
    ("generator.out_tanh", True, "sec. 3.1: tanh on W_T"),
    ("generator.vector_lr", False, "sec. 3.1: one learning rate beta_t^i per channel"),
    ("discriminator.kind", "lightgan", "sec. 3.3: the LightGAN discriminator"),
    ("losses.0.kind", "hinge", "sec. 3.3: the hinge loss"),
    ("losses.1.kind", "lightgan-aux", "sec. 3.3: auxiliary reconstruction at two resolutions"),
    ("discriminator.last_side", 8, "App. B.3: the decoders read 8x8 and 16x16 maps"),
]
# not in the paper: the authors' code (reference-code.md sec. 5.5), as the recipe headers say
CODE = [
    ("losses.2.kind", "lightgan-gp", "code: gradient penalty"),
    ("losses.2.weight", 10.0, "code: gp_weight 10"),
    ("losses.2.every", 4, "code: steps % 4 == 0"),
    ("losses.2.lazy", False, "code: added to that step's D loss, unscaled"),
    ("optim.G.betas", [0.5, 0.9], "code: Adam betas"),
    ("ema.decay", 0.995, "code: EMA decay"),
    ("discriminator.attention_at", [32], "code: attn_res_layers = [32]"),
]
# App. B.2 Table 3: input generator, input tanh, latent to RNN init, d_latent, d_in, d_in',
# d_hidden, L, generator parameters (M)
TABLE3 = {
    "celeba": ("v2", False, False, 128, 8, 128, 1024, 2, 14),
    "metfaces": ("v1", None, True, 512, None, None, 4096, 2, 220),
    "afhq-cat": ("v2", False, True, 256, 8, 128, 1024, 1, 6),
    "afhq-dog": ("v2", False, False, 256, 8, 128, 1024, 2, 14),
    "afhq-wild": ("v2", False, False, 512, 8, 128, 1024, 1, 6),
    "lsun-church": ("v2", True, True, 512, 16, 256, 1024, 2, 17),
}
TABLE2_STEPS = {"metfaces": (8, 16, 32), "afhq-cat": (8, 16, 32), "afhq-dog": (8, 16, 32),
                "afhq-wild": (8, 16, 32)}                              # sec. 4.3, Table 2
TABLE5_V1 = ("afhq-cat", "afhq-dog")                                    # App. C.1, Table 5


def resolved(name: str) -> dict:
    return load_recipe(PAPER / f"{name}.toml")[1]


def lookup(recipe: dict, key: str):
    value = recipe
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return list(value) if isinstance(value, tuple) else value


def table3_values(name: str, v1: bool = False) -> dict:
    ig, tanh, init, z, d_in, d_in2, hidden, layers, _ = TABLE3[name]
    values = {"input_generator": "v1" if v1 else ig, "z_dim": z, "hidden": hidden, "layers": layers,
              "latent_to_init": True if v1 else init}
    if ig == "v2" and not v1:
        values.update(input_tanh=tanh, mini_latent_dim=d_in, input_dim=d_in2)
    return values


def all_presets() -> list[str]:
    return sorted(p.stem for p in PAPER.glob("*.toml"))


def test_every_preset_is_listed_here():
    expected = {"fpa-64", *DATASETS, *(f"{d}-unet" for d in DATASETS),
                *(f"{d}-t{t}" for d, steps in TABLE2_STEPS.items() for t in steps),
                *(f"{d}-v1" for d in TABLE5_V1), *(f"{d}-v1-unet" for d in TABLE5_V1)}
    assert set(all_presets()) == expected


@pytest.mark.parametrize("name", sorted(set(all_presets()) - {"fpa-64"}))
def test_shared_paper_and_code_values(name):
    recipe = resolved(name)
    for key, value, source in SHARED + CODE:
        assert lookup(recipe, key) == value, f"{name}: {key} ({source})"


@pytest.mark.parametrize("name", DATASETS)
def test_table3_generators_and_table1_steps(name):
    recipe = resolved(name)
    assert recipe["generator"]["kind"] == "fpa"
    assert recipe["generator"]["steps"] == 64                           # sec. 4.1: T = 64
    for key, value in table3_values(name).items():
        assert recipe["generator"][key] == value, f"{name}: generator.{key} (Table 3)"


@pytest.mark.parametrize("name,steps", [(d, t) for d, ts in TABLE2_STEPS.items() for t in ts])
def test_table2_presets_change_only_the_steps(name, steps):
    base, preset = resolved(name), resolved(f"{name}-t{steps}")
    assert preset["generator"] == {**base["generator"], "steps": steps}
    assert {k: v for k, v in preset.items() if k != "generator"} == \
        {k: v for k, v in base.items() if k != "generator"}


@pytest.mark.parametrize("name", DATASETS + [f"{d}-v1" for d in TABLE5_V1])
def test_unet_presets_are_stage_two_of_their_fpa(name):
    stage1 = resolved(name)
    unet = resolved(f"{name}-unet")
    g = unet["generator"]
    assert g["kind"] == "fpa-unet" and len(g["unet_mults"]) == 3      # App. C.1: three levels
    assert unet["train"]["freeze"] == ["G.painter"]                     # sec. 3.2: only the U-Net
    assert g["unet_width"] == 64                                        # code: dim = image size
    for key, value in stage1["generator"].items():                     # the painter of stage 1
        if key != "kind":
            assert g[key] == value, f"{name}-unet: generator.{key} differs from stage 1"


@pytest.mark.parametrize("name", TABLE5_V1)
def test_table5_v1_presets(name):
    recipe = resolved(f"{name}-v1")
    for key, value in table3_values(name, v1=True).items():
        assert recipe["generator"][key] == value, f"{name}-v1: generator.{key}"


@pytest.mark.parametrize("name", DATASETS)
def test_generator_size_matches_table3(name):
    options = {k: v for k, v in resolved(name)["generator"].items()
               if k in {f.name for f in attrs.fields(FPAOptions)}}
    with torch.device("meta"):
        G = FPA(FPAOptions(**options), memcore.BuildContext(resolution=64, channels=3))
    millions = sum(p.numel() for p in G.parameters()) / 1e6
    assert abs(millions - TABLE3[name][-1]) < 1.0, f"{name}: {millions:.1f} M parameters"


def test_every_preset_has_a_header_naming_its_source():
    for path in PAPER.glob("*.toml"):
        head = path.read_text().split("\n[")[0]
        assert head.startswith("# ") and "Source:" in head, path.name


def test_every_preset_validates(tmp_path, capsys):
    for i in range(24):                        # a folder holding a batch of images for data.path
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(tmp_path / f"{i}.png")
    for name in all_presets():
        assert main(["validate", str(PAPER / f"{name}.toml"),
                     "--set", f"data.path={tmp_path}"]) == 0, capsys.readouterr().err


def test_documented_sizes_of_the_paper_d_and_unet():
    """The sizes the preset headers state: D 7.8 M (Table 3: about 12 M), U-Net 11.9 M (App. C.1:
    8 M), built from the resolved presets on the meta device."""
    from memcore_fpainter.lightgan import LightGAN, LightGANOptions
    from memcore_fpainter.unet import FPAUNet, FPAUNetOptions

    def millions(cls, options_cls, table):
        options = options_cls(**{k: v for k, v in table.items()
                                 if k in {f.name for f in attrs.fields(options_cls)}})
        with torch.device("meta"):
            net = cls(options, memcore.BuildContext(resolution=64, channels=3))
        return sum(p.numel() for p in net.parameters()) / 1e6

    assert round(millions(LightGAN, LightGANOptions, resolved("celeba")["discriminator"]), 1) == 7.8
    unet = resolved("celeba-unet")["generator"]
    total = millions(FPAUNet, FPAUNetOptions, unet)
    painter = millions(FPA, FPAOptions, resolved("celeba")["generator"])
    assert round(total - painter, 1) == 11.9
