"""Shared test helpers: write recipes, run the CLI in-process, find run directories."""
from __future__ import annotations

import copy
from pathlib import Path

import tomli_w

from memcore.cli import main
from memcore_kit.testing import tiny_recipe

ROOT = Path(__file__).resolve().parents[1]

BLOCK_PLUGIN = '''
import torch
from torch import nn
import memcore


@memcore.config
class ScaleOptions(memcore.BlockOptions):
    pass


class CountingMemory(memcore.Memory):
    """Keeps a running sum of every pooled feature written: identical on all ranks iff gathered."""
    sync, write_at = "gather", "after_D"

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("total", torch.zeros(channels, dtype=torch.float64))
        self.register_buffer("rows", torch.zeros((), dtype=torch.long))

    def write(self, items, generator):
        self.total += items["feature"].double().sum(0)
        self.rows += items["feature"].shape[0]

    def stats(self):
        return {"rows": float(self.rows)}


class Scale(nn.Module):
    def __init__(self, options, ctx):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.memory = CountingMemory(ctx.channels)

    def forward(self, x):
        self.memory.stage(feature=x.detach().mean((2, 3)))
        return x * self.gain


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("block", "test-scale", Scale, ScaleOptions, help="Scales features; counts writes.")
'''


def write_recipe(path: Path, recipe: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(recipe))
    return path


def with_block_plugin(tmp_path: Path, recipe: dict, at: int = 14) -> dict:
    plugin = tmp_path / "blockplugin.py"
    plugin.write_text(BLOCK_PLUGIN)
    recipe = copy.deepcopy(recipe)
    recipe["plugins"] = {"local": [str(plugin)]}
    recipe["generator"]["blocks"] = [{"kind": "test-scale", "at": at}]
    return recipe


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


__all__ = ["ROOT", "write_recipe", "with_block_plugin", "run_cli", "tiny_recipe"]
