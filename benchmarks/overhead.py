"""Framework overhead: memcore's training step against a minimal hand-written PyTorch loop.

Both train the same networks (built from the same recipe) on the same in-memory batches with the
same losses (hinge), optimizers and EMA; the hand loop has none of memcore's phases, callbacks,
checks or logging. Rounds alternate between the two so machine noise hits both alike.

    python benchmarks/overhead.py [--recipe recipes/quickstart.toml] [--steps 30] [--rounds 5]

Prints a Markdown row for docs/performance.md.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from memcore.recipe import load_recipe
from memcore.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def hand_written_step(G, D, G_ema, opt_G, opt_D, real, z_dim, gen, decay):
    """The whole GAN step as one would write it by hand (unconditional, hinge, EMA)."""
    b = real.shape[0]
    z = torch.randn(b, z_dim, generator=gen)
    with torch.no_grad():
        fake = G(z)
    logits = D(torch.cat([real, fake]))
    d_loss = F.relu(1 - logits[:b]).mean() + F.relu(1 + logits[b:]).mean()
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()
    z = torch.randn(b, z_dim, generator=gen)
    D.requires_grad_(False)
    g_loss = -D(G(z)).mean()
    opt_G.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_G.step()
    D.requires_grad_(True)
    with torch.no_grad():
        for pe, p in zip(G_ema.parameters(), G.parameters()):
            pe.lerp_(p, 1 - decay)
        for be, b_ in zip(G_ema.buffers(), G.buffers()):
            be.copy_(b_)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "quickstart.toml"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    # Unconditional so the hand loop needs no labels; logging as in a real run.
    recipe, resolved = load_recipe(args.recipe, ["generator.conditional=false",
                                                 "discriminator.conditional=false",
                                                 "data.limit=20000", "train.progress=false"])
    trainer = Trainer(recipe, resolved, Path("/tmp/memcore-bench"))
    trainer.log = None
    G, D = copy.deepcopy(trainer.models.G), copy.deepcopy(trainer.models.D)
    G_ema = copy.deepcopy(G).eval()
    G.requires_grad_(True)
    D.requires_grad_(True)
    o = recipe.optim
    opt_G = torch.optim.Adam(G.parameters(), lr=o.G.lr, betas=o.G.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=o.D.lr, betas=o.D.betas)
    gen = torch.Generator().manual_seed(0)
    batch = recipe.train.batch_size
    images = trainer.stream

    def run_memcore(n):
        from collections import defaultdict
        logs = defaultdict(list)
        for _ in range(n):
            trainer.train_step(logs)

    def run_hand(n):
        for _ in range(n):
            real, _ = images.next()
            hand_written_step(G, D, G_ema, opt_G, opt_D, real, G.z_dim, gen, recipe.ema.decay)

    run_memcore(3)
    run_hand(3)
    times = {"memcore": [], "hand": []}
    for _ in range(args.rounds):
        for name, fn in (("memcore", run_memcore), ("hand", run_hand)):
            t0 = time.perf_counter()
            fn(args.steps)
            times[name].append((time.perf_counter() - t0) / args.steps)
    mem, hand = statistics.median(times["memcore"]), statistics.median(times["hand"])
    print(f"| {Path(args.recipe).stem} (batch {batch}, {torch.get_num_threads()} threads) | "
          f"{hand * 1000:.1f} ms | {mem * 1000:.1f} ms | {100 * (mem / hand - 1):+.1f}% |")


if __name__ == "__main__":
    main()
