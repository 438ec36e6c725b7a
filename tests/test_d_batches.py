"""``train.d_batches``: the D phase shows D one batch cat([real, fake]) ("joint", the default) or
the real and the fake batch in two calls ("separate": BatchNorm statistics per batch)."""
import pytest
import torch

from helpers import run_cli, tiny_recipe, write_recipe

PLUGIN = '''
import torch
from torch import nn
import memcore


class CountingD(memcore.Discriminator):
    """A linear D that counts its calls and the largest batch it was given."""

    def __init__(self, options, ctx):
        super().__init__()
        self.net = nn.Linear(ctx.channels * ctx.resolution ** 2, 1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("largest", torch.zeros((), dtype=torch.long))

    def forward(self, x, c=None):
        self.calls += 1
        self.largest.clamp_(min=x.shape[0])
        return self.net(x.flatten(1)).squeeze(1)


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("discriminator", "counting", CountingD, help="test only")
'''

STEPS, BATCH = 2, 8


@pytest.mark.parametrize("mode,calls_per_step,largest", [("joint", 2, 2 * BATCH),
                                                         ("separate", 3, BATCH)])
@pytest.mark.usefixtures("trusted_tmp_path")
def test_d_phase_batches(tmp_path, monkeypatch, mode, calls_per_step, largest):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "countplugin.py").write_text(PLUGIN)
    recipe = tiny_recipe()
    recipe["train"].update(steps=STEPS, checkpoint_every=STEPS, sample_every=STEPS,
                           batch_size=BATCH, d_batches=mode)
    recipe["plugins"] = {"local": [str(tmp_path / "countplugin.py")]}
    recipe["discriminator"] = {"kind": "counting"}
    assert run_cli("run", write_recipe(tmp_path / "r.toml", recipe)) == 0
    (run,) = (tmp_path / "runs").iterdir()
    D = torch.load(run / "checkpoints" / f"step-{STEPS:07d}.pt", weights_only=True)["models"]["D"]
    # D phase: 1 joint call or 2 separate ones; G phase: 1 call on the fakes
    assert int(D["calls"]) == STEPS * calls_per_step
    assert int(D["largest"]) == largest
