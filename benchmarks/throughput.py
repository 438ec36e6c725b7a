"""Training throughput (images/s) per recipe on this machine.

    python benchmarks/throughput.py [RECIPE ...] [--steps 20] [--write]

Each recipe trains ``--steps`` steps after 3 warm-up steps (no sampling, checkpoints or metrics
in the timed part). ``--write`` replaces the table between the markers in docs/performance.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from memcore.recipe import load_recipe
from memcore.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- throughput:begin -->", "<!-- throughput:end -->"


def measure(recipe_path: Path, steps: int, overrides=()) -> tuple[float, int]:
    recipe, resolved = load_recipe(recipe_path, ["train.progress=false", "data.limit=4096",
                                                 "metrics=[]", *overrides])
    trainer = Trainer(recipe, resolved, Path("/tmp/memcore-bench"))
    logs = defaultdict(list)
    for _ in range(3):
        trainer.train_step(logs)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(logs)
    return steps * recipe.train.batch_size / (time.perf_counter() - t0), recipe.train.batch_size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recipes", nargs="*")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="Override every recipe (e.g. a memory's warm-up, to time the memory path).")
    args = ap.parse_args()
    recipes = [Path(r) for r in args.recipes] or [ROOT / "recipes" / "quickstart.toml"]
    rows = ["| recipe | batch | images/s | step time |", "|---|---|---|---|"]
    for path in recipes:
        rate, batch = measure(path, args.steps, args.set)
        rows.append(f"| `{path.relative_to(ROOT) if path.is_absolute() else path}` | {batch} | "
                    f"{rate:.0f} | {1000 * batch / rate:.0f} ms |")
        print(rows[-1], flush=True)
    command = " ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]])
    header = (f"Measured by `{command}` on {platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}.")
    table = "\n".join([header, ""] + rows)
    if args.write:
        doc = ROOT / "docs" / "performance.md"
        text = doc.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        doc.write_text(text[:start] + "\n" + table + "\n" + text[end:])


if __name__ == "__main__":
    main()
