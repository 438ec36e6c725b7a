"""Training step time of memoryGAN on CIFAR-10 against the -Memory ablation with the same networks.

Both recipes are run through memcore's trainer exactly as `memcore run` would (D step, memory
commit, G step; batch 64, the code's ResNets, the real-image augmentation), on random 32 px RGB
images written to a temporary image folder (no CIFAR-10 needed). memoryGAN uses Table 3's memory
(N 16,384, key 512, k 256); -Memory replaces the memory by a linear head on the same inference
network, G gets z alone, and the loss is the base 'saturating' one. Reported: ms per training step,
median over --steps steps after --warmup steps (the two recipes' steps alternate, so changes in the
load of a shared machine hit both alike), on CUDA when available, else CPU; and the time of the
memory's write (the commit after D's step) inside the memoryGAN step.

    OMP_NUM_THREADS=2 .venv/bin/python plugins/memorygan/scripts/bench_step.py --steps 10
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def random_images(folder: Path, n: int, seed: int = 0) -> Path:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


class Timed:
    """One recipe's trainer, built as `memcore run` builds it; times train_step and the memory
    write (the DMN's commit after D's step)."""

    def __init__(self, recipe: Path, overrides: list[str], folder: Path):
        from memcore.recipe import load_recipe
        from memcore.trainer import Trainer
        from memcore_memorygan.memory import DiscriminativeMemory

        parsed, resolved = load_recipe(recipe, overrides)
        self.trainer = Trainer(parsed, resolved, folder)
        self.device = self.trainer.device
        self.steps: list[float] = []
        self.writes: list[float] = []
        self.logs = defaultdict(list)
        for m in self.trainer.models.D.modules():
            if isinstance(m, DiscriminativeMemory):
                m.write = self._timed(m.write)

    def _timed(self, write):
        def timed_write(items, generator):
            sync(self.device)
            start = time.perf_counter()
            write(items, generator)
            sync(self.device)
            self.writes.append(time.perf_counter() - start)
        return timed_write

    def step(self) -> None:
        sync(self.device)
        start = time.perf_counter()
        self.trainer.train_step(self.logs)
        sync(self.device)
        self.steps.append(time.perf_counter() - start)

    def result(self, warmup: int) -> dict:
        measured, writes = self.steps[warmup:], self.writes[warmup:]
        params = {role: sum(p.numel() for p in net.parameters())
                  for role, net in (("G", self.trainer.models.G), ("D", self.trainer.models.D))}
        return {"median": statistics.median(measured), "min": min(measured),
                "max": max(measured), "write": statistics.median(writes) if writes else None,
                "params": params}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per recipe (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--slots", type=int, default=16384)
    p.add_argument("--key-dim", type=int, default=512)
    p.add_argument("--top-k", type=int, default=256)
    p.add_argument("--images", type=int, default=512, help="random 32 px images in the folder")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="memorygan-bench-") as tmp:
        tmp = Path(tmp)
        images = random_images(tmp / "images", max(args.images, args.batch))
        common = [f'data={{kind = "image-folder", path = "{images}", resolution = 32}}',
                  f"train.batch_size={args.batch}", f"train.steps={args.warmup + args.steps}",
                  "train.progress=false", f"discriminator.key_dim={args.key_dim}"]
        cases = [
            ("memoryGAN", "cifar10-memorygan.toml",
             [f"discriminator.slots={args.slots}", f"discriminator.top_k={args.top_k}",
              f"generator.key_dim={args.key_dim}"]),
            ("-Memory (same networks)", "cifar10-no-memory.toml", []),
        ]
        timed = {name: Timed(RECIPES / recipe, common + extra, tmp / "run")
                 for name, recipe, extra in cases}
        # Steps alternate between the two recipes, so a change in the machine's load (shared
        # machines) affects both alike.
        for _ in range(args.warmup + args.steps):
            for t in timed.values():
                t.step()
        for t in timed.values():
            t.trainer.close()
        results = {name: t.result(args.warmup) for name, t in timed.items()}
    device = next(iter(timed.values())).device
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"N {args.slots}, key {args.key_dim}, k {args.top_k}; median of {args.steps} steps "
          f"after {args.warmup} warm-up steps\n")
    print("| recipe | params G / D | ms/step (median) | min | max | memory write ms (median) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        write = f"{r['write'] * 1000:.0f}" if r["write"] is not None else "–"
        print(f"| {name} | {r['params']['G'] / 1e6:.2f}M / {r['params']['D'] / 1e6:.2f}M | "
              f"{r['median'] * 1000:.0f} | {r['min'] * 1000:.0f} | {r['max'] * 1000:.0f} | "
              f"{write} |")
    mem, base = (results[name]["median"] for name, _, _ in cases)
    print(f"\nratio memoryGAN / -Memory: {mem / base:.2f}x (paper, CIFAR-10 on a GPU: 135 / 124 s "
          f"per epoch = 1.09x against its DCGAN)")


if __name__ == "__main__":
    main()
