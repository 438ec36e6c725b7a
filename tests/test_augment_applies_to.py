"""Augmentations that declare ``applies_to = "real"`` are applied once to each real batch when it
is drawn and never to fakes; the default (``"all"``) still augments every image D sees."""
import pytest
import torch

from helpers import run_cli, tiny_recipe, write_recipe

PLUGIN = '''
import torch
from torch import nn
import memcore


class MarkReal(nn.Module):
    """Adds 10 (outside G's [-1, 1]) and counts the calls and rows it was given."""
    applies_to = "real"

    def __init__(self, options, ctx):
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("rows", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.calls += 1
        self.rows += x.shape[0]
        return x + 10.0


class MarkAll(MarkReal):
    applies_to = "all"


class MarkWrong(MarkReal):
    applies_to = "fakes"


class ProbeD(memcore.Discriminator):
    """A linear D that counts the marked (> 5 everywhere) and unmarked images it is shown."""

    def __init__(self, options, ctx):
        super().__init__()
        self.net = nn.Linear(ctx.channels * ctx.resolution ** 2, 1)
        self.register_buffer("marked", torch.zeros((), dtype=torch.long))
        self.register_buffer("unmarked", torch.zeros((), dtype=torch.long))

    def forward(self, x, c=None):
        marked = x.detach().flatten(1).min(1).values > 5
        self.marked += marked.sum()
        self.unmarked += (~marked).sum()
        return self.net(x.flatten(1)).squeeze(1)


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("augment", "mark-real", MarkReal, help="test only")
    registry.add("augment", "mark-all", MarkAll, help="test only")
    registry.add("augment", "mark-wrong", MarkWrong, help="test only")
    registry.add("discriminator", "probe", ProbeD, help="test only")
'''

STEPS, BATCH = 2, 8


def _run(tmp_path, monkeypatch, augment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "markplugin.py").write_text(PLUGIN)
    recipe = tiny_recipe()
    recipe["train"].update(steps=STEPS, checkpoint_every=STEPS, sample_every=STEPS,
                           batch_size=BATCH)
    recipe["plugins"] = {"local": [str(tmp_path / "markplugin.py")]}
    recipe["discriminator"] = {"kind": "probe"}
    recipe["augment"] = {"kind": augment}
    code = run_cli("run", write_recipe(tmp_path / "r.toml", recipe))
    if code:
        return code, None
    (run,) = (tmp_path / "runs").iterdir()
    state = torch.load(run / "checkpoints" / f"step-{STEPS:07d}.pt", weights_only=True)
    return code, state["models"]


@pytest.mark.usefixtures("trusted_tmp_path")
def test_real_only_augmentation_is_applied_once_per_real_batch_and_never_to_fakes(tmp_path,
                                                                                   monkeypatch):
    code, models = _run(tmp_path, monkeypatch, "mark-real")
    assert code == 0
    # one call per drawn real batch, B rows each: fakes (D and G phase) never pass through it
    assert int(models["augment"]["calls"]) == STEPS
    assert int(models["augment"]["rows"]) == STEPS * BATCH
    # D saw every real marked (D phase) and every fake unmarked (D and G phase)
    assert int(models["D"]["marked"]) == STEPS * BATCH
    assert int(models["D"]["unmarked"]) == STEPS * 2 * BATCH


@pytest.mark.usefixtures("trusted_tmp_path")
def test_default_augmentation_still_applies_to_everything_d_sees(tmp_path, monkeypatch):
    code, models = _run(tmp_path, monkeypatch, "mark-all")
    assert code == 0
    # D phase: one call on cat([real, fake]); G phase: one call on the fakes
    assert int(models["augment"]["calls"]) == STEPS * 2
    assert int(models["augment"]["rows"]) == STEPS * 3 * BATCH
    assert int(models["D"]["marked"]) == STEPS * 3 * BATCH
    assert int(models["D"]["unmarked"]) == 0


@pytest.mark.usefixtures("trusted_tmp_path")
def test_unknown_applies_to_is_refused(tmp_path, monkeypatch, capsys):
    code, _ = _run(tmp_path, monkeypatch, "mark-wrong")
    err = capsys.readouterr().err
    assert code != 0 and "applies_to = 'fakes'" in err and "'real'" in err, err
    assert "Traceback" not in err
