"""Values of the right type that cannot mean anything, refused by the option's own check (issue 17,
point 3): one bad value per check, through ``memcore validate`` in-process. Each case must end with
exit 2, one ``error:`` paragraph naming the option's full key path and the bad value, no
traceback and no run directory.

Checks declared with ``option(check=...)`` are met while the recipe is read, so they are tested
with ``--portable`` (no dataset opened, no network built); checks that need the data's shape, the
batch or the other networks are met when preflight builds the networks, tested without it.
docs/option-checks.md lists every rule; the last test keeps that table true to the registry.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import attrs
import pytest
import tomli_w

from memcore.cli import main
from memcore.registry import get_registry
from memcore_kit.testing import tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
FID = {"kind": "fid", "extractor": "fashion-classifier", "num_samples": 64}


def _set(recipe: dict, key: str, value) -> None:
    node = recipe
    parts = [int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", key) if p]
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _case(name, portable, changes, *expected):
    """``changes``: {key path: value} applied to the tiny recipe (a table replaces the section)."""
    return pytest.param(portable, changes, expected, id=name)


CASES = [
    # -- core --------------------------------------------------------------------------------
    _case("optim-beta-1", True, {"optim": {"G": {"betas": [0.5, 1.0]}}},
          "optim.G.betas", "entry 1 is 1.0", "[0.0, 1.0)"),
    _case("ema-decay-1", True, {"ema": {"decay": 1.0}}, "ema.decay = 1.0", "[0.0, 1.0)"),
    _case("loss-weight-negative", True, {"losses[0].weight": -1.0}, "losses[0].weight = -1.0"),
    _case("data-classes-twice", True, {"data.classes": [3, 5, 3]},
          "data.classes", "3 is given twice"),
    # -- base --------------------------------------------------------------------------------
    _case("dcgan-leaky-slope", True, {"discriminator.leaky_slope": 1.5},
          "discriminator.leaky_slope = 1.5", "[0.0, 1.0)"),
    _case("gradient-penalty-target", True,
          {"losses": [{"kind": "wgan"}, {"kind": "gradient-penalty", "target": -1.0}]},
          "losses[1].target = -1.0", ">= 0"),
    # -- moca --------------------------------------------------------------------------------
    _case("moca-momentum-1", True,
          {"generator.blocks": [{"kind": "moca", "at": 14, "momentum": 1.0}]},
          "generator.blocks[0].momentum = 1.0", "[0.0, 1.0)"),
    # -- memorygan ---------------------------------------------------------------------------
    _case("memorygan-one-slot", True,
          {"discriminator": {"kind": "memorygan", "slots": 1, "top_k": 1}},
          "discriminator.slots = 1", "at least 2"),
    _case("memorygan-eps-0", True, {"discriminator": {"kind": "memorygan", "eps": 0.0}},
          "discriminator.eps = 0.0", "(0, 0.5)"),
    _case("memorygan-em-iters-kaiser", False,
          {"discriminator": {"kind": "memorygan", "update": "kaiser", "em_iters": 2,
                             "key_dim": 16, "slots": 32, "top_k": 4, "width": 8}},
          "discriminator.em_iters = 2", "update = \"em\""),
    # -- mfh ---------------------------------------------------------------------------------
    _case("mfh-one-slot", True, {"generator": {"kind": "mfh", "memory_slots": 1}},
          "generator.memory_slots = 1", "at least 2"),
    _case("mfh-tau-min-above-tau", False,
          {"generator": {"kind": "mfh", "tau": 0.5, "tau_min": 1.0, "width": 8,
                         "encoder_width": 8}},
          "generator.tau_min = 1.0", "generator.tau = 0.5"),
    # -- stylegan2 ---------------------------------------------------------------------------
    _case("path-length-decay", True, {"losses": [{"kind": "hinge"},
                                                 {"kind": "path-length", "decay": 2.0}]},
          "losses[1].decay = 2.0", "(0, 1]"),
    _case("path-length-weight", True, {"losses": [{"kind": "hinge"},
                                                  {"kind": "path-length", "weight": -2.0}]},
          "losses[1].weight = -2.0", ">= 0"),
    _case("path-length-needs-stylegan2", False,
          {"losses": [{"kind": "hinge"}, {"kind": "path-length"}]},
          "losses[1]: loss 'path-length'", "generator kind = \"stylegan2\""),
    _case("stylegan2-g-channel-base", False,
          {"data.resolution": 32, "generator": {"kind": "stylegan2", "channel_base": 16}},
          "generator.channel_base = 16", "0 channels at 32 px"),
    _case("stylegan2-d-channel-base", False,
          {"data.resolution": 32, "discriminator": {"kind": "stylegan2", "channel_base": 16}},
          "discriminator.channel_base = 16", "0 channels at 32 px"),
    # -- fastgan -----------------------------------------------------------------------------
    _case("fastgan-g-width", False, {"data.resolution": 256, "data.limit": 8,
                                     "generator": {"kind": "fastgan", "width": 1}},
          "generator.width = 1", "0 channels at 256 px"),
    _case("fastgan-d-width", False, {"data.resolution": 256, "data.limit": 8,
                                     "discriminator": {"kind": "fastgan", "width": 1}},
          "discriminator.width = 1", "0 channels at 256 px"),
    # -- fpainter ----------------------------------------------------------------------------
    _case("fpa-canvas-height", False,
          {"generator": {"kind": "fpa", "height": 20, "hidden": 16, "input_dim": 16}},
          "generator.height = 20", "28 x 28 px"),
    _case("fpa-unet-canvas-width", False,
          {"generator": {"kind": "fpa-unet", "width": 14, "hidden": 16, "input_dim": 16,
                         "unet_width": 8, "unet_mults": [1, 2], "unet_groups": 4}},
          "generator.width = 14", "28 x 28 px"),
    _case("fpa-unet-attention-heads", False,
          {"generator": {"kind": "fpa-unet", "hidden": 16, "input_dim": 16, "unet_width": 2,
                         "unet_mults": [1, 3], "unet_groups": 1}},
          "generator.unet_width = 2", "4 heads"),
    _case("lightgan-aux-needs-lightgan", False,
          {"losses": [{"kind": "hinge"}, {"kind": "lightgan-aux"}]},
          "losses[1]: loss 'lightgan-aux'", "discriminator kind = \"lightgan\""),
    _case("lightgan-gp-needs-lightgan", False,
          {"losses": [{"kind": "hinge"}, {"kind": "lightgan-gp"}]},
          "losses[1]: loss 'lightgan-gp'", "discriminator kind = \"lightgan\""),
    _case("lightgan-attention-at", True,
          {"discriminator": {"kind": "lightgan", "attention_at": [16, 0]}},
          "discriminator.attention_at", "entry 1 is 0"),
    # -- fidelity ----------------------------------------------------------------------------
    _case("fid-one-sample", True, {"metrics": [{**FID, "num_samples": 1}]},
          "metrics[0].num_samples = 1", "at least 2"),
    _case("fid-one-real", True, {"metrics": [{**FID, "num_real": 1}]},
          "metrics[0].num_real = 1", "at least 2"),
    _case("kid-subset-1", True, {"metrics": [{**FID, "kind": "kid", "kid_subset_size": 1}]},
          "metrics[0].kid_subset_size = 1", "at least 2"),
    _case("prc-neighborhood", True,
          {"metrics": [{**FID, "kind": "prc", "num_samples": 5, "neighborhood": 5}]},
          "metrics[0].num_samples = 5", "metrics[0].neighborhood = 5"),
]


def validate(recipe: dict, folder: Path, monkeypatch, portable: bool) -> tuple[int, str]:
    (folder / "r.toml").write_text(tomli_w.dumps(recipe))
    monkeypatch.chdir(folder)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", *(["--portable"] if portable else []), "r.toml"])
    return code, err.getvalue()


@pytest.mark.parametrize("portable,changes,expected", CASES)
def test_meaningless_value_is_refused(portable, changes, expected, tmp_path, monkeypatch):
    recipe = tiny_recipe()
    recipe["generator"]["blocks"] = []
    for key, value in changes.items():
        _set(recipe, key, value)
    code, text = validate(recipe, tmp_path, monkeypatch, portable)
    assert code == 2, text
    assert text.startswith("error:") and "Traceback" not in text, text
    for part in expected:
        assert part in text, f"{part!r} not in:\n{text}"
    assert not (tmp_path / "runs").exists()


def test_the_tiny_recipe_passes(tmp_path, monkeypatch):
    """What the cases change is the only problem: the recipe they start from is valid."""
    recipe = tiny_recipe()
    recipe["metrics"] = [FID]
    code, text = validate(recipe, tmp_path, monkeypatch, portable=True)
    assert code == 0, text


# -- docs/option-checks.md ------------------------------------------------------------------------
SECTIONS = {"train": "TrainSection", "optim": "OptimSpec", "ema": "EmaSection"}


def _doc_rows() -> list[tuple[str, str]]:
    rows = []
    for line in (ROOT / "docs" / "option-checks.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[1].startswith("`"):
            rows.append((cells[0].strip("`"), cells[1].strip("`")))
    return rows


def test_option_checks_doc_names_real_options():
    """Every (component, option) row of docs/option-checks.md is a registered component with that
    option, or a core section key."""
    import memcore.recipe as core
    rows = _doc_rows()
    assert len(rows) > 30
    registry = get_registry()
    for component, option in rows:
        if ":" not in component:
            classes = [getattr(core, SECTIONS[component])]
        else:   # "loss:*": an option of a shared base class, held by components of that kind
            kind, name = component.split(":")
            classes = [registry.get(kind, n).load_config()
                       for n in (registry.names(kind) if name == "*" else [name])]
        for o in re.split(r",\s*|\s*\+\s*", option):
            assert any(o in {f.name for f in attrs.fields(cls)} for cls in classes), (component, o)
