"""What validate / run check before step 1 (memcore.preflight): all problems at once, exit 2,
key paths, no traceback, no run directory. Data is a tiny image folder so each case is fast."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
import pytest
import tomli_w
from PIL import Image

from memcore.cli import main
from memcore_kit.testing import tiny_recipe


@pytest.fixture
def images(tmp_path):
    for i in range(16):
        folder = tmp_path / "imgs" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(folder / f"{i}.png")
    return tmp_path / "imgs"


def recipe_with(images, **sections):
    recipe = tiny_recipe(data={"kind": "image-folder", "path": str(images), "resolution": 28,
                               "channels": 1})
    recipe["train"]["batch_size"] = 8
    for key, value in sections.items():
        recipe[key] = value
    return recipe


def refused(tmp_path, monkeypatch, recipe, command=("validate",)) -> str:
    (tmp_path / "r.toml").write_text(tomli_w.dumps(recipe))
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([*command, "r.toml"])
    text = err.getvalue()
    assert code == 2 and "Traceback" not in text, text
    assert not (tmp_path / "runs").exists()
    return text


@pytest.mark.parametrize("command", [("validate",), ("run",), ("run", "--dry-run")])
def test_block_positions_of_both_networks_at_once(images, tmp_path, monkeypatch, command):
    recipe = recipe_with(images)
    recipe["generator"]["blocks"] = [{"kind": "self-attention", "at": 16}]
    recipe["discriminator"]["blocks"] = [{"kind": "self-attention", "at": 3}]
    text = refused(tmp_path, monkeypatch, recipe, command)
    assert "generator.blocks[0].at = 16: this backbone offers block slots at 7, 14, 28" in text
    assert "discriminator.blocks[0].at = 3" in text


@pytest.mark.parametrize("data,expected", [
    ({"path": "missing"}, "data.path = 'missing': no such folder"),
    ({"limit": 4}, "data.limit = 4: fewer images than train.batch_size = 8"),
    ({"classes": [5]}, "data.classes = [5]: class 5 does not exist"),
])
def test_dataset_problems(images, tmp_path, monkeypatch, data, expected):
    recipe = recipe_with(images)
    recipe["data"].update(labels=True, **data)
    assert expected in refused(tmp_path, monkeypatch, recipe)


def test_dataset_without_sub_folders_or_images(images, tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "broken.png").write_bytes(b"not an image")
    recipe = recipe_with(flat)
    assert "none of 1 image files could be read" in refused(tmp_path, monkeypatch, recipe)
    recipe["data"]["labels"] = True
    assert "data.labels = true" in refused(tmp_path, monkeypatch, recipe)


def test_loss_needing_another_discriminator_says_which(images, tmp_path, monkeypatch):
    recipe = recipe_with(images, losses=[{"kind": "memorygan"}])
    assert 'needs discriminator kind = "memorygan"' in refused(tmp_path, monkeypatch, recipe)


def test_mfh_losses_refuse_a_dcgan_discriminator(images, tmp_path, monkeypatch):
    recipe = recipe_with(images, generator={"kind": "mfh"},
                         losses=[{"kind": "mfh-adversarial"}])
    recipe["data"]["labels"] = True
    assert 'losses[0]: the MFH losses need discriminator.kind = "mfh"' in \
        refused(tmp_path, monkeypatch, recipe)


def test_init_from_missing_and_best_metric_unknown(images, tmp_path, monkeypatch):
    recipe = recipe_with(images)
    recipe["train"].update(init_from="no-such-run", best_metric="fdi")
    recipe["metrics"] = [{"kind": "fid", "extractor": "fashion-classifier"}]
    text = refused(tmp_path, monkeypatch, recipe)
    assert "train.init_from = 'no-such-run'" in text
    assert "train.best_metric = 'fdi'" in text and "did you mean 'fid'" in text


def test_missing_extractor_weights(images, tmp_path, monkeypatch):
    recipe = recipe_with(images, metrics=[{"kind": "fid", "extractor": {
        "kind": "inception-v3-compat", "weights": str(tmp_path / "none.pth")}}])
    assert "metrics[0].extractor" in refused(tmp_path, monkeypatch, recipe)


@pytest.mark.parametrize("key,value,expected", [
    (("generator", "z_dim"), 2**62, "generator.z_dim = 4611686018427387904"),
    (("train", "steps"), 2**64, "train.steps = 18446744073709551616"),
    (("train", "seed"), 2**62, "train.seed = 4611686018427387904"),
    (("optim", "G", "lr"), float("inf"), "optim.G.lr = inf: expected a finite number"),
])
def test_impossible_values_name_their_key(images, tmp_path, monkeypatch, key, value, expected):
    recipe = recipe_with(images)
    node = recipe
    for part in key[:-1]:
        node = node.setdefault(part, {})
    node[key[-1]] = value
    assert expected in refused(tmp_path, monkeypatch, recipe)


def test_weights_too_large_for_memory(images, tmp_path, monkeypatch):
    recipe = recipe_with(images)
    recipe["generator"]["z_dim"] = 2**31 - 1
    assert "generator: 'dcgan' would hold" in refused(tmp_path, monkeypatch, recipe)


def test_option_checks_of_plugins(images, tmp_path, monkeypatch):
    recipe = recipe_with(images, discriminator={"kind": "lightgan", "attention_at": [32]})
    assert "discriminator.attention_at = [32]: no 32 px stage" in \
        refused(tmp_path, monkeypatch, recipe)
    recipe = recipe_with(images, discriminator={"kind": "stylegan2", "mbstd_group": 3})
    recipe["data"]["resolution"] = 32
    recipe["generator"] = {"kind": "stylegan2"}
    assert "discriminator.mbstd_group = 3: does not divide the per-process batch of 8" in \
        refused(tmp_path, monkeypatch, recipe)


def test_plugin_crash_is_one_paragraph(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "crashy.py").write_text(
        "import memcore\n\ndef boom(args):\n    raise ValueError('plugin bug')\n\n"
        "@memcore.hookimpl\ndef memcore_add_commands(commands):\n"
        "    commands.add('boom', 'crash', lambda p: None, boom)\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--plugins-dir", str(tmp_path / "plugins"), "boom"])
    assert code == 1 and "ValueError: plugin bug" in err.getvalue()
    assert "plugin 'local:crashy'" in err.getvalue() and "Traceback" not in err.getvalue()
    monkeypatch.setenv("MEMCORE_DEBUG", "1")
    with pytest.raises(ValueError):
        main(["--plugins-dir", str(tmp_path / "plugins"), "boom"])


def test_show_lists_slots_and_block_snippet_validates(tmp_path, monkeypatch, capsys):
    assert main(["show", "generator:dcgan"]) == 0
    assert "28 px x 1 data: 7 (256 ch), 14 (128 ch), 28 (64 ch)" in capsys.readouterr().out
    assert main(["show", "block:self-attention"]) == 0
    snippet = capsys.readouterr().out.split("# TOML\n", 1)[1]
    recipe = tomli_w.dumps(tiny_recipe()) + "\n" + snippet
    (tmp_path / "r.toml").write_text(recipe)
    assert main(["validate", str(tmp_path / "r.toml")]) == 0, capsys.readouterr().err


def test_shape_build_keeps_small_tensors_real_and_gives_large_ones_on_meta():
    from torch import nn

    from memcore.preflight import _ShapeBuild
    with _ShapeBuild() as build:
        layer = nn.Linear(64, 32)                       # real values: a check may read them
        huge = torch.zeros(2**31, dtype=torch.uint8)    # 2 GiB: one request over TENSOR_BYTES
        shaped = torch.empty((3, 5), dtype=torch.float64)
        sized = torch.full(size=(2, 2), fill_value=7.0)
        on_request = torch.ones(4, device="cpu")        # an explicit device is left alone
    assert layer.weight.device.type == "cpu" and layer.weight.abs().sum() > 0
    assert huge.is_meta and huge.shape == (2**31,)
    assert not shaped.is_meta and not sized.is_meta and sized.sum() == 28
    assert build.cpu_bytes == (64 * 32 + 32) * 4 + 15 * 8 + 4 * 4
    assert not on_request.is_meta
    with _ShapeBuild() as build:                        # many requests under TENSOR_BYTES each
        parts = [torch.empty(2**22) for _ in range(20)]  # 16 MiB each, 256 MiB budget
    assert [p.is_meta for p in parts] == [False] * 16 + [True] * 4


BIG_BUFFER_PLUGIN = '''
import torch
from torch import nn
import memcore


class Tally(nn.Module):
    """Reads a value of a 64 MiB buffer while it is built: a meta tensor cannot give one."""

    def __init__(self, options, ctx):
        super().__init__()
        self.register_buffer("counts", torch.zeros(2**24))
        self.start = int(self.counts.sum().item())

    def forward(self, x):
        return x


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("block", "tally", Tally, memcore.BlockOptions)
'''


def test_component_reading_a_large_tensor_is_built_for_real(images, tmp_path, monkeypatch,
                                                             isolated_registry, capsys):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "tally.py").write_text(BIG_BUFFER_PLUGIN)
    recipe = recipe_with(images)
    recipe["generator"]["blocks"] = [{"kind": "tally", "at": 14}]
    (tmp_path / "r.toml").write_text(tomli_w.dumps(recipe))
    assert main(["--plugins-dir", str(tmp_path / "plugins"), "validate",
                 str(tmp_path / "r.toml")]) == 0, capsys.readouterr().err
