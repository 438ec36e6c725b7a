"""train.check_consistency names what differs between ranks and the likely cause, in one error
printed once, and every rank exits non-zero (no launcher traceback with `memcore run --nproc`)."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import memcore
from memcore import trainer
from memcore.errors import MemcoreError

from helpers import tiny_recipe, write_recipe

NOISY_PLUGIN = '''
import torch
from torch import nn
import memcore


class Noisy(memcore.Memory):
    def __init__(self, channels):
        super().__init__()
        self.register_buffer("total", torch.zeros(channels))

    def write(self, items, generator):
        self.total += torch.rand(self.total.shape)  # torch's global RNG: seeded per rank


class Block(nn.Module):
    def __init__(self, options, ctx):
        super().__init__()
        self.memory = Noisy(ctx.channels)

    def forward(self, x):
        self.memory.stage(feature=x.detach().mean((2, 3)))
        return x


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("block", "noisy", Block, memcore.BlockOptions)
'''


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.norm = nn.BatchNorm2d(1)
        self.memory = memcore.Memory()


def test_drift_is_named_with_its_likely_cause(monkeypatch):
    """Rank 0's broadcast values differ from this rank's: every tensor has drifted."""
    monkeypatch.setattr(memcore.dist, "broadcast_rows", lambda t, src=0: t + 1)
    models = memcore.Models(G=Tiny(), D=nn.Linear(1, 1), G_ema=None, augment=None, losses=[])
    with pytest.raises(MemcoreError) as failure:
        trainer.check_consistency(models)
    message = str(failure.value)
    assert failure.value.every_rank
    assert "memory buffers G.memory.write_count, G.memory.write_seed differ between ranks: " \
           "every rank writes the same gathered rows, so the likely cause is randomness in " \
           "write() not drawn from its generator argument" in message
    assert "parameters D.bias, D.weight, G.conv.bias, G.conv.weight, G.norm.bias, G.norm.weight " \
           "differ" in message and "outside the optimizer step" in message
    assert "other buffers G.norm.num_batches_tracked, G.norm.running_mean, G.norm.running_var" \
           in message


def test_no_drift_passes(monkeypatch):
    models = memcore.Models(G=Tiny(), D=nn.Linear(1, 1), G_ema=None, augment=None, losses=[])
    trainer.check_consistency(models)  # one process: broadcast returns the tensor itself


@pytest.mark.slow  # two processes: ~30 s on 2 CPU cores
def test_two_processes_stop_with_one_clean_error(tmp_path):
    (tmp_path / "noisy.py").write_text(NOISY_PLUGIN)
    recipe = tiny_recipe()
    recipe["train"].update(steps=2, checkpoint_every=2)
    recipe["plugins"] = {"local": ["noisy.py"]}
    recipe["generator"]["blocks"] = [{"kind": "noisy", "at": 14}]
    file = write_recipe(tmp_path / "noisy.toml", recipe)
    proc = subprocess.run([sys.executable, "-m", "memcore", "run", str(file), "--nproc", "2",
                           "--set", "data.limit=64", "--trust-local-plugins"], cwd=tmp_path,
                          capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ,
                                                       "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "memory buffers G.slots.stages.14.0.memory.total" in proc.stderr
