"""``memcore study RECIPE... --steps N --out DIR``: train a set of recipes and compare them.

The attention study of the SAGAN report (full attention / none / none in G / none in D) is four
recipes; this command is not specific to them. It trains each recipe into ``DIR/runs/<stem>`` (a
finished run is reused, so the figures can be redrawn with ``--plot-only``), then writes:

* ``DIR/metric.png``  every ``metric/...`` value logged by the runs' ``[[metrics]]`` over steps,
                      and every ``memcore eval`` result found in a run (``eval-step-*.json``);
                      absent when there are none;
* ``DIR/d_loss.png``  the D loss over steps (raw, light, and a moving average);
* ``DIR/samples.png`` the fixed-seed sample grid of every recipe (rows) at the chosen steps;
* ``DIR/summary.md``  a table of the numbers behind the figures.

Every run uses the same ``train.seed``, so the grids show the same latents across recipes.
"""
from __future__ import annotations

import json
import math
from functools import reduce
from pathlib import Path

import memcore

from .runs import checkpoint_files

HELP = "Train several recipes and compare metric curves, D-loss curves and sample grids."


def configure(p) -> None:
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="Recipe files, one run each.")
    p.add_argument("--steps", type=int, required=True, help="Training steps of every run.")
    p.add_argument("--out", required=True, help="Folder for the runs and the figures.")
    p.add_argument("--grid-steps", help="Comma-separated steps shown in samples.png "
                   "(default: four evenly spaced steps).")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Recipe override applied to every run (repeatable), e.g. "
                   "--set 'metrics=[{kind=\"fid\", every=100}]'.")
    p.add_argument("--smooth", type=int, default=5, help="Moving-average window of the D-loss "
                   "curves, in log lines.")
    p.add_argument("--plot-only", action="store_true", help="Do not train; redraw from the runs.")


# -- training ---------------------------------------------------------------------------------
def grid_steps_of(text: str | None, steps: int) -> list[int]:
    if text is None:
        return sorted({max(1, round(steps * k / 4)) for k in range(1, 5)})
    try:
        chosen = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise memcore.MemcoreError(f"--grid-steps {text!r}: expected comma-separated integers") \
            from None
    bad = [s for s in chosen if not 0 < s <= steps]
    if not chosen or bad:
        raise memcore.MemcoreError(f"--grid-steps {text!r}: steps must lie in 1..{steps} "
                                   f"(--steps)")
    return chosen


def is_finished(run_dir: Path, steps: int) -> bool:
    return any(s >= steps for s in checkpoint_files(run_dir))


def train(recipe: Path, run_dir: Path, steps: int, sample_every: int, overrides: list[str]) -> None:
    if is_finished(run_dir, steps):
        print(f"{recipe.stem}: reusing {run_dir} (already trained for {steps} steps)", flush=True)
        return
    if run_dir.exists():
        raise memcore.MemcoreError(f"{run_dir} holds an unfinished or shorter run: remove it, or "
                                   "choose another --out")
    memcore.train(recipe, [f"run.dir={json.dumps(str(run_dir))}", f"train.steps={steps}",
                           f"train.sample_every={sample_every}", *overrides])


# -- reading the runs -------------------------------------------------------------------------
def read_log(run_dir: Path) -> list[dict]:
    """The run's log lines, plus one line per ``memcore eval`` result (eval-step-*.json)."""
    path = run_dir / "log.jsonl"
    if not path.exists():
        raise memcore.MemcoreError(f"{run_dir}: no log.jsonl (not a memcore run?)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for result in sorted(run_dir.glob("eval-step-*.json")):
        for entry in json.loads(result.read_text()):
            records.append({"step": entry["step"], **{
                f"metric/{k}": v for k, v in entry.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}})
    return sorted(records, key=lambda r: r["step"])


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    rows = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in rows], [v for _, v in rows]


def moving_average(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def metric_keys(logs: dict[str, list[dict]]) -> list[str]:
    return sorted({k for records in logs.values() for r in records for k in r
                   if k.startswith("metric/")})


# -- figures ----------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_metrics(logs, keys, out: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, records in logs.items():
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, marker="o", ms=3, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(key.removeprefix("metric/"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_d_loss(logs, window: int, out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (name, records) in enumerate(logs.items()):
        steps, values = series(records, "loss/D")
        colour = f"C{i}"
        ax.plot(steps, values, color=colour, alpha=0.25, lw=0.8)
        ax.plot(steps, moving_average(values, window), color=colour, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(f"D loss (moving average of {window} log lines)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_samples(run_dirs: dict[str, Path], steps: list[int], out: Path) -> Path:
    from PIL import Image
    plt = _pyplot()
    rows, cols = len(run_dirs), len(steps)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    for r, (name, run_dir) in enumerate(run_dirs.items()):
        for c, step in enumerate(steps):
            ax = axes[r, c]
            path = run_dir / "samples" / f"step-{step:07d}.png"
            if path.exists():
                with Image.open(path) as im:
                    ax.imshow(im.convert("RGB"))
            else:
                ax.text(0.5, 0.5, "no grid\nat this step", ha="center", va="center", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {step}", fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def summary(logs, keys, window: int) -> str:
    lines = ["| recipe | steps | D loss (last %d log lines) | G loss (same) | %s train time (s) |"
             % (window, "".join(f"{k.removeprefix('metric/')} last / best | " for k in keys)),
             "|---|---|---|---|" + "---|" * len(keys) + "---|"]
    for name, records in logs.items():
        def tail_mean(key):
            _, values = series(records, key)
            return sum(values[-window:]) / len(values[-window:]) if values else math.nan
        cells = [name, str(records[-1]["step"] if records else 0), f"{tail_mean('loss/D'):.3f}",
                 f"{tail_mean('loss/G'):.3f}"]
        for key in keys:
            _, values = series(records, key)
            cells.append(f"{values[-1]:.2f} / {min(values):.2f}" if values else "-")
        times = [r["time"] for r in records if "time" in r]
        cells.append(f"{times[-1]:.0f}" if times else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- the command ------------------------------------------------------------------------------
def handler(args) -> int:
    if args.steps <= 0:
        raise memcore.MemcoreError(f"--steps {args.steps}: expected a number > 0")
    recipes = [Path(r) for r in args.recipes]
    stems = [r.stem for r in recipes]
    if len(set(stems)) != len(stems):
        raise memcore.MemcoreError(f"recipes {', '.join(map(str, recipes))}: two share a file "
                                   "name, and runs are named by it")
    out = Path(args.out)
    grid_steps = grid_steps_of(args.grid_steps, args.steps)
    sample_every = reduce(math.gcd, grid_steps)
    run_dirs = {r.stem: out / "runs" / r.stem for r in recipes}
    if not args.plot_only:
        for recipe in recipes:
            if not recipe.exists():
                raise memcore.MemcoreError(f"recipe not found: {recipe}")
        for recipe in recipes:
            train(recipe, run_dirs[recipe.stem], args.steps, sample_every, args.set)
    logs = {name: read_log(d) for name, d in run_dirs.items()}
    keys = metric_keys(logs)
    written = [plot_d_loss(logs, args.smooth, out / "d_loss.png"),
               plot_samples(run_dirs, grid_steps, out / "samples.png")]
    if keys:
        written.append(plot_metrics(logs, keys, out / "metric.png"))
    table = summary(logs, keys, args.smooth)
    (out / "summary.md").write_text(table)
    written.append(out / "summary.md")
    print(table, end="")
    print("wrote " + ", ".join(map(str, written)) +
          ("" if keys else " (no metric/... values in the logs: add [[metrics]] for metric curves)"))
    return 0
