"""`memcore check KIND:NAME`: a component's contracts from the command line, each with pass/fail."""
import pytest

from memcore.cli import main

RANK_PLUGIN = '''
import torch
from torch import nn
import memcore


class PerRank(memcore.Memory):
    """Passes every single-process contract, but adds its rank: ranks diverge."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("total", torch.zeros(channels))

    def write(self, items, generator):
        self.total += items["feature"].sum(0) + memcore.dist.rank()


class Block(nn.Module):
    def __init__(self, options, ctx):
        super().__init__()
        self.memory = PerRank(ctx.channels)

    def forward(self, x):
        self.memory.stage(feature=x.detach().mean((2, 3)))
        return x


class GlobalRandom(PerRank):
    def write(self, items, generator):
        self.total += torch.rand(self.total.shape)


class RandomBlock(Block):
    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        self.memory = GlobalRandom(ctx.channels)


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("block", "per-rank", Block, memcore.BlockOptions)
    registry.add("block", "global-random", RandomBlock, memcore.BlockOptions)
'''


@pytest.fixture
def plugins_dir(tmp_path, isolated_registry):
    (tmp_path / "rank_plugin.py").write_text(RANK_PLUGIN)
    return str(tmp_path)


def test_each_contract_is_printed_with_pass(isolated_registry, capsys):
    assert main(["check", "loss:hinge"]) == 0
    out = capsys.readouterr().out
    assert "  pass  protocol\n" in out and out.count("pass  value") == 1
    assert "loss:hinge: all 4 contracts hold" in out


def test_options_come_from_set_and_a_broken_contract_fails(plugins_dir, capsys):
    assert main(["--plugins-dir", plugins_dir, "check", "block:global-random", "--set", "at=4",
                 "--channels", "4"]) == 1
    out = capsys.readouterr().out
    assert "block:global-random (plugin 'local:rank_plugin'), resolution 4, channels 4" in out
    assert "  pass  write-into-buffers\n" in out
    assert "  FAIL  write-randomness: write() results depend on torch's global RNG" in out


def test_options_from_a_recipe(tmp_path, tiny_recipe_file, isolated_registry, capsys):
    generator = {"kind": "dcgan", "z_dim": 8, "width": 4,
                 "blocks": [{"kind": "self-attention", "at": 14}]}
    path = tiny_recipe_file(generator=generator)
    assert main(["check", "generator:dcgan", "--recipe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "resolution 28, channels 1" in out and "all 9 contracts hold" in out
    assert main(["check", "loss:r1", "--recipe", str(path)]) == 2
    assert "no loss 'r1' in this recipe" in capsys.readouterr().err


def test_unknown_kinds_and_names_are_refused(isolated_registry, capsys):
    assert main(["check", "memory:x"]) == 2
    assert "a memory is checked through the block that holds it" in capsys.readouterr().err
    assert main(["check", "block:self-atention"]) == 2
    assert "did you mean 'self-attention'" in capsys.readouterr().err


@pytest.mark.slow  # two processes start: ~15 s
def test_nproc_2_adds_the_distributed_contract(plugins_dir, capsys):
    assert main(["--plugins-dir", plugins_dir, "check", "block:per-rank", "--nproc", "2"]) == 1
    out = capsys.readouterr().out
    assert "  pass  write-randomness\n" in out
    assert "  FAIL  gathered-writes-identical: after 2 gathered writes rank 1 differs from rank " \
           "0 in ['memory.total']. Every rank wrote the same gathered rows" in out
