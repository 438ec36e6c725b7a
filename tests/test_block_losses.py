"""Loss terms from blocks (memcore.add_loss): added to the loss of the phase training the
network holding the block, scaled by train.block_loss_weights, logged by name, under micro-batches
and in first-party use (MFH's VQ terms with nearest addressing)."""
import json

import pytest
import torch
from torch import nn

import memcore
from memcore.step import module_owners, recording_block_losses
from memcore_kit.testing import tiny_recipe, train

PULL_PLUGIN = '''
import torch
from torch import nn
import memcore


class Pull(nn.Module):
    """Scales features by a gain; records (gain - 3)^2, a term pulling the gain towards 3."""

    def __init__(self, options, ctx):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x):
        memcore.add_loss(self, "pull", (self.gain - 3) ** 2)
        return x * self.gain


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("block", "pull", Pull, memcore.BlockOptions)
'''


def log_lines(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
            if '"step"' in line]


def run_with_pull(tmp_path, roles=("generator",), **train_options):
    (tmp_path / "pull.py").write_text(PULL_PLUGIN)
    recipe = tiny_recipe(plugins={"local": [str(tmp_path / "pull.py")]})
    for role in roles:
        recipe[role]["blocks"] = [{"kind": "pull", "at": 14}]
    recipe["train"].update(train_options)
    return train(recipe, tmp_path, steps=2)


@pytest.mark.usefixtures("trusted_tmp_path")
def test_a_generator_block_term_joins_the_g_loss_scaled_by_its_weight(tmp_path, isolated_registry):
    run = run_with_pull(tmp_path, block_loss_weights={"pull": 0.5})
    row = next(r for r in log_lines(run) if "loss/G" in r)
    assert row["loss/G/pull"] == pytest.approx(4.0, abs=0.05)  # (gain - 3)^2 with gain ~ 1
    assert row["loss/G"] == pytest.approx(row["loss/G/Hinge"] + 0.5 * row["loss/G/pull"],
                                          rel=1e-5)
    assert "loss/D/pull" not in row  # G's block while D trains: dropped


@pytest.mark.usefixtures("trusted_tmp_path")
def test_a_discriminator_block_term_joins_the_d_loss_under_micro_batches(tmp_path,
                                                                         isolated_registry):
    run = run_with_pull(tmp_path, roles=("discriminator",), micro_batches=2)
    row = next(r for r in log_lines(run) if "loss/D" in r)
    assert row["loss/D"] == pytest.approx(row["loss/D/Hinge"] + row["loss/D/pull"], rel=1e-5)
    assert "loss/G/pull" not in row


def test_the_term_trains_the_block():
    """The recorded value carries its graph: backward reaches the block's parameter."""
    block, other = nn.Linear(1, 1), nn.Linear(1, 1)
    owners = module_owners(nn.Sequential(block), nn.Sequential(other))
    with recording_block_losses(owners, "G") as recorded:
        memcore.add_loss(block, "w", block.weight.sum() ** 2)
        memcore.add_loss(block, "w", block.weight.sum() ** 2)  # a second forward: the mean
        memcore.add_loss(other, "w", other.weight.sum())       # D's, while G trains: dropped
    terms = recorded.terms()
    terms["w"].backward()
    assert torch.allclose(terms["w"], block.weight.detach().sum() ** 2)
    assert block.weight.grad is not None and other.weight.grad is None
    memcore.add_loss(block, "w", block.weight.sum())  # outside a training pass: nothing happens


def test_weights_must_be_finite_and_non_negative(tmp_path, tiny_recipe_file, capsys):
    from memcore.cli import main
    path = tiny_recipe_file(train={**tiny_recipe()["train"],
                                   "block_loss_weights": {"pull": float("inf")}})
    assert main(["validate", str(path)]) == 2
    assert "train.block_loss_weights" in capsys.readouterr().err


def test_mfh_nearest_addressing_adds_its_vq_terms(tmp_path, isolated_registry):
    from memcore.recipe import read_toml
    from pathlib import Path
    recipe = read_toml(Path(memcore.__file__).parents[2] / "plugins" / "mfh" / "recipes"
                       / "mfh-fashion-mnist.toml")
    recipe["generator"]["addressing"] = "nearest"
    run = train(recipe, tmp_path, steps=2, overrides=("data.limit=64",))
    row = next(r for r in log_lines(run) if "loss/G/mfh-vq" in r)
    assert row["loss/G/mfh-vq"] > 0
