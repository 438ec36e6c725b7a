"""``memcore compare DIR|RUN...``: metrics of runs grouped into variants, over seeds.

Any set of run folders works (finished or still training): a folder that is not a run is searched
for runs, and a run named twice counts once. Runs in ``.../<variant>/seed-<s>/`` (a sweep's
layout) group by ``<variant>``; other runs by their name without the ``NNNN-`` number. Per variant
and metric the report gives the final and the best value as mean ± std and a 95% interval over
seeds (Student's t with n-1 degrees of freedom), the step of the best value, and whether the
variant differs from the baseline beyond seed noise (alpha = 0.05; "indistinguishable" when
p >= 0.05). Variants that ran the same seeds are paired by seed: a paired t-test on the final
values, the mean paired difference with its 95% interval, and Wilcoxon's signed-rank test beside
it from 6 pairs (fewer cannot reach p < 0.05). Without 2 shared seeds, Welch's t-test. For an
indistinguishable row, the seeds at which a true difference of the observed size would be found
with 80% power (noncentral t). Per variant, the costs: parameters of G and D, wall-clock per run,
peak memory and img/s, from the log's first line and its ``time``/``peak_*`` fields; a warning
when variants of one seed saw different first batches or latents (the log's ``data_hash`` and
``latent_hash``).

Metric names keep their extractor (``fid@fashion-classifier``), so numbers of different feature
extractors never share a table. Besides the ``metric/...`` lines of ``log.jsonl`` the report reads
``memcore eval`` results (``eval-step-*.json``, as ``eval/<name>``) and the JSON of plugin
evaluation commands written as ``<command>-step-<N>.json`` holding a ``step`` (their numbers up to
one table deep, as ``<command>/<key>``). Damaged contents (a line that is not a record, a value
that is not a finite number, an unreadable recipe or experiment.json) are skipped with a warning
naming the file and line.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import statistics
import sys
from pathlib import Path

import attrs
import tomli
from scipy import stats

from memcore import safewrite
from memcore.errors import MemcoreError

ALPHA = 0.05
POWER = 0.8
WILCOXON_PAIRS = 6         # with fewer pairs its smallest two-sided p, 2 / 2^n, exceeds alpha
MOST_SEEDS = 10 ** 6       # seeds needed beyond this are reported as "more than"
TEST = ("paired t-test on the final values of the seeds both variants ran (Wilcoxon signed-rank "
        f"beside it from {WILCOXON_PAIRS} pairs); Welch's two-sided t-test when fewer than 2 "
        "seeds are shared")
OUT_FORMATS = {".md": False, ".json": True}     # --out's extension -> whether it holds --json
_SEED_DIR = re.compile(r"^seed-(\d+)$")
_PLUGIN_JSON = re.compile(r"^([a-z0-9][a-z0-9_-]*?)-step-(\d+)(?:-[a-z0-9-]+)?\.json$")
_LARGEST = 1e100           # a variance squares the values: beyond ~1e154 it overflows a float


# -- statistics -------------------------------------------------------------------------------
def t_quantile(q: float, df: float) -> float:
    return float(stats.t.ppf(q, df))


def summary(values: list[float]) -> dict:
    """n, mean, sample std and the 95% interval of the mean (t with n-1 degrees of freedom)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def _no_noise(diff: float) -> dict:
    """Identical values within each group: any difference is beyond seed noise."""
    return {"t": None, "df": None, "p": 0.0 if diff else 1.0, "ci95": [diff, diff]}


def welch(a: list[float], b: list[float]) -> dict | None:
    """Welch's t-test of mean(a) - mean(b): t, Welch-Satterthwaite df, two-sided p, 95% interval."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.fmean(a) - statistics.fmean(b)
    var_a, var_b = statistics.variance(a), statistics.variance(b)
    if var_a + var_b == 0:
        return {"mean_diff": diff, **_no_noise(diff), "seeds_needed": None}
    r = stats.ttest_ind(a, b, equal_var=False)
    ci = r.confidence_interval(1 - ALPHA)
    test = {"mean_diff": diff, "t": float(r.statistic), "df": float(r.df), "p": float(r.pvalue),
            "ci95": [float(ci.low), float(ci.high)]}
    # n seeds each: noise sd sqrt(var_a + var_b) per sqrt(n), df ~ 2(n - 1) (equal variances)
    test["seeds_needed"] = seeds_needed(diff, math.sqrt(var_a + var_b), lambda n: 2 * (n - 1)) \
        if test["p"] >= ALPHA else None
    return test


def paired(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """The paired t-test of a - b over the seeds both have (final values by seed)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0:
        test = {**_no_noise(mean), "df": len(seeds) - 1}
    else:
        r = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
        ci = r.confidence_interval(1 - ALPHA)
        test = {"t": float(r.statistic), "df": int(r.df), "p": float(r.pvalue),
                "ci95": [float(ci.low), float(ci.high)]}
    nonzero = sum(d != 0 for d in diffs)
    wilcoxon = None
    if nonzero >= WILCOXON_PAIRS:
        w = stats.wilcoxon(diffs)
        wilcoxon = {"statistic": float(w.statistic), "p": float(w.pvalue)}
    return {"seeds": seeds, "n": len(seeds), "mean_diff": mean, "sd_diff": sd, **test,
            "wilcoxon": wilcoxon,
            "seeds_needed": seeds_needed(mean, sd, lambda n: n - 1) if test["p"] >= ALPHA else None}


def power(effect: float, sd: float, n: int, df: int) -> float:
    """Probability that the two-sided t-test at ALPHA finds a true difference ``effect`` when
    one seed's noise is ``sd``: the noncentral t with noncentrality effect / sd x sqrt(n)."""
    nc = abs(effect) / sd * math.sqrt(n)
    critical = stats.t.ppf(1 - ALPHA / 2, df)
    return float(stats.nct.sf(critical, df, nc) + stats.nct.cdf(-critical, df, nc))


def seeds_needed(effect: float, sd: float, df_of) -> int | None:
    """The fewest seeds (pairs, or seeds per variant) at which ``power`` reaches POWER; None when
    there is no difference to find or more than MOST_SEEDS would be needed."""
    if effect == 0 or sd == 0:
        return None
    reaches = lambda n: power(effect, sd, n, df_of(n)) >= POWER  # noqa: E731 - rises with n
    high = 2
    while not reaches(high):
        if high > MOST_SEEDS:
            return None
        high *= 2
    low = high // 2                     # fails (or is 1, below any test)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def verdict(test: dict | None, name: str) -> str:
    if test is None:
        return "n/a (needs 2+ seeds each)"
    if test["p"] >= ALPHA:
        return f"indistinguishable ({name}, p = {test['p']:.2g})"
    return f"{'higher' if test['mean_diff'] > 0 else 'lower'} ({name}, p = {test['p']:.2g})"


# -- reading runs -----------------------------------------------------------------------------
class Warnings(list):
    """What was skipped while reading, each naming its file (and line); printed to stderr."""

    def add(self, text: str) -> None:
        if text not in self:
            self.append(text)


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
    start: dict                                  # params/G, params/D, data_hash, latent_hash
    wall_clock: float | None                     # the log's last ``time``: seconds of training
    peak: dict[str, float]                       # peak_rss_mb, peak_gpu_mb


def is_run(folder: Path) -> bool:
    return (folder / "log.jsonl").exists() or (folder / "recipe.resolved.toml").exists()


def find_runs(paths) -> list[tuple[Path, str]]:
    """(run folder, variant label) for every argument, searching folders that are not runs; a
    run reached twice (named twice, or also inside a named folder) counts once."""
    found, seen = [], set()
    for arg in map(Path, paths):
        if not arg.exists():
            raise MemcoreError(f"{arg}: no such run or folder")
        if is_run(arg):
            inside = [(arg, variant_label(arg, arg.parent))]
        elif not arg.is_dir():
            raise MemcoreError(f"{arg}: not a run folder (a run holds log.jsonl)")
        else:
            runs = sorted({p.parent for name in ("log.jsonl", "recipe.resolved.toml")
                           for p in arg.rglob(name)})
            if not runs:
                raise MemcoreError(f"{arg}: no runs in this folder (a run holds log.jsonl)")
            inside = [(run, variant_label(run, arg)) for run in runs]
        for run, label in inside:
            if run.resolve() not in seen:
                seen.add(run.resolve())
                found.append((run, label))
    return found


def variant_label(run: Path, root: Path) -> str:
    if _SEED_DIR.match(run.name):
        parent = run.parent
        rel = parent.relative_to(root) if parent != root and root in parent.parents else None
        return str(rel) if rel is not None and str(rel) != "." else parent.name
    return re.sub(r"^\d{4,}-", "", run.name)


def finite(value) -> float | None:
    """``value`` as a float when it is a number of sensible size (not a bool, NaN, infinite, or
    so large that its variance would overflow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if abs(value) < _LARGEST else None


def _read(path: Path, warnings: Warnings, what: str) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        warnings.add(f"{path}: cannot be read ({reason}); {what}")
        return None


def _json(text: str):
    """Parsed JSON, or None for text that is not (NaN and Infinity are numbers to json)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _bad_record(raw: bytes) -> tuple[str | None, dict | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text", None
    record = _json(text)
    if record is None and text.strip() != "null":
        return f"not a JSON record ({text[:40]!r})", None
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not a record", None
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"step = {json.dumps(step)[:40]}: expected a whole number >= 0", None
    return None, record


def _records(run: Path, warnings: Warnings, name: str = "log.jsonl") -> list[dict]:
    """The records of a run's JSON-lines file; a damaged line is skipped with a warning."""
    path = run / name
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        warnings.add(f"{path}: cannot be read ({exc.strerror or exc}); the run's log is skipped")
        return []
    out, bad = [], []
    for number, raw in enumerate(lines[:-1], 1):   # the last piece: a line still being written
        if not raw.strip():
            continue
        problem, record = _bad_record(raw)
        if problem:
            bad.append(f"line {number}: {problem}")
        else:
            out.append(record)
    for problem in bad[:5]:
        warnings.add(f"{path}, {problem}; skipped")
    if len(bad) > 5:
        warnings.add(f"{path}: {len(bad) - 5} further damaged lines skipped")
    return out


def _numbers(table: dict, prefix: str, depth: int) -> dict[str, float]:
    out = {}
    for key, value in table.items():
        if key == "step":
            continue
        if finite(value) is not None:
            out[f"{prefix}{key}"] = finite(value)
        elif isinstance(value, dict) and depth > 0:
            out.update(_numbers(value, f"{prefix}{key}/", depth - 1))
    return out


def _named(name: str, extractor) -> str:
    return f"{name}@{extractor}" if isinstance(extractor, str) and extractor else name


def _eval_entries(data, path: Path, warnings: Warnings) -> list[tuple[int, str, float]]:
    """``memcore eval``'s list of results, one per metric."""
    out = []
    for i, entry in enumerate(data):
        if not (isinstance(entry, dict) and isinstance(entry.get("step"), int)
                and not isinstance(entry["step"], bool)):
            warnings.add(f"{path}, entry {i}: not a result with a step; skipped")
            continue
        variant = entry.get("variant")
        label = f"[{variant}]" if isinstance(variant, str) and variant else ""
        for key, value in _numbers(entry, "", 0).items():
            if not key.endswith("_std_repeats"):
                out.append((entry["step"], _named(f"eval/{key}{label}", entry.get("extractor")),
                            value))
    return out


def evaluation_results(run: Path, warnings: Warnings) -> list[tuple[int, str, float]]:
    """(step, name, value) of ``memcore eval`` and plugin evaluation JSON files in the run."""
    out = []
    for path in sorted(run.glob("*.json")):
        m = _PLUGIN_JSON.match(path.name)
        if not m:
            continue
        text = _read(path, warnings, "skipped")
        data = None if text is None else _json(text)
        if m.group(1) == "eval" and isinstance(data, list):
            out += _eval_entries(data, path, warnings)
        elif isinstance(data, dict) and isinstance(data.get("step"), int) \
                and not isinstance(data["step"], bool):
            extractor = data.get("extractor")
            if isinstance(extractor, dict):
                extractor = extractor.get("extractor")
            for key, value in _numbers(data, f"{m.group(1)}/", 1).items():
                out.append((data["step"], _named(key, extractor), value))
        elif text is not None:
            warnings.add(f"{path}: not an evaluation result (JSON with a step); skipped")
    return out


def _recipe(run: Path, warnings: Warnings) -> dict:
    path = run / "recipe.resolved.toml"
    if not path.exists():
        return {}
    text = _read(path, warnings, "the seed is taken from the folder name")
    try:
        recipe = tomli.loads(text) if text is not None else {}
    except (tomli.TOMLDecodeError, RecursionError) as exc:
        warnings.add(f"{path}: not valid TOML ({exc}); the seed is taken from the folder name")
        return {}
    if not isinstance(recipe.get("train", {}), dict):
        warnings.add(f"{path}: train is not a table; the seed is taken from the folder name")
        return {}
    return recipe


def _whole(train: dict, key: str, path: Path, warnings: Warnings) -> int | None:
    value = train.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    warnings.add(f"{path}: train.{key} = {json.dumps(value)[:40]}: not a whole number; ignored")
    return None


_START_KEYS = {"params/G": int, "params/D": int, "data_hash": str, "latent_hash": str}


def read_run(run: Path, variant: str, warnings: Warnings) -> RunData:
    recipe = _recipe(run, warnings)
    train = recipe.get("train", {})
    m = _SEED_DIR.match(run.name)
    seed = _whole(train, "seed", run / "recipe.resolved.toml", warnings)
    if seed is None:
        seed = int(m.group(1)) if m else 0
    series: dict[str, dict[int, float]] = {}
    losses: dict[str, list] = {"loss/D": [], "loss/G": []}
    rates, last, start, times, peak = [], 0, {}, [], {}
    log = run / "log.jsonl"
    for r in _records(run, warnings):
        step = r["step"]
        last = max(last, step)
        for key, value in r.items():
            number = finite(value)
            if key.startswith("metric/") or key in losses or key in ("img_per_s", "time") \
                    or key.startswith("peak_"):
                if number is None:
                    warnings.add(f"{log}, step {step}: {key} = {json.dumps(value)[:40]}: not a "
                                 "finite number; skipped")
                elif key.startswith("metric/"):
                    series.setdefault(key.removeprefix("metric/"), {})[step] = number
                elif key in losses:
                    losses[key].append((step, number))
                elif key == "img_per_s":
                    rates.append(number)
                elif key == "time":
                    times.append(number)
                else:
                    peak[key] = max(peak.get(key, number), number)
            elif key in _START_KEYS and key not in start and isinstance(value, _START_KEYS[key]) \
                    and not isinstance(value, bool):
                start[key] = value
    for step, name, value in evaluation_results(run, warnings):
        series.setdefault(name, {})[step] = value
    # The median: the interval after an evaluation also counts the evaluation's time.
    rate = statistics.median(rates) if rates else None
    return RunData(run, variant, seed, _whole(train, "steps", run / "recipe.resolved.toml",
                                              warnings),
                   series, losses, rate, last, recipe, start, max(times) if times else None, peak)


def _experiment_order(paths, warnings: Warnings) -> tuple[list[str], str | None]:
    """Variant order and baseline from a sweep's experiment.json among the arguments."""
    for arg in map(Path, paths):
        info = arg / "experiment.json"
        if not info.exists():
            continue
        text = _read(info, warnings, "variants in folder order")
        data = None if text is None else _json(text)
        variants = data.get("variants", []) if isinstance(data, dict) else None
        baseline = data.get("baseline") if isinstance(data, dict) else None
        if isinstance(variants, list) and all(isinstance(v, str) for v in variants) \
                and isinstance(baseline, (str, type(None))):
            return variants, baseline
        if text is not None:
            warnings.add(f"{info}: expected {{\"variants\": [names], \"baseline\": name}}; "
                         "ignored (variants in folder order)")
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


def different_data(variants: dict[str, list[RunData]]) -> list[str]:
    """Seeds whose variants saw different first batches or first latents (by their hashes)."""
    out = []
    for key, what in (("data_hash", "first real batches"), ("latent_hash", "first latents")):
        by_seed: dict[int, dict[str, list[str]]] = {}
        for variant, runs in variants.items():
            for r in runs:
                if key in r.start:
                    by_seed.setdefault(r.seed, {}).setdefault(r.start[key], []).append(variant)
        for seed, hashes in sorted(by_seed.items()):
            if len(hashes) > 1:
                seen = "; ".join(f"{', '.join(vs)}: {h}" for h, vs in hashes.items())
                out.append(f"seed {seed}: the variants saw different {what} ({key} {seen}), so "
                           "their differences are not only the variants' own")
    return out


# -- the numbers ------------------------------------------------------------------------------
def direction(name: str, runs: list[RunData]) -> bool | None:
    """True when higher is better, from the metric component that logged ``name``; None unknown."""
    from memcore.registry import get_registry
    bare = name.split("@")[0].removeprefix("eval/").split("[")[0]
    for run in runs:
        for entry in _records(run.dir, Warnings(), "metrics.jsonl"):
            values, metric = entry.get("values"), entry.get("metric")
            if isinstance(values, dict) and bare in values and isinstance(metric, str):
                try:
                    cls = get_registry().get("metric", metric).load_factory()
                except MemcoreError:
                    return None
                return bool(getattr(cls, "higher_is_better", False))
    return None


def _summary_of(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    return summary(values) if values else None


def costs(runs: list[RunData]) -> dict:
    """Per variant: network sizes (each distinct value), wall-clock per run, peak memory, img/s."""
    return {"params_G": sorted({r.start["params/G"] for r in runs if "params/G" in r.start}),
            "params_D": sorted({r.start["params/D"] for r in runs if "params/D" in r.start}),
            "wall_clock_s": _summary_of([r.wall_clock for r in runs]),
            "peak_rss_mb": _summary_of([r.peak.get("peak_rss_mb") for r in runs]),
            "peak_gpu_mb": _summary_of([r.peak.get("peak_gpu_mb") for r in runs]),
            "img_per_s": _summary_of([r.img_per_s for r in runs])}


def _final(run: RunData, name: str) -> float:
    return run.series[name][max(run.series[name])]


def versus(runs: list[RunData], base: list[RunData], name: str) -> dict:
    """The test of a variant against the baseline: paired by seed when they share 2+ seeds (and
    no seed twice in either), else Welch's."""
    by_seed = {r.seed: _final(r, name) for r in runs}
    base_by_seed = {r.seed: _final(r, name) for r in base}
    test = None
    if len(by_seed) == len(runs) and len(base_by_seed) == len(base):
        test = paired(by_seed, base_by_seed)
    if test is not None:
        return {"paired": test, "vs_baseline": verdict(test, "paired t"),
                "seeds_needed": test["seeds_needed"]}
    test = welch([_final(r, name) for r in runs], [_final(r, name) for r in base])
    return {"welch": test, "vs_baseline": verdict(test, "Welch"),
            "seeds_needed": test["seeds_needed"] if test else None}


def metric_rows(name: str, variants: dict[str, list[RunData]], baseline: str) -> list[dict]:
    higher = direction(name, [r for rs in variants.values() for r in rs])
    pick = max if higher else min
    base = [r for r in variants.get(baseline, []) if name in r.series]
    rows = []
    for variant, runs in variants.items():
        having = [r for r in runs if name in r.series]
        if not having:
            continue
        finals = [_final(r, name) for r in having]
        row = {"variant": variant, "seeds": [r.seed for r in having],
               "steps": [max(r.series[name]) for r in having],
               "final": summary(finals), "final_values": finals}
        if higher is not None:
            bests = [pick(r.series[name].items(), key=lambda kv: kv[1]) for r in having]
            row["best"] = summary([v for _, v in bests])
            row["best_step"] = [s for s, _ in bests]
        if variant == baseline:
            row["vs_baseline"] = "baseline"
        elif base:
            row.update(versus(having, base, name))
        else:
            row["vs_baseline"] = "n/a (no baseline values)"
        rows.append(row)
    return rows


def build_report(paths, metrics=None, baseline=None, warnings: Warnings | None = None) -> dict:
    warnings = Warnings() if warnings is None else warnings
    order, exp_baseline = _experiment_order(paths, warnings)
    runs = [read_run(run, label, warnings) for run, label in find_runs(paths)]
    variants = group(runs, order)
    if baseline is None and exp_baseline is not None and exp_baseline not in variants:
        warnings.add(f"experiment.json: baseline {exp_baseline!r} is not among these runs; "
                     f"the baseline is {next(iter(variants))!r}")
        exp_baseline = None
    baseline = baseline or exp_baseline or next(iter(variants))
    if baseline not in variants:
        from memcore.registry import did_you_mean
        raise MemcoreError(f"--baseline {baseline}: no such variant{did_you_mean(baseline, variants)}"
                           f" (variants: {', '.join(variants)})")
    names = sorted({k for r in runs for k in r.series})
    if metrics:
        chosen = [n for n in names if n in metrics or n.split("@")[0] in metrics]
        if not chosen:
            from memcore.registry import did_you_mean
            raise MemcoreError(f"--metric {', '.join(metrics)}: no run logged it"
                               f"{did_you_mean(metrics[0], names)} (logged: "
                               f"{', '.join(names) or 'no metrics'})")
        names = chosen
    return {"baseline": baseline, "test": TEST, "alpha": ALPHA, "power": POWER,
            "interval": "95% over seeds, Student's t with n-1 degrees of freedom",
            "variants": {v: [{"dir": str(r.dir), "seed": r.seed, "step": r.last_step,
                              "steps": r.steps} for r in rs] for v, rs in variants.items()},
            "mixed_recipes": {v: keys for v, rs in variants.items() if (keys := mixed_recipes(rs))},
            "different_data": different_data(variants),
            "cost": {v: costs(rs) for v, rs in variants.items()},
            "metrics": {name: metric_rows(name, variants, baseline) for name in names},
            "warnings": warnings,
            "_runs": variants}


# -- Markdown ---------------------------------------------------------------------------------
def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _mean_std(s: dict | None, unit: str = "") -> str:
    if s is None:
        return "—"
    return _num(s["mean"]) + (f" ± {s['std']:.2g}" if s["std"] is not None else "") + unit


def _interval(ci: list | None) -> str:
    return "—" if ci is None else f"[{_num(ci[0])}, {_num(ci[1])}]"


def _span(values: list[int]) -> str:
    if not values:
        return "—"
    return str(values[0]) if min(values) == max(values) else f"{min(values)}–{max(values)}"


def _params(values: list[int]) -> str:
    """Millions of parameters; the smallest and largest when the runs differ."""
    ends = values[:1] if len(values) == 1 else values[::len(values) - 1]
    return "–".join(f"{v / 1e6:.3g}M" for v in ends) or "—"


def _memory(cost: dict) -> str:
    parts = [f"{_mean_std(cost[key], ' MB')} {label}" for key, label in
             (("peak_rss_mb", "RSS"), ("peak_gpu_mb", "GPU")) if cost[key] is not None]
    return "; ".join(parts) or "—"


def _difference(row: dict) -> str:
    test = row.get("paired") or row.get("welch")
    if not test:
        return "—"
    return f"{test['mean_diff']:+.4g} {_interval(test['ci95'])}"


def _needed(row: dict) -> str:
    if "seeds_needed" not in row or not row["vs_baseline"].startswith("indistinguishable"):
        return "—"
    if row["seeds_needed"] is None:
        test = row.get("paired") or row["welch"]
        return "— (no difference)" if test["mean_diff"] == 0 else f"> {MOST_SEEDS:,}"
    return str(row["seeds_needed"]) + (" pairs" if "paired" in row else " each")


def markdown(report: dict, figures: list[Path]) -> str:
    base = report["baseline"]
    lines = [f"# Comparison of {len(report['variants'])} variant(s)", "",
             f"Intervals: {report['interval']}. *vs {base}*: {report['test']}, "
             f"alpha = {report['alpha']}; \"indistinguishable\" means the difference is within "
             "seed noise at this number of seeds. *Δ*: mean difference from the baseline (paired "
             "by seed where possible) and its 95% interval. *Seeds for 80% power*: of an "
             "indistinguishable row, the seeds at which a true difference of the observed size "
             "would be found 4 times in 5.", ""]
    for variant, keys in report["mixed_recipes"].items():
        lines += [f"**Warning:** the runs of {variant} differ in {', '.join(keys[:8])}: they are "
                  "not seeds of one recipe.", ""]
    for text in report["different_data"]:
        lines += [f"**Warning:** {text}.", ""]
    lines += ["| variant | runs | step | G params | D params | wall-clock per run (s) "
              "| peak memory | img/s (median of each run's log lines) |",
              "|---|---|---|---|---|---|---|---|"]
    for variant, runs in report["variants"].items():
        cost = report["cost"][variant]
        lines.append(f"| {variant} | {len(runs)} | {_span([r['step'] for r in runs])} | "
                     f"{_params(cost['params_G'])} | {_params(cost['params_D'])} | "
                     f"{_mean_std(cost['wall_clock_s'])} | {_memory(cost)} | "
                     f"{_mean_std(cost['img_per_s'])} |")
    lines.append("")
    for name, rows in report["metrics"].items():
        lines += [f"## {name}", "",
                  "| variant | seeds | step | final (mean ± std) | final 95% CI | best | best 95% CI "
                  f"| step of best | Δ vs {base} [95% CI] | vs {base} | seeds for 80% power |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            lines.append("| " + " | ".join([
                row["variant"], str(len(row["seeds"])), _span(row["steps"]),
                _mean_std(row["final"]), _interval(row["final"]["ci95"]),
                _mean_std(row.get("best")), _interval((row.get("best") or {}).get("ci95")),
                _span(row["best_step"]) if "best_step" in row else "—",
                _difference(row), row["vs_baseline"], _needed(row)]) + " |")
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
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:100]    # a file name has at most 255 bytes


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
    samples = sample_figure(plt, variants, stem.with_name(f"{stem.name}-samples.png"),
                            report["warnings"])
    return written + ([samples] if samples else [])


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        with safewrite.replacing(path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)
    return path


def _grids(run: RunData) -> dict[int, Path]:
    return {int(m.group(1)): p for p in (run.dir / "samples").glob("step-*.png")
            if (m := re.search(r"step-(\d+)\.png$", p.name))}


def sample_figure(plt, variants: dict[str, list[RunData]], path: Path,
                  warnings: Warnings) -> Path | None:
    """The sample grid of every variant at one seed they share, at the last step all have."""
    from PIL import Image
    seeds = set.intersection(*[{r.seed for r in rs} for rs in variants.values()])
    if not seeds:
        return None
    seed = min(seeds)
    grids = {v: _grids(next(r for r in rs if r.seed == seed)) for v, rs in variants.items()}
    common = set.intersection(*[set(g) for g in grids.values()])
    if not common:
        return None
    step = max(common)
    images = {}
    for variant, found in grids.items():
        try:
            with Image.open(found[step]) as im:
                images[variant] = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            warnings.add(f"{found[step]}: not a readable image ({exc}); no sample figure")
            return None
    fig, axes = plt.subplots(1, len(images), figsize=(2.8 * len(images), 3.1), squeeze=False)
    for ax, (variant, image) in zip(axes[0], images.items()):
        ax.imshow(image)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(variant, fontsize=9)
    fig.suptitle(f"samples at step {step}, seed {seed} (same latents in every variant)", fontsize=9)
    return _save(plt, fig, path)


# -- the command ------------------------------------------------------------------------------
def check_out(out: str | None, as_json: bool) -> Path | None:
    """``--out``, checked before anything is read or written."""
    if out is None:
        return None
    path = safewrite.check_output(Path(out), "--out")  # a folder, under a file, read-only
    holds_json = OUT_FORMATS.get(path.suffix.lower())
    if holds_json is None:
        raise MemcoreError(f"--out {out}: unknown extension {path.suffix or '(none)'!r}; expected "
                           ".md (the Markdown report) or .json (with --json)")
    if holds_json != as_json:
        raise MemcoreError(f"--out {out}: a {path.suffix} file " + (
            "holds the --json report; add --json or name a .md file" if holds_json else
            "holds the Markdown report; drop --json or name a .json file"))
    return path


def compare(paths, metric=None, out=None, as_json=False, baseline=None, smooth=10) -> int:
    if smooth < 1:
        raise MemcoreError(f"--smooth {smooth}: expected a number >= 1")
    out = check_out(out, as_json)
    report = build_report(paths, metric, baseline)
    written, made = [], out is not None and not out.parent.exists()
    try:
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            written = figures(report, out.with_suffix(""), smooth)
        public = {k: v for k, v in report.items() if not k.startswith("_")}
        public["figures"] = [str(p) for p in written]
        text = json.dumps(public, indent=2) if as_json else markdown(report, written)
        if out:
            safewrite.write_text(out, text + "\n")
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if made:
            with contextlib.suppress(OSError):
                out.parent.rmdir()
        raise MemcoreError(f"--out {out}: cannot write {exc.filename or out}: "
                           f"{exc.strerror or exc}") from None
    for warning in report["warnings"] + report["different_data"]:
        print(f"warning: {warning}", file=sys.stderr)
    if out:
        print(f"-> {out}" + (f" and {len(written)} figure(s)" if written else ""))
    else:
        print(text)
    return 0
