"""Networks, loss and a few training steps of every recipe (tiny sizes via --set)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import memcore
from memcore.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = ["--set", "train.steps=3", "--set", "data.limit=48", "--set", "train.batch_size=8",
        "--set", "train.progress=false", "--set", "train.checkpoint_every=3",
        "--set", "train.sample_every=3", "--set", "train.log_every=1", "--set", "train.grid_size=4"]
TINY_D = ["--set", "discriminator.slots=64", "--set", "discriminator.top_k=8",
          "--set", "discriminator.width=8", "--set", "discriminator.key_dim=16"]
TINY_G = ["--set", "generator.key_dim=16", "--set", "generator.width=8",
          "--set", "generator.fc_width=16"]


def run(tmp_path, monkeypatch, recipe, *extra):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(RECIPES / recipe), *TINY, *extra]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    state = torch.load(sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    return run_dir, state


def test_full_recipe_trains_and_saves_the_memory_once(tmp_path, monkeypatch):
    run_dir, state = run(tmp_path, monkeypatch, "fashion-memorygan.toml", *TINY_D, *TINY_G)
    D = state["models"]["D"]
    assert D["memory.keys"].shape == (64, 16) and int(D["memory.write_count"]) == 3
    assert not any("memory" in k for k in state["models"]["G"])  # G keeps a plain reference
    log = (run_dir / "log.jsonl").read_text()
    assert "memory/D.memory/real_slots" in log and '"mi"' in log
    assert (run_dir / "samples" / "latest.png").exists()


@pytest.mark.parametrize("recipe,extra", [
    ("fashion-no-em.toml", TINY_D + TINY_G),
    ("fashion-memorygan-code.toml", TINY_D + TINY_G),
    ("fashion-no-mcgn.toml", TINY_D + ["--set", "generator.width=8", "--set", "generator.fc_width=16"]),
    ("fashion-no-memory.toml", ["--set", "generator.width=8", "--set", "discriminator.width=8"]),
    ("cifar10-memorygan.toml", TINY_D + ["--set", "generator.key_dim=16", "--set", "data.kind=fashion-mnist",
                                         "--set", "data.resolution=32",  # the ResNets are 32 px
                                         "--set", "generator.inner.width=8"]),
    ("cifar10-no-mcgn.toml", TINY_D + ["--set", "data.kind=fashion-mnist", "--set", "data.resolution=32",
                                       "--set", "generator.inner.width=8"]),
])
def test_ablation_and_cifar_recipes_train(tmp_path, monkeypatch, recipe, extra):
    run_dir, state = run(tmp_path, monkeypatch, recipe, *extra)
    assert int(state["step"]) == 3


def test_affine_mnist_recipe_trains_at_40_px(tmp_path, monkeypatch, mnist_folder):
    run_dir, state = run(tmp_path, monkeypatch, "affine-mnist-memorygan.toml", *TINY_D, *TINY_G,
                         "--set", f"data.path=\"{mnist_folder}\"")
    assert int(state["step"]) == 3
    assert "affine-MNIST train (40 px" in (run_dir / "report.md").read_text()


def test_every_evaluation_schedule_writes_in_both_phases(tmp_path, monkeypatch):
    _, state = run(tmp_path, monkeypatch, "fashion-memorygan.toml", *TINY_D, *TINY_G,
                   "--set", "discriminator.schedule=\"every-evaluation\"")
    assert int(state["models"]["D"]["memory.write_count"]) == 6  # D phase + G phase, 3 steps


def test_mismatched_key_dims_are_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(RECIPES / "fashion-memorygan.toml"), *TINY, *TINY_D,
                 "--set", "generator.key_dim=8"])
    assert code != 0 and "generator.key_dim = 8" in capsys.readouterr().err


def build(d_opts=None, g_opts=None, resolution=28):
    from memcore_memorygan.losses import MemoryGANLoss, MemoryGANLossOptions
    from memcore_memorygan.networks import DMN, DMNOptions, MCGN, MCGNOptions
    ctx = memcore.BuildContext(resolution=resolution, channels=1)
    D = DMN(DMNOptions(slots=32, top_k=4, key_dim=8, width=4, **(d_opts or {})), ctx)
    G = MCGN(MCGNOptions(key_dim=8, width=4, fc_width=8, **(g_opts or {})), ctx)
    loss = MemoryGANLoss(MemoryGANLossOptions(), ctx)
    models = memcore.Models(G=G, D=D, G_ema=None, augment=None, losses=[loss])
    G.on_build(models)
    loss.on_build(models)
    return G, D, loss


def test_dmn_output_and_mcgn_shapes():
    G, D, _ = build(resolution=32)
    latents = G.sample_latent(5, torch.Generator().manual_seed(0), "cpu")
    assert set(latents) == {"z", "key"} and latents["key"].shape == (5, 8)
    images = G(**latents)
    assert images.shape == (5, 1, 32, 32)
    out = D(images)
    assert set(out) == {"logits", "prob", "query", "raw_query"}
    assert torch.allclose(out["query"].norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(torch.sigmoid(out["logits"]), out["prob"], atol=1e-5)


def test_mi_term_is_minus_kappa_cosine():
    _, _, loss = build()
    fake = {"query": torch.nn.functional.normalize(torch.randn(4, 8), dim=1),
            "raw_query": torch.randn(4, 8)}
    key = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    expected = -(2.0 * (key * fake["query"]).sum(1)).mean()
    assert torch.allclose(loss.mutual_information(fake, key, 2.0), expected)


def test_eval_mode_d_does_not_stage():
    G, D, _ = build()
    D.eval()
    D.memory.stage(query=torch.randn(2, 8), label=torch.ones(2))
    assert D.memory._staged == []


def test_wrapped_generator_without_z_dim_is_refused():
    from types import SimpleNamespace
    from memcore_memorygan.networks import _build_inner

    @memcore.config
    class NoZ:
        width: int = memcore.option(4)

    spec = SimpleNamespace(kind="no-z", options=NoZ(), blocks=())
    with pytest.raises(memcore.MemcoreError, match="generator.inner"):
        _build_inner(spec, 10, memcore.BuildContext(resolution=28, channels=1))


def test_viz_writes_the_figures(tmp_path, monkeypatch):
    run_dir, _ = run(tmp_path, monkeypatch, "fashion-memorygan.toml", *TINY_D, *TINY_G)
    assert main(["viz", "memorygan", str(run_dir), "--images", "16", "--rows", "2",
                 "--grid", "3"]) == 0
    out = run_dir / "viz-memorygan"
    for name in ("prior.png", "likelihood.png", "likelihood.json", "posteriors.png",
                 "interpolation.png"):
        assert (out / name).exists(), name
    outside = tmp_path / "outside.json"
    outside.write_text("not memcore's")
    (out / "likelihood.json").unlink()
    (out / "likelihood.json").symlink_to(outside)  # planted: replaced, never followed
    assert main(["viz", "memorygan", str(run_dir), "--images", "16", "--rows", "2",
                 "--grid", "3"]) == 0
    assert outside.read_text() == "not memcore's" and not (out / "likelihood.json").is_symlink()
    assert main(["viz", "memorygan", str(run_dir), "--out", str(outside)]) == 2  # not a folder


DIST_SCRIPT = r"""
import sys, torch, torch.distributed as tdist
import torch.nn.functional as F
tdist.init_process_group("gloo")
from memcore import dist
from memcore_memorygan.memory import DiscriminativeMemory
rank = dist.rank()
mem = DiscriminativeMemory(64, 8, top_k=6)
for step in range(5):
    g = torch.Generator().manual_seed(100 * step + rank)          # different rows per rank
    q = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    mem.stage(query=q, label=(torch.arange(6) % 2).float())
    mem.commit()
state = torch.cat([b.double().flatten() for b in mem.buffers()])
everyone = dist.gather_object(state)
# The same memory written by one process with both ranks' rows in rank order:
ref = DiscriminativeMemory(64, 8, top_k=6)
ref.sync = "local"  # this one is written by each process alone
for step in range(5):
    rows = [F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(100 * step + r)), dim=1)
            for r in range(2)]
    ref.stage(query=torch.cat(rows), label=(torch.arange(12) % 6 % 2).float())
    ref.commit()
single = torch.cat([b.double().flatten() for b in ref.buffers()])
if rank == 0:
    assert torch.equal(everyone[0], everyone[1]), "ranks differ"
    assert torch.equal(everyone[0], single), "gathered write differs from one process"
    print("IDENTICAL")
tdist.barrier()  # no rank leaves while another still talks to it
tdist.destroy_process_group()
"""


def test_two_processes_gather_writes_into_identical_memories(tmp_path):
    script = tmp_path / "dist_memory.py"
    script.write_text(DIST_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_port=29631", str(script)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "IDENTICAL" in proc.stdout


def test_viz_of_a_memory_free_run_is_a_clear_error(tmp_path, monkeypatch, capsys):
    run_dir, _ = run(tmp_path, monkeypatch, "fashion-no-mcgn.toml", *TINY_D,
                     "--set", "generator.width=8", "--set", "generator.fc_width=16",
                     "--set", "discriminator.memory=false",
                     "--set", 'losses=[{kind = "saturating"}]')
    assert main(["viz", "memorygan", str(run_dir)]) != 0
    err = capsys.readouterr().err
    assert "discriminator.memory = false" in err and "--dcgan" in err and "Traceback" not in err
