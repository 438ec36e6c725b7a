"""``memcore sweep EXPERIMENT.toml``: every variant x seed of an experiment as an ordinary run.

An experiment file names a base recipe, the seeds and the variants (each a recipe file or a table
of overrides with the key paths of ``--set``). Everything is resolved and validated before
anything runs; then each run is a child process ``memcore run`` writing
``<root>/<experiment>/<variant>/seed-<s>/``. A run is finished when the sweep has recorded its
success (``sweep-done.json``); an interrupted one is continued with ``memcore run --resume``, so
running the command again after a kill continues where it stopped.

Children get ``cores // (jobs x nproc)`` OpenMP threads each: oversubscribed OpenMP threads made
a run on this project's 2-core machine 40x slower, so the total never exceeds the cores.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import attrs
import tomli

from memcore import safewrite, trust
from memcore.config import config, option, positive, structure
from memcore.errors import MemcoreError, RecipeError
from memcore.recipe import dumps, key_path, read_toml, read_toml_text, recipe_from_dict, set_key
from memcore.registry import did_you_mean

DONE = "sweep-done.json"       # written by the sweep when every command of a run has succeeded
MAX_RUNS = 10_000              # variants x seeds of one experiment: a week of runs at a minute each
LOG = "sweep.log"              # the child processes' stdout and stderr
EXPERIMENT_INFO = "experiment.json"   # variant order and baseline, read by `memcore compare`
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _name_check(name):
    if name is None:
        return None
    return safewrite.name_problem(name) or (None if _NAME.match(name) else
        "a folder name: letters, digits, '.', '_' or '-', not starting with '.', '_' or '-'")


@config
class VariantSpec:
    name: str = option(help="Folder of the variant's runs and its label in `memcore compare`.",
                       check=_name_check)
    recipe: Optional[str] = option(None, help="This variant's recipe (relative to the experiment "
                                   "file); default: the experiment's base.")
    overrides: dict = option(factory=dict, help="Keys to change, as for --set: "
                             "\"generator.blocks\" = [] or generator.width = 32; tables merge key "
                             "by key like extends, other values replace.")
    after: list[str] = option(factory=list, help="memcore commands run on this variant's "
                              "trained runs, after the experiment's own.")


@config
class Experiment:
    name: Optional[str] = option(None, help="Default: the experiment file's stem.",
                                 check=_name_check)
    root: str = option("runs", help="Runs go to <root>/<name>/<variant>/seed-<s>/ (relative to "
                       "the current folder, as run.root).")
    base: Optional[str] = option(None, help="Recipe every variant starts from (relative to the "
                                 "experiment file).")
    seeds: list[int] = option(factory=lambda: [0], help="train.seed of the runs of each variant.")
    steps: Optional[int] = option(None, help="train.steps of every run.", check=positive)
    overrides: dict = option(factory=dict, help="Keys changed in every variant before its own "
                             "overrides (e.g. metrics, train.checkpoint_every).")
    baseline: Optional[str] = option(None, help="Variant the others are compared with; default: "
                                     "the first.")
    after: list[str] = option(factory=list, help="memcore commands run on each trained run, "
                              "{run} standing for its folder, e.g. \"eval {run} --metrics fid\".")
    grid: dict = option(factory=dict, help="Key paths (as in overrides) to lists of values: "
                        "every combination is a variant, over each [[variants]] table (over the "
                        "base recipe without them), named from its values: \"train.lr\" = "
                        "[1e-4, 2e-4] gives lr-0.0001 and lr-0.0002 (wide_lr-0.0001 over a "
                        "variant wide).")
    variants: list[VariantSpec] = option(factory=list, help="[[variants]] tables; at least one "
                                         "unless there is a [grid].")


@attrs.frozen(kw_only=True)
class GridVariant(VariantSpec):
    """A variant made by ``[grid]``: its values, set after the variant's own overrides."""
    grid: dict = attrs.field(factory=dict)      # key path (tuple) -> value


@attrs.define
class PlannedRun:
    variant: str
    seed: int
    dir: Path
    resolved: dict             # the recipe this run trains, run.dir and train.seed included
    steps: int
    after: list[str]
    action: str = ""           # "finished", "start", "resume", "extend", "after"
    at_step: int = 0           # the step of its latest checkpoint

    @property
    def label(self) -> str:
        return f"{self.variant}/seed-{self.seed}"


# -- reading the experiment -------------------------------------------------------------------
def override_pairs(table: dict, prefix: list | None = None) -> list[tuple[list, object]]:
    """An overrides table as (key path, value) pairs: ``"a.b" = 1`` and ``a = {b = 1}`` alike."""
    pairs = []
    for key, value in table.items():
        path = (prefix or []) + key_path(key)
        if isinstance(value, dict):
            pairs += override_pairs(value, path)
        else:
            pairs.append((path, value))
    return pairs


def _tables_first(raw: dict) -> list[str]:
    """``overrides`` that is not a table (cattrs cannot say so by key path); fixed up in ``raw``."""
    problems = []
    if "grid" in raw and not isinstance(raw["grid"], dict):
        problems.append("grid: expected a table of key paths to lists of values, e.g. [grid] "
                        "\"train.lr\" = [0.0001, 0.0002]")
        raw["grid"] = {}
    spots = [("overrides", raw)] + [(f"variants[{i}].overrides", v) for i, v in
                                     enumerate(raw.get("variants", [])
                                               if isinstance(raw.get("variants"), list) else [])
                                     if isinstance(v, dict)]
    for where, table in spots:
        if "overrides" in table and not isinstance(table["overrides"], dict):
            problems.append(f"{where}: expected a table of key paths, e.g. "
                            f"{where} = {{ \"train.steps\" = 100 }}")
            table["overrides"] = {}
    return problems


MAX_GRID = 10_000    # variants a grid may make: each is trained at every seed
_SWEEP_SETS = ("train.seed", "train.progress", "run.dir")     # resolve_variant sets them


def _dotted(key) -> str:
    return ".".join(map(str, key))


def _value_name(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9.]+", "-", text)


def expand_grid(exp: Experiment) -> tuple[Experiment, list[str]]:
    """``[grid]``'s combinations as variants: over each listed variant, or over the base recipe
    when none is listed; each is named from its values (the key's last part, unless two keys
    share it)."""
    pairs = override_pairs(exp.grid)
    problems = [f"grid.\"{_dotted(key)}\" = {json.dumps(value)[:60]}: expected a non-empty list "
                "of values, one per variant, e.g. \"train.lr\" = [0.0001, 0.0002]"
                for key, value in pairs if not isinstance(value, list) or not value]
    fixed = _SWEEP_SETS + (("train.steps",) if exp.steps is not None else ())
    problems += [f"grid.\"{_dotted(key)}\": set by the sweep for every run (from the experiment's "
                 "seeds, steps and root)" for key, _ in pairs if _dotted(key) in fixed]
    if problems or not pairs:
        return exp, problems
    count = math.prod(len(values) for _, values in pairs) * max(1, len(exp.variants))
    if count > MAX_GRID:
        return exp, [f"grid: {count} variants; expected at most {MAX_GRID} (each is trained at "
                     "every seed)"]
    lasts = [str(key[-1]) for key, _ in pairs]
    labels = [last if lasts.count(last) == 1 else _dotted(key)
              for last, (key, _) in zip(lasts, pairs)]
    variants = []
    for v in exp.variants or [None]:
        for combo in itertools.product(*(values for _, values in pairs)):
            name = "_".join(f"{label}-{_value_name(value)}" for label, value in zip(labels, combo))
            variants.append(GridVariant(
                name=f"{v.name}_{name}" if v else name, recipe=v.recipe if v else None,
                overrides=v.overrides if v else {}, after=v.after if v else [],
                grid={tuple(key): value for (key, _), value in zip(pairs, combo)}))
    problems = list(dict.fromkeys(f"grid: the variant name {v.name!r} it makes: expected "
                                  f"{_name_check(v.name)}" for v in variants if _name_check(v.name)))
    return attrs.evolve(exp, variants=variants), problems


def load_experiment(path: Path) -> Experiment:
    if not trust.knows_command_line():  # called as a library, not by `memcore sweep`
        from memcore.cli import build_parser
        build_parser()  # tells memcore.trust what the after commands are checked against
    try:
        raw = tomli.loads(read_toml_text(Path(path)))
    except FileNotFoundError:
        raise RecipeError([f"file not found: {path}"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([f"cannot read the file: {exc}"], str(path)) from None
    except (ValueError, RecursionError) as exc:  # also Python's limits: 4300 digits, nesting
        raise RecipeError([f"not valid TOML: {exc}"], str(path)) from None
    too_many = _too_many_runs(raw)
    if too_many:  # before 10^6 tables are structured and resolved one by one
        raise RecipeError([too_many], str(path))
    problems = _tables_first(raw)
    try:
        exp = structure(raw, Experiment, str(path))
    except RecipeError as exc:
        raise RecipeError(problems + exc.problems, str(path)) from None
    exp, found = expand_grid(exp)
    problems += found
    names = [v.name for v in exp.variants]
    if not exp.seeds:
        problems.append("seeds = []: expected at least one seed, e.g. seeds = [0, 1, 2]")
    twice = sorted(s for s, n in Counter(exp.seeds).items() if n > 1)
    if twice:
        problems.append(f"seeds = {exp.seeds}: expected distinct seeds "
                        f"({', '.join(map(str, twice))} more than once)")
    if not names and "grid" not in raw:
        problems.append("variants: at least one [[variants]] table with a name (or a [grid]) is "
                        "needed")
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.append(f"variants[{i}].name = {name!r}: another variant has this name")
        seen.add(name)
    if exp.baseline is not None and exp.baseline not in names:
        problems.append(f"baseline = {exp.baseline!r}: no such variant"
                        f"{did_you_mean(exp.baseline, names)} (variants: {', '.join(names)})")
    for i, v in enumerate(exp.variants):
        if v.recipe is None and exp.base is None:
            problems.append(f"variants[{i}] ({v.name}): no recipe: give it recipe = \"...\" or "
                            "the experiment a base = \"...\"")
    commands = [(f"after[{i}]", c) for i, c in enumerate(exp.after)]
    commands += [(f"variants[{i}].after[{j}]", c) for i, v in enumerate(exp.variants)
                 for j, c in enumerate(v.after)]
    for where, command in commands:
        problems += trust.after_problems(where, command)
    problems += _stem_problems(exp, path)
    if problems:
        raise RecipeError(problems, str(path))
    return exp


def _stem_problems(exp: Experiment, path: Path) -> list[str]:
    """Without ``name``, the file's stem names the experiment's folder: it must be one too
    (a file ``...toml`` would otherwise train into ``<root>/..``)."""
    problem = None if exp.name is not None else _name_check(Path(path).stem)
    return [f"name (not given, so the file stem {Path(path).stem!r}): expected {problem}; "
            "give the experiment a name = \"...\""] if problem else []


def _too_many_runs(raw: dict) -> str | None:
    lengths = [len(raw[key]) if isinstance(raw.get(key), list) else 1
               for key in ("variants", "seeds")]
    if lengths[0] * lengths[1] <= MAX_RUNS:
        return None
    return (f"{lengths[0]:,} variants x {lengths[1]:,} seeds = {lengths[0] * lengths[1]:,} runs: "
            f"expected at most {MAX_RUNS:,} in one experiment (split it into several)")


def experiment_name(exp: Experiment, path: Path) -> str:
    return exp.name or Path(path).stem


def resolve_variant(exp: Experiment, index: int, path: Path, seed: int, run_dir: Path,
                    check: str | None = None) -> tuple[dict | None, list[str]]:
    """The resolved recipe of one variant at one seed, or the problems, each naming the variant.

    ``check``: also run ``memcore validate``'s checks (dataset, networks, metrics), "full" or
    "portable" (nothing of this machine looked at), as ``preflight`` does them.
    """
    from memcore.preflight import checked_recipe
    v = exp.variants[index]
    where = f"variants[{index}] ({v.name})"
    recipe_path = Path(path).parent / (v.recipe or exp.base)
    try:
        raw = read_toml(recipe_path)
    except RecipeError as exc:
        key = "recipe" if v.recipe else "base"
        return None, [f"{where}: {key} = {str(recipe_path)!r}: {p}" for p in exc.problems]
    grid = getattr(v, "grid", {})
    problems = []
    for where_key, key, value in (
            [(f"overrides.{_dotted(k)}", k, x) for k, x in override_pairs(exp.overrides)]
            + [(f"{where}.overrides.{_dotted(k)}", k, x) for k, x in override_pairs(v.overrides)]
            + [(f"grid.\"{_dotted(k)}\"", list(k), x) for k, x in grid.items()]):
        problem = set_key(raw, key, value)
        if problem:
            problems.append(f"{where_key}: {problem}")
    fixed = [(["train", "seed"], seed), (["run", "dir"], str(run_dir)),
             (["train", "progress"], False)]  # a child's progress bar would only fill its log
    if exp.steps is not None:
        fixed.append((["train", "steps"], exp.steps))
    for key, value in fixed:
        problem = set_key(raw, key, value)
        if problem:
            problems.append(f"{where}: {'.'.join(key)}: {problem}")
    if problems:
        return None, problems
    try:
        if check:
            _, resolved, _ = checked_recipe(lambda: recipe_from_dict(raw, str(recipe_path)),
                                            str(recipe_path), portable=check == "portable")
        else:
            resolved = recipe_from_dict(raw, str(recipe_path))[1]
    except RecipeError as exc:
        return None, [_blame(p, where, grid) for p in exc.problems]
    return resolved, []


def _blame(problem: str, where: str, grid: dict) -> str:
    """A recipe problem at a key the grid set is the grid's: named by the grid's key path, and
    once for all the variants it makes (the problem names the value)."""
    for key in grid:
        dotted = _dotted(key)
        if problem.startswith((f"{dotted}:", f"{dotted} =", f"{dotted}.")):
            return f"grid.\"{dotted}\": {problem}"
    return f"{where}: {problem}"


def plan(path: Path, portable: bool = False) -> tuple[Experiment, Path, list[PlannedRun]]:
    """Every run of the experiment, validated, with what the sweep has to do for it.

    The data and networks are checked once per variant (the seed changes neither);
    ``portable``: without looking at this machine's files (an experiment for another one).
    """
    exp = load_experiment(path)
    root = Path(exp.root) / experiment_name(exp, path)
    runs, problems = [], []
    unwritable = safewrite.place_problem(root)
    if unwritable:
        problems.append(f"root = {exp.root!r}: runs cannot be written to {root}: {unwritable}")
    for i, v in enumerate(exp.variants):
        for seed in exp.seeds:
            run_dir = root / v.name / f"seed-{seed}"
            check = ("portable" if portable else "full") if seed == exp.seeds[0] else None
            resolved, found = resolve_variant(exp, i, path, seed, run_dir, check)
            # Seeds rarely make a recipe invalid: say each variant's problems once.
            problems += [p for p in found if p not in problems]
            if resolved is not None:
                runs.append(PlannedRun(v.name, seed, run_dir, resolved,
                                       resolved["train"]["steps"], exp.after + v.after))
    if problems:
        raise RecipeError(problems, str(path))
    problems = [p for run in runs for c in run.after for p in trust.after_outside(c, run.dir)]
    # assess() resolves a folder's recipe: only once its plugin files are the experiment's
    problems += [p for run in runs if (p := other_plugin_files(run) or assess(run))]
    if problems:
        raise RecipeError(problems, str(path))
    return exp, root, runs


# -- the state of a run on disk ---------------------------------------------------------------
def _latest_step(run_dir: Path) -> int:
    from memcore.checkpoint import checkpoints
    found = checkpoints(run_dir)
    return int(re.search(r"(\d+)", found[-1].name).group(1)) if found else 0


def _differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [path]


def other_plugin_files(run: PlannedRun) -> str | None:
    """A run folder whose recipe names other plugin files than the experiment's, found before
    that recipe is resolved: even with --trust-local-plugins, the sweep imports only the files
    its experiment names, never those a folder brought (docs/trust.md)."""
    saved = run.dir / "recipe.resolved.toml"
    try:
        plugins = tomli.loads(saved.read_text()).get("plugins", {})
    except (OSError, ValueError):  # no recipe yet, or unreadable: assess() says so
        return None
    have = plugins.get("local", []) if isinstance(plugins, dict) else []
    if have != run.resolved["plugins"]["local"]:
        return (f"{run.dir} was trained with other plugin files (plugins.local = {have!r} in "
                f"{saved}): remove the folder, or give the experiment another name")
    return None


def assess(run: PlannedRun) -> str | None:
    """Set ``run.action`` from what is on disk; a problem when the folder holds another recipe."""
    run.at_step = _latest_step(run.dir)
    saved = run.dir / "recipe.resolved.toml"
    if not saved.exists():
        run.action = "start"
        return None
    wanted = tomli.loads(dumps(run.resolved))
    try:  # resolved again: options a newer memcore added take their defaults on both sides
        have = tomli.loads(dumps(recipe_from_dict(tomli.loads(saved.read_text()), str(saved))[1]))
    except (RecipeError, OSError, ValueError, RecursionError) as exc:  # not UTF-8, not TOML, ...
        return f"{saved}: cannot be read as a recipe ({exc}): remove {run.dir} to start it again"
    changed = [k for k in _differences(have, wanted) if k != "train.steps"]
    if changed:
        return (f"{run.dir} was trained from another recipe ({', '.join(changed[:6])} differ): "
                "remove the folder, or give the experiment another name")
    if run.at_step > run.steps:
        return (f"{run.dir} is already at step {run.at_step}, beyond steps = {run.steps}: "
                "remove the folder, or raise the steps")
    done = _read_done(run.dir / DONE)
    if done and done.get("steps") == run.steps and run.at_step == run.steps:
        run.action = "finished" if set(run.after) <= set(done.get("after", [])) else "after"
    else:
        run.action = "extend" if have["train"]["steps"] != run.steps else "resume"
    return None


def _read_done(path: Path) -> dict | None:
    """The run's ``sweep-done.json``; a damaged one counts as absent, with a warning: the run
    is then resumed (at its last step it only runs its ``after`` commands again)."""
    if not path.exists():
        return None
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        done = exc
    if isinstance(done, dict):
        return done
    problem = done if isinstance(done, Exception) else f"a {type(done).__name__}, not an object"
    print(f"warning: {path}: unreadable ({problem}): the run counts as not finished",
          file=sys.stderr)
    return None


# -- child processes --------------------------------------------------------------------------
def thread_plan(cores: int, jobs: int, nproc: int) -> int:
    """OpenMP threads per process, so that jobs x nproc x threads <= cores."""
    processes = jobs * max(nproc, 1)
    if processes > cores:
        raise MemcoreError(f"--jobs {jobs} x --nproc {max(nproc, 1)} = {processes} processes on "
                           f"{cores} cores: each needs a core of its own (set --cores if this "
                           "machine has more)")
    return cores // processes


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def _gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # no usable CUDA: CPU runs
        return 0


def child_env(threads: int, slot: int, nproc: int, gpus: int, plugins_dir: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED="1")
    if gpus:  # each slot its own devices (round robin when there are fewer than processes)
        per = max(nproc, 1)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str((slot * per + i) % gpus) for i in range(per))
    if plugins_dir:
        env["MEMCORE_PLUGINS_DIR"] = str(Path(plugins_dir).resolve())
    return env


def commands_of(run: PlannedRun, nproc: int) -> list[list[str]]:
    """The memcore command lines this run still needs."""
    launch = ["--nproc", str(nproc)] if nproc > 1 else []
    consent = trust.forwarded_flags()   # to the training only, never to the after commands
    train = []
    if run.action == "start":
        train = [["run", str(run.dir / "recipe.sweep.toml"), *launch, *consent]]
    elif run.action in ("resume", "extend"):
        train = [["run", "--resume", str(run.dir), "--set", f"train.steps={run.steps}", *launch,
                  *consent]]
    after = [shlex.split(c.replace("{run}", shlex.quote(str(run.dir)))) for c in run.after]
    return train + after


def _die_with_parent():
    """In the child: get SIGTERM (save a checkpoint, stop) if the sweep itself is killed."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: children outlive a killed sweep
        pass


class Job:
    """One run's remaining commands, executed one after the other in one slot."""

    def __init__(self, run: PlannedRun, commands: list[list[str]], env: dict, slot: int):
        self.run, self.commands, self.env, self.slot = run, commands, env, slot
        self.proc: subprocess.Popen | None = None
        self.started = time.monotonic()
        self.start_step = run.at_step
        self.failed: str | None = None
        safewrite.folder(run.dir, inside=sweep_root(run))
        if run.action == "start":
            safewrite.write_text(run.dir / "recipe.sweep.toml", dumps(run.resolved))
        self._next()

    def _next(self) -> None:
        argv = [sys.executable, "-m", "memcore", *self.commands.pop(0)]
        with safewrite.open_append(self.run.dir / LOG) as log:
            log.write(f"\n$ {shlex.join(argv[1:])}\n")
            log.flush()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True, preexec_fn=_die_with_parent)

    def poll(self) -> bool:
        """True once every command has ended (``failed`` says whether one failed)."""
        code = self.proc.poll()
        if code is None:
            return False
        if code != 0:
            self.failed = f"exit {code}: {shlex.join(self.proc.args[1:])}"
            return True
        if self.commands:
            self._next()
            return False
        safewrite.write_text(self.run.dir / DONE, json.dumps({"steps": self.run.steps,
                                                              "after": self.run.after}))
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # the trainer saves a checkpoint and stops


# -- progress ---------------------------------------------------------------------------------
def current_step(run_dir: Path) -> int:
    """The last step in the run's log (read from the end: logs grow long)."""
    path = run_dir / "log.jsonl"
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        fh.seek(max(0, fh.seek(0, 2) - 8192))
        lines = fh.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """One line per run when it starts, ends, and every ``every`` seconds; an overall ETA."""

    def __init__(self, runs: list[PlannedRun], every: float):
        self.total = len(runs)
        self.every = every
        self.began = time.monotonic()
        self.last = self.began
        self.remaining = {r.label: r.steps - r.at_step for r in runs if r.action != "finished"}
        self.trained = 0       # steps trained by this sweep, over finished jobs
        self.index = {r.label: i + 1 for i, r in enumerate(runs)}

    def eta(self, jobs) -> str:
        live = {j.run.label: max(0, current_step(j.run.dir) - j.start_step) for j in jobs}
        done = self.trained + sum(live.values())
        left = sum(self.remaining.values()) - sum(live.values())
        elapsed = time.monotonic() - self.began
        if done == 0:
            return "ETA unknown"
        return f"ETA {duration(left * elapsed / done)}" if left > 0 else "ETA ~0"

    def say(self, run: PlannedRun, text: str, jobs=()) -> None:
        print(f"[{self.index[run.label]:>{len(str(self.total))}}/{self.total}] {run.label:<24} "
              f"{text}" + (f" · overall {self.eta(jobs)}" if jobs is not None else ""), flush=True)

    def finished(self, job: Job) -> None:
        self.trained += job.run.steps - job.start_step
        self.remaining.pop(job.run.label, None)

    def tick(self, jobs) -> None:
        if time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        for job in jobs:
            step = current_step(job.run.dir)
            rate = (step - job.start_step) / max(time.monotonic() - job.started, 1e-9)
            self.say(job.run, f"step {step}/{job.run.steps} · {rate:.2f} steps/s", None)
        print(f"sweep: {self.eta(jobs)}", flush=True)


# -- the command ------------------------------------------------------------------------------
def describe(run: PlannedRun) -> str:
    return {"finished": "finished", "start": f"start ({run.steps} steps)",
            "resume": f"resume from step {run.at_step} to {run.steps}",
            "extend": f"extend from step {run.at_step} to {run.steps}",
            "after": "trained; run the after commands"}[run.action]


def sweep_root(run: PlannedRun) -> Path:
    """The ``root`` the user named, above ``<name>/<variant>/seed-<s>``: the links from it down
    are not followed (:mod:`memcore.safewrite`)."""
    return run.dir.parents[2]


def check_links(runs: list[PlannedRun]) -> None:
    """Refuse, before any run starts, a folder or log of the sweep that is a planted link."""
    for run in runs:
        safewrite.check_folder(run.dir, inside=sweep_root(run))
        safewrite.check_not_link(run.dir / LOG)


def write_experiment_info(exp: Experiment, root: Path, path: Path) -> None:
    names = [v.name for v in exp.variants]
    info = {"experiment": str(Path(path).resolve()), "variants": names,
            "baseline": exp.baseline or names[0], "seeds": exp.seeds}
    safewrite.write_text(root / EXPERIMENT_INFO, json.dumps(info, indent=2), inside=root.parent)


def sweep(path: Path, jobs: int = 1, nproc: int = 0, cores: int | None = None,
          dry_run: bool = False, portable: bool = False, status_every: float = 60.0,
          plugins_dir: str | None = None) -> int:
    if portable and not dry_run:
        raise MemcoreError("--portable checks an experiment meant for another machine: use it "
                           "with --dry-run")
    exp, root, runs = plan(Path(path), portable)
    if jobs < 1:
        raise MemcoreError(f"--jobs {jobs}: expected a number >= 1")
    cores = cores or available_cores()
    threads = thread_plan(cores, jobs, nproc)
    todo = [r for r in runs if r.action != "finished"]
    counts = {a: sum(r.action == a for r in runs) for a in ("finished", "start", "resume",
                                                             "extend", "after")}
    print(f"sweep {experiment_name(exp, path)}: {len(exp.variants)} variant(s) x "
          f"{len(exp.seeds)} seed(s) = {len(runs)} runs in {root} · "
          + ", ".join(f"{n} {a}" for a, n in counts.items() if n)
          + f" · {jobs} at a time, {threads} thread(s) each on {cores} cores", flush=True)
    if dry_run:
        for run in runs:
            line = " ; ".join("memcore " + shlex.join(c) for c in commands_of(run, nproc))
            print(f"  {run.label:<24} {describe(run):<34} {line}")
        return 0
    check_links(todo)
    write_experiment_info(exp, root, path)
    gpus = _gpu_count()
    progress = Progress(runs, status_every)
    running: list[Job] = []
    failed: list[str] = []
    stopping = []

    def stop(signum, frame):
        if not stopping:  # once: a second SIGTERM would stop a child without its checkpoint
            print("sweep: stopping; the running runs save a checkpoint (run the command again "
                  "to continue)", flush=True)
            for job in running:
                job.stop()
        stopping.append(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        queue = list(todo)
        while queue or running:
            while queue and len(running) < jobs and not stopping:
                run = queue.pop(0)
                slot = min(set(range(jobs)) - {j.slot for j in running})
                job = Job(run, commands_of(run, nproc),
                          child_env(threads, slot, nproc, gpus, plugins_dir), slot)
                running.append(job)
                progress.say(run, f"{describe(run)} · log {run.dir / LOG}", running)
            time.sleep(0.5)
            for job in [j for j in running if j.poll()]:
                running.remove(job)
                if job.failed and stopping:
                    # the log lags the step the run stopped at; the checkpoint is what resumes
                    progress.say(job.run, f"stopped; resumes from step "
                                 f"{_latest_step(job.run.dir)} (its last checkpoint)", None)
                elif job.failed:
                    failed.append(job.run.label)
                    progress.say(job.run, f"FAILED ({job.failed}); see {job.run.dir / LOG}", None)
                else:
                    progress.finished(job)
                    progress.say(job.run, f"done at step {job.run.steps} in "
                                 f"{duration(time.monotonic() - job.started)}", running)
            progress.tick(running)
            if stopping and not running:
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        return 128 + stopping[0]
    if failed:
        print(f"sweep: {len(failed)} run(s) failed: {', '.join(failed)}; the others are "
              "finished. Fix the cause and run the command again.", flush=True)
        return 1
    print(f"sweep {experiment_name(exp, path)}: all {len(runs)} runs finished · compare with "
          f"`memcore compare {root}`", flush=True)
    return 0
