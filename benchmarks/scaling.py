"""Data-parallel scaling on CPU: 2 processes against 1, at the same global batch.

    python benchmarks/scaling.py [RECIPE ...] [--steps 120] [--rounds 2] [--set KEY=VALUE ...]

For each recipe, three configurations train ``--steps`` steps through the real CLI (``memcore
run``; the 2-process one through torchrun with gloo, as ``memcore run --nproc 2`` does):

* 1 process x 1 thread   (``OMP_NUM_THREADS=1``)
* 1 process x 2 threads  (``OMP_NUM_THREADS=2``)
* 2 processes x 1 thread (``torchrun --nproc_per_node 2``, ``OMP_NUM_THREADS=1`` each)

``train.batch_size`` is the global batch in memcore (summed over processes), so all three see the
same images per step. The rate is the median of the run's logged ``img_per_s`` (global images per
second between log lines) after the first line, which holds the warm-up; no metrics, samples or
checkpoints fall in the timed part. The configurations are interleaved in each of ``--rounds``
rounds and the table reports the median over rounds, so a change of load hits all three alike.
Prints a Markdown table; use it on an otherwise idle machine (``cat /proc/loadavg``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMCORE = [sys.executable, "-m", "memcore"]
CONFIGS = {                        # name -> (processes, threads per process)
    "1 process x 1 thread": (1, 1),
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread": (2, 1),
}


def _command(recipe: Path, processes: int, run_dir: Path, steps: int, extra: list[str]) -> list[str]:
    never = steps * 100   # no sample grid or checkpoint inside the timed steps
    sets = [f"run.dir={run_dir}", f"train.steps={steps}", "train.log_every=10", "metrics=[]",
            "train.progress=false", f"train.sample_every={never}",
            f"train.checkpoint_every={never}", "data.limit=4096", *extra]
    launch = MEMCORE if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", "-m", "memcore"]
    return launch + ["run", str(recipe)] + [a for s in sets for a in ("--set", s)]


def measure(recipe: Path, processes: int, threads: int, steps: int, extra: list[str]) -> float:
    """Median global img/s of one run, after its first (warm-up) log line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="memcore-scaling-") as tmp:
        run_dir = Path(tmp) / "run"
        done = subprocess.run(_command(recipe, processes, run_dir, steps, extra), env=env,
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{recipe} with {processes} process(es) failed (exit {done.returncode}):\n"
                     f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    rates = [line["img_per_s"] for line in lines if "img_per_s" in line][1:]
    if not rates:
        sys.exit(f"{recipe}: no img_per_s after warm-up; raise --steps")
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", nargs="*", type=Path)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="Override every recipe (as memcore run --set).")
    args = ap.parse_args()
    recipes = args.recipes or [ROOT / "recipes" / "quickstart.toml"]
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows = ["| recipe | batch (global) | " + " | ".join(CONFIGS) + " | 2 proc / 1x1 | 2 proc / 1x2 |",
            "|---|---|" + "---|" * (len(CONFIGS) + 2)]
    for recipe in recipes:
        rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for r in range(args.rounds):
            for name, (processes, threads) in CONFIGS.items():
                t0 = time.perf_counter()
                rates[name].append(measure(recipe, processes, threads, args.steps, args.set))
                print(f"{recipe.name} round {r + 1}: {name}: {rates[name][-1]:.0f} img/s "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        median = {name: statistics.median(v) for name, v in rates.items()}
        one, two_threads, two_procs = (median[name] for name in CONFIGS)
        batch = _batch(recipe, args.set)
        rows.append(f"| `{_shown(recipe)}` | {batch} | "
                    + " | ".join(f"{median[name]:.0f} img/s" for name in CONFIGS)
                    + f" | {two_procs / one:.2f}x | {two_procs / two_threads:.2f}x |")
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("\n".join(rows))


def _batch(recipe: Path, extra: list[str]) -> int:
    from memcore.recipe import load_recipe
    return load_recipe(recipe, extra)[0].train.batch_size


def _shown(recipe: Path) -> str:
    try:
        return str(recipe.resolve().relative_to(ROOT))
    except ValueError:
        return str(recipe)


if __name__ == "__main__":
    main()
