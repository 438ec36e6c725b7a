"""Two real gloo processes under torchrun (accelerate's --cpu --num_processes 2 runs only one)."""
import os
import subprocess
import sys

import pytest
import torch

from helpers import BLOCK_PLUGIN, run_cli, tiny_recipe, write_recipe

DUMP_PLUGIN = BLOCK_PLUGIN + '''

class DumpState(memcore.Loss):
    """Adds nothing; at the start of step 5 (step 4 complete) each rank saves what it holds."""
    phases = ("G",)

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        import os
        self.folder = os.environ["MEMCORE_TEST_DUMP"]

    def __call__(self, ctx):
        return None

    def before_phase(self, ctx):
        import os
        if ctx.pass_name == "D" and ctx.step == 4:
            m = ctx.models
            torch.save({"G": m.G.state_dict(), "D": m.D.state_dict(), "G_ema": m.G_ema.state_dict()},
                       os.path.join(self.folder, f"rank{memcore.dist.rank()}.pt"))


@memcore.hookimpl(specname="memcore_register_components")
def register_dump(registry):
    registry.add("loss", "dump-state", DumpState, memcore.LossOptions, help="test only")
'''


@pytest.mark.usefixtures("trusted_tmp_path")
@pytest.mark.distributed
@pytest.mark.parametrize("d_batches", ["joint", "separate"])  # separate: 2 D forwards, 1 backward
def test_two_processes_agree_and_resume_on_one(tmp_path, monkeypatch, isolated_registry,
                                               d_batches):
    plugin = tmp_path / "dumpplugin.py"
    plugin.write_text(DUMP_PLUGIN)
    recipe = tiny_recipe()
    recipe["train"].update(steps=5, checkpoint_every=5, d_batches=d_batches)
    recipe["plugins"] = {"local": [str(plugin)]}
    recipe["generator"]["blocks"] = [{"kind": "test-scale", "at": 14}]
    recipe["losses"].append({"kind": "dump-state"})
    recipe["losses"].append({"kind": "r1", "every": 2, "gamma": 1.0})  # a lazy pass under DDP
    file = write_recipe(tmp_path / "dist.toml", recipe)
    env = {**os.environ, "MEMCORE_TEST_DUMP": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "memcore", "run", str(file)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    run = tmp_path / "runs" / "0001-dist"
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["step-0000005.pt"]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for role in ("G", "D", "G_ema"):
        for k, v in r0[role].items():
            assert torch.equal(v, r1[role][k]), f"{role}.{k} differs between ranks"
    # Gathered writes: after 4 steps each rank holds 4 x 8 rows (4 per rank, from both ranks).
    assert int(r0["G"]["slots.stages.14.0.memory.rows"]) == 4 * recipe["train"]["batch_size"]
    state = torch.load(run / "checkpoints" / "step-0000005.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMCORE_TEST_DUMP", str(tmp_path))
    assert run_cli("run", "--resume", run, "--set", "train.steps=7") == 0
    resumed = torch.load(run / "checkpoints" / "step-0000007.pt", weights_only=True)
    assert resumed["world_size"] == 1 and resumed["step"] == 7
    assert int(resumed["models"]["G"]["slots.stages.14.0.memory.rows"]) == 7 * 8
