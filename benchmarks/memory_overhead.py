"""What the memory costs: ms per training step (or block pass) with the memory and without it.

    python benchmarks/memory_overhead.py [--threads 2] [--rounds 7] [--steps 2] [--only 1 3 ...]

Rows (each a pair of configurations; every configuration is built once and timed once per round,
all of them interleaved in every round, so that changes in the machine's load hit both sides of a
row alike; reported: the median over rounds of the mean time per step in a round):

* memoryGAN at the Fashion-MNIST sizes (N 4,096, key 256, k 128; batch 64, 4,096 Fashion-MNIST
  images): `fashion-memorygan.toml` against the **same networks with the memory switched off**
  (`discriminator.memory = false`: a linear head on the same raw key; `generator.memory_conditioning
  = false` with `generator.z_dim = 258`, so that G's first layer keeps its [K_c, z] width of
  256 + 2; the base `saturating` loss, i.e. eq. 7-8 without the memory and I_hat), and for
  reference against `fashion-no-memory.toml` (the base plugin's smaller DCGAN: other networks).
* memoryGAN at the CIFAR-10 sizes (N 16,384, key 512, k 256; the code's ResNets, batch 64, random
  32 px images, so no CIFAR-10 is needed): `cifar10-memorygan.toml` against the same recipe with
  the memory off (z_dim 528 = 512 + 16), and against `cifar10-no-memory.toml` (the same ResNets,
  G fed a 128-d z).
* MoCA: the block alone, forward + backward (B 4, C 64, 16 x 16, d 32, the block's default
  softmax), with a 32 x 256 and a 10 x 100 memory against the SA-only block (`paths = "sa"`: the
  same convolutions and gamma, no memory), and the memory-only block (`paths = "moca"`, the
  memory path without the self-attention); and the training step of `moca-fastgan.toml` against
  `sa-fastgan.toml` (warm-up shortened to 2 writes so that the timed steps read the memory).

A second table splits the memoryGAN steps: the time inside the memory's read (its forward: the
score matmul, top-k and posterior; their backward runs inside the step's backward and is not
counted) and its write (the commit after D's step), from timers around those two methods in the
same timed steps.

No sampling, checkpoints or metrics are timed; torch runs with ``--threads`` threads.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
MEMORYGAN = ROOT / "plugins" / "memorygan" / "recipes"
MOCA = ROOT / "plugins" / "moca" / "recipes"


def memory_off(z_dim: int) -> list[str]:
    """The memoryGAN recipe's networks without the memory (see the module docstring)."""
    return ["discriminator.memory=false", "generator.memory_conditioning=false",
            f"generator.z_dim={z_dim}", 'losses=[{kind="saturating"}]']


# seconds spent in each memoryGAN memory's read and write, per case, since the last reset
MEMORY_TIME: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))


def trainer_step(recipe: Path, overrides: list[str], run_dir: Path) -> Callable[[], None]:
    """One training step of ``recipe`` as `memcore run` builds it."""
    from memcore.recipe import load_recipe
    from memcore.trainer import Trainer
    parsed, resolved = load_recipe(recipe, ["train.progress=false", "metrics=[]", *overrides])
    trainer = Trainer(parsed, resolved, run_dir)
    time_memory(trainer.models.D, MEMORY_TIME[run_dir.name])
    logs = defaultdict(list)
    return lambda: trainer.train_step(logs)


def time_memory(D, totals: dict[str, float]) -> None:
    """Accumulate the seconds of every memoryGAN memory's read and write in D into ``totals``."""
    from memcore_memorygan.memory import DiscriminativeMemory
    for memory in D.modules():
        if isinstance(memory, DiscriminativeMemory):
            memory.forward = timed(memory.forward, totals, "read")
            memory.write = timed(memory.write, totals, "write")


def timed(method, totals: dict[str, float], name: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start
    return wrapper


def block_pass(paths: str, cells: int, prototypes: int, batch=4, channels=64, side=16):
    """Forward + backward of one MoCA block whose memory is filled and clustered (reading)."""
    import memcore
    from memcore_moca.moca import MocaBlock, MocaOptions
    torch.manual_seed(0)
    ctx = memcore.BuildContext(resolution=side, channels=channels, seed=0)
    block = MocaBlock(MocaOptions(at=side, paths=paths, cells=cells, prototypes=prototypes,
                                  warmup=1), ctx).train()
    if block.memory is not None:
        block(torch.randn(8, channels, side, side))
        block.memory.commit()
    with torch.no_grad():
        block.gamma.fill_(0.5)
    x = torch.randn(batch, channels, side, side, requires_grad=True)

    def run():
        block(x).sum().backward()
        if block.memory is not None:
            block.memory.discard_staged()  # the block alone: no write in the timed pass
    return run


def random_images(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


# name -> (what it is, builder(tmp) -> step function)
def cases(tmp: Path) -> dict[str, tuple[str, Callable[[], Callable[[], None]]]]:
    fashion = ["data.limit=4096"]
    cifar = [f'data={{kind = "image-folder", path = "{tmp / "images"}", resolution = 32}}']
    run = lambda name: tmp / "runs" / name  # noqa: E731
    return {
        "fashion": ("`fashion-memorygan.toml`", lambda: trainer_step(
            MEMORYGAN / "fashion-memorygan.toml", fashion, run("fashion"))),
        "fashion-off": ("the same, memory off", lambda: trainer_step(
            MEMORYGAN / "fashion-memorygan.toml", fashion + memory_off(258), run("fashion-off"))),
        "fashion-dcgan": ("`fashion-no-memory.toml` (smaller DCGAN)", lambda: trainer_step(
            MEMORYGAN / "fashion-no-memory.toml", fashion, run("fashion-dcgan"))),
        "cifar": ("`cifar10-memorygan.toml`", lambda: trainer_step(
            MEMORYGAN / "cifar10-memorygan.toml", cifar, run("cifar"))),
        "cifar-off": ("the same, memory off", lambda: trainer_step(
            MEMORYGAN / "cifar10-memorygan.toml", cifar + memory_off(528), run("cifar-off"))),
        "cifar-no-memory": ("`cifar10-no-memory.toml` (G fed z of 128)", lambda: trainer_step(
            MEMORYGAN / "cifar10-no-memory.toml", cifar, run("cifar-no-memory"))),
        "moca-32x256": ("MoCA block, 32 x 256", lambda: block_pass("both", 32, 256)),
        "moca-10x100": ("MoCA block, 10 x 100", lambda: block_pass("both", 10, 100)),
        "sa-block": ("SA-only block", lambda: block_pass("sa", 32, 256)),
        "moca-only-32x256": ("memory-only block, 32 x 256", lambda: block_pass("moca", 32, 256)),
        "moca-fastgan": ("`moca-fastgan.toml` (10 x 100)", lambda: trainer_step(
            MOCA / "moca-fastgan.toml", ["generator.blocks[0].warmup=2"],
            run("moca-fastgan"))),
        "sa-fastgan": ("`sa-fastgan.toml`", lambda: trainer_step(
            MOCA / "sa-fastgan.toml", [], run("sa-fastgan"))),
    }


# (row label, with memory, without memory)
ROWS = [
    ("memoryGAN, Fashion-MNIST sizes, same networks", "fashion", "fashion-off"),
    ("memoryGAN, Fashion-MNIST sizes, against `fashion-no-memory.toml`", "fashion", "fashion-dcgan"),
    ("memoryGAN, CIFAR-10 sizes, same networks", "cifar", "cifar-off"),
    ("memoryGAN, CIFAR-10 sizes, against `cifar10-no-memory.toml`", "cifar", "cifar-no-memory"),
    ("MoCA block 32 x 256 (B 4, 16 x 16) against the SA-only block", "moca-32x256", "sa-block"),
    ("MoCA block 10 x 100 (B 4, 16 x 16) against the SA-only block", "moca-10x100", "sa-block"),
    ("the memory path alone (32 x 256) against the SA-only block", "moca-only-32x256", "sa-block"),
    ("`moca-fastgan.toml` step against `sa-fastgan.toml`", "moca-fastgan", "sa-fastgan"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the timed part")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    ap.add_argument("--steps", type=int, default=2, help="steps (block passes) per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--only", nargs="*", default=None, metavar="ROW",
                    help="row numbers (1-based) to run, default all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [r for i, r in enumerate(ROWS, 1) if args.only is None or str(i) in args.only]
    needed = list(dict.fromkeys(name for _, *pair in rows for name in pair))
    load_before = os.getloadavg()
    times: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="memory-overhead-") as tmp:
        tmp = Path(tmp)
        if any(name.startswith("cifar") for name in needed):
            random_images(tmp / "images", 512)
        available = cases(tmp)
        steps = {name: available[name][1]() for name in needed}
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        for totals in MEMORY_TIME.values():  # count the timed rounds only
            totals.clear()
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[name].append((time.perf_counter() - start) / args.steps)
    median = {name: 1000 * statistics.median(t) for name, t in times.items()}
    command = " ".join(["python", "benchmarks/memory_overhead.py", *sys.argv[1:]])
    print(f"`{command}`: torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
          f"{args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warm-up "
          f"steps; load average (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} "
          f"after\n")
    print("| config | with memory | ms/step | without | ms/step | ratio |")
    print("|---|---|---|---|---|---|")
    for label, with_name, without_name in rows:
        w, wo = median[with_name], median[without_name]
        print(f"| {label} | {available[with_name][0]} | {w:.1f} | {available[without_name][0]} | "
              f"{wo:.1f} | {w / wo:.2f}x |")
    split = [(name, MEMORY_TIME[name]) for name in needed if MEMORY_TIME.get(name)]
    if split:
        per_step = 1000 / (args.rounds * args.steps)
        print("\n| config | ms/step | memory read (forward) | memory write |")
        print("|---|---|---|---|")
        for name, totals in split:
            print(f"| {available[name][0]} | {median[name]:.1f} | {totals['read'] * per_step:.1f} | "
                  f"{totals['write'] * per_step:.1f} |")


if __name__ == "__main__":
    main()
