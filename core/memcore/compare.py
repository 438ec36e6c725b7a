"""``memcore compare DIR|RUN...``: metrics of runs grouped into variants, over seeds.

Any set of run folders works (finished or still training): a folder that is not a run is searched
for runs. Runs in ``.../<variant>/seed-<s>/`` (a sweep's layout) group by ``<variant>``; other runs
by their name without the ``NNNN-`` number. Per variant and metric the report gives the final and
the best value as mean ± std and a 95% interval over seeds (Student's t with n-1 degrees of
freedom), the step of the best value and img/s, and whether the variant differs from the baseline
beyond seed noise by Welch's two-sided t-test on the final values (alpha = 0.05; "indistinguishable"
when p >= 0.05).

Metric names keep their extractor (``fid@fashion-classifier``), so numbers of different feature
extractors never share a table. Besides the ``metric/...`` lines of ``log.jsonl`` the report reads
``memcore eval`` results (``eval-step-*.json``, as ``eval/<name>``) and the JSON of plugin
evaluation commands written as ``<command>-step-<N>.json`` holding a ``step`` (their numbers up to
one table deep, as ``<command>/<key>``).
"""
from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import attrs
import tomli

from .errors import MemcoreError

ALPHA = 0.05
TEST = "Welch's two-sided t-test on the final values"
_SEED_DIR = re.compile(r"^seed-(\d+)$")
_PLUGIN_JSON = re.compile(r"^([a-z0-9][a-z0-9_-]*?)-step-(\d+)(?:-[a-z0-9-]+)?\.json$")


# -- statistics (no scipy: the regularised incomplete beta function is all the t-tests need) ---
def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The q-quantile (q > 0.5) of Student's t by bisection on the CDF."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2.0


def summary(values: list[float]) -> dict:
    """n, mean, sample std and the 95% interval of the mean (t with n-1 degrees of freedom)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def welch(a: list[float], b: list[float]) -> dict | None:
    """Welch's t-test of mean(a) - mean(b): t, Welch-Satterthwaite df, two-sided p."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:  # no seed noise at all: any difference is beyond it
        return {"t": math.copysign(math.inf, diff) if diff else 0.0, "df": None,
                "p": 0.0 if diff else 1.0}
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return {"t": t, "df": df, "p": 2.0 * t_cdf(-abs(t), df)}


def verdict(test: dict | None, diff: float) -> str:
    if test is None:
        return "n/a (needs 2+ seeds each)"
    if test["p"] >= ALPHA:
        return f"indistinguishable (p = {test['p']:.2g})"
    return f"{'higher' if diff > 0 else 'lower'} (p = {test['p']:.2g})"


# -- reading runs -----------------------------------------------------------------------------
@attrs.define
class RunData:
    dir: Path
    variant: str
    seed: int
    steps: int | None                            # train.steps of its recipe
    series: dict[str, dict[int, float]]          # metric name -> step -> value
    losses: dict[str, list[tuple[int, float]]]   # loss/D, loss/G
    img_per_s: float | None
    last_step: int
    recipe: dict


def is_run(folder: Path) -> bool:
    return (folder / "log.jsonl").exists() or (folder / "recipe.resolved.toml").exists()


def find_runs(paths) -> list[tuple[Path, str]]:
    """(run folder, variant label) for every argument, searching folders that are not runs."""
    found = []
    for arg in map(Path, paths):
        if not arg.exists():
            raise MemcoreError(f"{arg}: no such run or folder")
        if is_run(arg):
            found.append((arg, variant_label(arg, arg.parent)))
            continue
        inside = sorted({p.parent for name in ("log.jsonl", "recipe.resolved.toml")
                         for p in arg.rglob(name)})
        if not inside:
            raise MemcoreError(f"{arg}: no runs in this folder (a run holds log.jsonl)")
        found += [(run, variant_label(run, arg)) for run in inside]
    return found


def variant_label(run: Path, root: Path) -> str:
    if _SEED_DIR.match(run.name):
        parent = run.parent
        rel = parent.relative_to(root) if parent != root and root in parent.parents else None
        return str(rel) if rel is not None and str(rel) != "." else parent.name
    return re.sub(r"^\d{4,}-", "", run.name)


def _records(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written by a run in progress
            continue
    return out


def _numbers(table: dict, prefix: str, depth: int) -> dict[str, float]:
    out = {}
    for key, value in table.items():
        if isinstance(value, bool) or key == "step":
            continue
        if isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, dict) and depth > 0:
            out.update(_numbers(value, f"{prefix}{key}/", depth - 1))
    return out


def _named(name: str, extractor) -> str:
    return f"{name}@{extractor}" if isinstance(extractor, str) and extractor else name


def evaluation_results(run: Path) -> list[tuple[int, str, float]]:
    """(step, name, value) of ``memcore eval`` and plugin evaluation JSON files in the run."""
    out = []
    for path in sorted(run.glob("*.json")):
        m = _PLUGIN_JSON.match(path.name)
        if not m:
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if m.group(1) == "eval" and isinstance(data, list):
            for entry in data:
                label = f"[{entry['variant']}]" if entry.get("variant") else ""
                for key, value in _numbers(entry, "", 0).items():
                    if not key.endswith("_std_repeats"):
                        out.append((entry["step"], _named(f"eval/{key}{label}",
                                                          entry.get("extractor")), value))
        elif isinstance(data, dict) and isinstance(data.get("step"), int):
            extractor = data.get("extractor")
            if isinstance(extractor, dict):
                extractor = extractor.get("extractor")
            for key, value in _numbers(data, f"{m.group(1)}/", 1).items():
                out.append((data["step"], _named(key, extractor), value))
    return out


def read_run(run: Path, variant: str) -> RunData:
    recipe = {}
    if (run / "recipe.resolved.toml").exists():
        recipe = tomli.loads((run / "recipe.resolved.toml").read_text())
    train = recipe.get("train", {})
    m = _SEED_DIR.match(run.name)
    seed = train.get("seed", int(m.group(1)) if m else 0)
    series: dict[str, dict[int, float]] = {}
    losses: dict[str, list] = {"loss/D": [], "loss/G": []}
    rates, last = [], 0
    for r in _records(run):
        step = int(r.get("step", 0))
        last = max(last, step)
        for key, value in r.items():
            if key.startswith("metric/") and isinstance(value, (int, float)):
                series.setdefault(key.removeprefix("metric/"), {})[step] = float(value)
            elif key in losses and isinstance(value, (int, float)):
                losses[key].append((step, float(value)))
        if isinstance(r.get("img_per_s"), (int, float)):
            rates.append(r["img_per_s"])
    for step, name, value in evaluation_results(run):
        series.setdefault(name, {})[step] = value
    # The median: the interval after an evaluation also counts the evaluation's time.
    rate = statistics.median(rates) if rates else None
    return RunData(run, variant, int(seed), train.get("steps"), series, losses, rate, last, recipe)


def _experiment_order(paths) -> tuple[list[str], str | None]:
    """Variant order and baseline from a sweep's experiment.json among the arguments."""
    for arg in map(Path, paths):
        info = arg / "experiment.json"
        if info.exists():
            data = json.loads(info.read_text())
            return list(data.get("variants", [])), data.get("baseline")
    return [], None


def group(runs: list[RunData], order: list[str]) -> dict[str, list[RunData]]:
    variants: dict[str, list[RunData]] = {name: [] for name in order}
    for run in runs:
        variants.setdefault(run.variant, []).append(run)
    return {name: sorted(rs, key=lambda r: r.seed) for name, rs in variants.items() if rs}


_SAME_EXCEPT = ("train.seed", "run.", "train.progress", "train.steps")


def _flat(d: dict, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def mixed_recipes(runs: list[RunData]) -> list[str]:
    """Keys in which the runs of one variant differ (besides seed, folder, steps)."""
    flats = [_flat(r.recipe) for r in runs if r.recipe]
    keys = set().union(*flats) if flats else set()
    return sorted(k for k in keys if not k.startswith(_SAME_EXCEPT)
                  and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1)


# -- the numbers ------------------------------------------------------------------------------
def direction(name: str, runs: list[RunData]) -> bool | None:
    """True when higher is better, from the metric component that logged ``name``; None unknown."""
    from .registry import get_registry
    bare = name.split("@")[0].removeprefix("eval/").split("[")[0]
    for run in runs:
        for path in (run.dir / "metrics.jsonl",):
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if bare in entry.get("values", {}):
                    try:
                        cls = get_registry().get("metric", entry["metric"]).load_factory()
                    except MemcoreError:
                        return None
                    return bool(getattr(cls, "higher_is_better", False))
    return None


def _rate(runs: list[RunData]) -> dict | None:
    rates = [r.img_per_s for r in runs if r.img_per_s is not None]
    return summary(rates) if rates else None


def metric_rows(name: str, variants: dict[str, list[RunData]], baseline: str) -> list[dict]:
    higher = direction(name, [r for rs in variants.values() for r in rs])
    pick = max if higher else min
    base_final = [r.series[name][max(r.series[name])] for r in variants.get(baseline, [])
                  if name in r.series]
    rows = []
    for variant, runs in variants.items():
        having = [r for r in runs if name in r.series]
        if not having:
            continue
        finals = [r.series[name][max(r.series[name])] for r in having]
        row = {"variant": variant, "seeds": [r.seed for r in having],
               "steps": [max(r.series[name]) for r in having],
               "final": summary(finals), "final_values": finals,
               "img_per_s": _rate(having)}
        if higher is not None:
            bests = [pick(r.series[name].items(), key=lambda kv: kv[1]) for r in having]
            row["best"] = summary([v for _, v in bests])
            row["best_step"] = [s for s, _ in bests]
        if variant == baseline:
            row["vs_baseline"] = "baseline"
        elif base_final:
            test = welch(finals, base_final)
            row["welch"] = test
            row["vs_baseline"] = verdict(test, statistics.fmean(finals) - statistics.fmean(base_final))
        else:
            row["vs_baseline"] = "n/a (no baseline values)"
        rows.append(row)
    return rows


def build_report(paths, metrics=None, baseline=None) -> dict:
    order, exp_baseline = _experiment_order(paths)
    runs = [read_run(run, label) for run, label in find_runs(paths)]
    variants = group(runs, order)
    baseline = baseline or exp_baseline or next(iter(variants))
    if baseline not in variants:
        from .registry import did_you_mean
        raise MemcoreError(f"--baseline {baseline}: no such variant{did_you_mean(baseline, variants)}"
                           f" (variants: {', '.join(variants)})")
    names = sorted({k for r in runs for k in r.series})
    if metrics:
        chosen = [n for n in names if n in metrics or n.split("@")[0] in metrics]
        if not chosen:
            from .registry import did_you_mean
            raise MemcoreError(f"--metric {', '.join(metrics)}: no run logged it"
                               f"{did_you_mean(metrics[0], names)} (logged: "
                               f"{', '.join(names) or 'no metrics'})")
        names = chosen
    return {"baseline": baseline, "test": TEST, "alpha": ALPHA,
            "interval": "95% over seeds, Student's t with n-1 degrees of freedom",
            "variants": {v: [{"dir": str(r.dir), "seed": r.seed, "step": r.last_step,
                              "steps": r.steps} for r in rs] for v, rs in variants.items()},
            "mixed_recipes": {v: keys for v, rs in variants.items() if (keys := mixed_recipes(rs))},
            "training": {v: _rate(rs) for v, rs in variants.items()},
            "metrics": {name: metric_rows(name, variants, baseline) for name in names},
            "_runs": variants}


# -- Markdown ---------------------------------------------------------------------------------
def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _mean_std(s: dict | None) -> str:
    if s is None:
        return "—"
    return _num(s["mean"]) + (f" ± {s['std']:.2g}" if s["std"] is not None else "")


def _interval(s: dict | None) -> str:
    return "—" if s is None or s["ci95"] is None else f"[{_num(s['ci95'][0])}, {_num(s['ci95'][1])}]"


def _span(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}–{max(values)}"


def markdown(report: dict, figures: list[Path]) -> str:
    lines = [f"# Comparison of {len(report['variants'])} variant(s)", "",
             f"Intervals: {report['interval']}. *vs {report['baseline']}*: {report['test']}, "
             f"alpha = {report['alpha']}; \"indistinguishable\" means the difference is within "
             "seed noise at this number of seeds.", ""]
    for variant, keys in report["mixed_recipes"].items():
        lines += [f"**Warning:** the runs of {variant} differ in {', '.join(keys[:8])}: they are "
                  "not seeds of one recipe.", ""]
    lines += ["| variant | runs | step | img/s (median of each run's log lines) |",
              "|---|---|---|---|"]
    for variant, runs in report["variants"].items():
        lines.append(f"| {variant} | {len(runs)} | {_span([r['step'] for r in runs])} | "
                     f"{_mean_std(report['training'][variant])} |")
    lines.append("")
    for name, rows in report["metrics"].items():
        lines += [f"## {name}", "",
                  "| variant | seeds | step | final (mean ± std) | final 95% CI | best | best 95% CI "
                  "| step of best | img/s | vs " + report["baseline"] + " |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            lines.append("| " + " | ".join([
                row["variant"], str(len(row["seeds"])), _span(row["steps"]),
                _mean_std(row["final"]), _interval(row["final"]), _mean_std(row.get("best")),
                _interval(row.get("best")),
                _span(row["best_step"]) if "best_step" in row else "—",
                _mean_std(row["img_per_s"]), row["vs_baseline"]]) + " |")
        if rows and "best" not in rows[0]:
            lines.append("\n(best: unknown whether higher is better for this value)")
        lines.append("")
    if not report["metrics"]:
        lines += ["No metric values logged yet (add [[metrics]] to the recipes, or run "
                  "`memcore eval` on the runs).", ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


# -- figures ----------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _band(ax, per_run: list[dict[int, float]], colour, label) -> None:
    """Mean over the runs having a value at each step, and their min-max band."""
    steps = sorted(set().union(*per_run))
    values = [[r[s] for r in per_run if s in r] for s in steps]
    ax.plot(steps, [statistics.fmean(v) for v in values], color=colour, label=label, lw=1.4)
    ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=colour,
                    alpha=0.2, lw=0)


def _moving_average(points: list[tuple[int, float]], window: int) -> dict[int, float]:
    out = {}
    for i, (step, _) in enumerate(points):
        chunk = [v for _, v in points[max(0, i - window + 1): i + 1]]
        out[step] = sum(chunk) / len(chunk)
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def figures(report: dict, stem: Path, smooth: int) -> list[Path]:
    plt = _pyplot()
    variants = report["_runs"]
    colours = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    written = []
    for name in report["metrics"]:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for variant, runs in variants.items():
            per_run = [r.series[name] for r in runs if name in r.series]
            if per_run:
                _band(ax, per_run, colours[variant], f"{variant} (n={len(per_run)})")
        ax.set(xlabel="step", ylabel=name, title=f"{name}: mean, min–max over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(plt, fig, stem.with_name(f"{stem.name}-{_safe(name)}.png")))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, key in zip(axes, ("loss/D", "loss/G")):
        for variant, runs in variants.items():
            per_run = [_moving_average(r.losses[key], smooth) for r in runs if r.losses[key]]
            if per_run:
                _band(ax, per_run, colours[variant], variant)
        ax.set(xlabel="step", ylabel=f"{key} (moving average of {smooth} log lines)",
               title=f"{key}: mean, min–max over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    written.append(_save(plt, fig, stem.with_name(f"{stem.name}-losses.png")))
    samples = sample_figure(plt, variants, stem.with_name(f"{stem.name}-samples.png"))
    return written + ([samples] if samples else [])


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def sample_figure(plt, variants: dict[str, list[RunData]], path: Path) -> Path | None:
    """The sample grid of every variant at one seed they share, at the last step all have."""
    from PIL import Image
    seeds = set.intersection(*[{r.seed for r in rs} for rs in variants.values()])
    if not seeds:
        return None
    seed = min(seeds)
    chosen = {v: next(r for r in rs if r.seed == seed) for v, rs in variants.items()}
    grids = {v: {int(m.group(1)): p for p in (r.dir / "samples").glob("step-*.png")
                 if (m := re.search(r"step-(\d+)\.png$", p.name))} for v, r in chosen.items()}
    common = set.intersection(*[set(g) for g in grids.values()])
    if not common:
        return None
    step = max(common)
    fig, axes = plt.subplots(1, len(grids), figsize=(2.8 * len(grids), 3.1), squeeze=False)
    for ax, (variant, found) in zip(axes[0], grids.items()):
        with Image.open(found[step]) as im:
            ax.imshow(im.convert("RGB"))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(variant, fontsize=9)
    fig.suptitle(f"samples at step {step}, seed {seed} (same latents in every variant)", fontsize=9)
    return _save(plt, fig, path)


# -- the command ------------------------------------------------------------------------------
def compare(paths, metric=None, out=None, as_json=False, baseline=None, smooth=10) -> int:
    if smooth < 1:
        raise MemcoreError(f"--smooth {smooth}: expected a number >= 1")
    if out:
        from . import safewrite  # the place is checked before any run is read or figure drawn
        safewrite.check_output(out, "--out")
    report = build_report(paths, metric, baseline)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    written = figures(report, Path(out).with_suffix(""), smooth) if out else []
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    public["figures"] = [str(p) for p in written]
    text = json.dumps(public, indent=2) if as_json else markdown(report, written)
    if out:
        Path(out).write_text(text + "\n")
        print(f"-> {out}" + (f" and {len(written)} figure(s)" if written else ""))
    else:
        print(text)
    return 0
