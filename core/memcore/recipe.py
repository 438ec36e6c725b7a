"""The recipe: one TOML file (optionally ``extends``-ing others) describing a whole run.

The key names ``train.steps``, ``train.batch_size``, ``train.seed``, ``data.limit`` and ``run.dir``
are fixed: tools and docs rely on them. ``docs/recipes.md`` documents every key and is checked
against these classes by a test.
"""
from __future__ import annotations

import codecs
import math
import os
import re
import stat
from pathlib import Path
from typing import Literal, Optional

import tomli
import tomli_w

from . import trust
from .config import (config, deep_merge, drop_none, each, non_negative, option, positive, slot,
                     structure, unstructure, in_range)
from . import safewrite
from .errors import RecipeError
from .registry import get_registry


@config
class RunSection:
    dir: Optional[str] = option(None, help="Exact run directory. Default: <root>/NNNN-<name>, numbered.")
    root: str = option("runs", help="Parent folder of numbered run directories.")
    name: Optional[str] = option(None, help="Run name; default: the recipe file's stem.",
                                 check=lambda name: name and safewrite.name_problem(name))


MAX_GRID = 4096  # a 64 x 64 grid of images
MAX_KEY_DEPTH = 64
MAX_TOML_BYTES = 64 * 2**20   # a recipe or experiment file (10^6 seeds take 7 MiB)
MAX_SEED = 2**32 - 1  # per-rank seeds are derived as seed * 1000 + rank: this keeps them in 64 bits


@config
class TrainSection:
    steps: int = option(1000, help="Training iterations (one D phase and one G phase each).",
                        check=positive)
    batch_size: int = option(64, help="Images per iteration, summed over all processes.",
                             check=positive)
    seed: int = option(0, help="Seeds weights, data order, latents and augmentation.",
                       check=in_range(0, MAX_SEED))
    micro_batches: int = option(1, help="Split each phase into this many micro-batches "
                                "(gradient accumulation without accelerate.accumulate).",
                                check=positive)
    d_steps: int = option(1, help="D phases per iteration, each on a fresh real batch.",
                          check=positive)
    d_batches: Literal["joint", "separate"] = option(
        "joint", help="How D sees the D phase's real and fake batches: one call on "
        "cat([real, fake]) (shared BatchNorm statistics), or two calls (per-batch statistics, "
        "as in most TF GAN code).")
    precision: Literal["no", "bf16", "fp16"] = option(
        "no", help="Mixed precision: 'no' (fp32), 'bf16' (no scaler), 'fp16' (GradScaler).")
    log_every: int = option(10, help="Steps between log lines (JSONL, TensorBoard).", check=positive)
    sample_every: int = option(500, help="Steps between fixed-seed sample grids.", check=positive)
    checkpoint_every: int = option(500, help="Steps between checkpoints.", check=positive)
    keep_last: int = option(3, help="Checkpoints kept besides the best.", check=positive)
    grid_size: int = option(64, help="Images in each sample grid.", check=lambda v: None if
                            1 <= v <= MAX_GRID else f"an integer in [1, {MAX_GRID}] (images in "
                            "one grid; more are drawn at every sample_every and cannot be seen)")
    max_grad_norm: Optional[float] = option(None, help="Clip gradient norm per phase if set.",
                                            check=positive)
    init_from: Optional[str] = option(None, help="Start from the weights of an earlier run "
                                      "(run directory or checkpoint file); step counts restart.")
    init_roles: list[Literal["G", "D", "G_ema"]] = option(
        factory=lambda: ["G", "D", "G_ema"], help="Which networks init_from loads (e.g. [\"G\", "
        "\"G_ema\"] for a fresh discriminator).")
    freeze: list[str] = option(factory=list, help="Module names (e.g. 'G.backbone') whose "
                               "parameters are not trained.")
    best_metric: Optional[str] = option(None, help="Metric key that selects the best checkpoint "
                                        "(default: the first metric's main value).")
    num_workers: int = option(0, help="DataLoader workers for datasets decoded from files.",
                              check=non_negative)
    progress: bool = option(True, help="Show a progress bar.")
    check_consistency: bool = option(True, help="Under several processes, compare parameters "
                                     "and buffers across ranks at each checkpoint.")
    block_loss_weights: dict[str, float] = option(
        factory=dict, help="Weight of each loss term that blocks record with memcore.add_loss, "
        "by name (e.g. {commitment = 0.25}); terms not named here have weight 1.",
        check=lambda weights: next((f"finite weights >= 0 (got {name} = {w})"
                                    for name, w in weights.items()
                                    if not (math.isfinite(w) and w >= 0)), None))


@config
class OptimSpec:
    kind: Literal["adam", "adamw"] = option("adam", help="Optimizer.")
    lr: float = option(2e-4, help="Learning rate.", check=positive)
    # below 1: Adam divides by 1 - beta^t
    betas: tuple[float, float] = option((0.5, 0.999), help="Adam betas.",
                                        check=each(in_range(0.0, 1.0, hi_open=True)))
    eps: float = option(1e-8, help="Adam epsilon.", check=positive)
    weight_decay: float = option(0.0, help="Weight decay.", check=non_negative)
    lazy_correction: bool = option(False, help="With lazy regularisation every k steps, scale "
                                   "lr by c = k/(k+1) and betas to beta^c (stylegan2-ada).")
    schedule: Literal["constant", "linear"] = option(
        "constant", help="Learning rate over training: constant, or linear decay to 0 at "
        "train.steps (or after decay_epochs).")
    decay_epochs: Optional[float] = option(
        None, help="With schedule = \"linear\": reach 0 after this many passes over the "
        "training set whatever train.steps is, lr_t = lr (1 - t / (decay_epochs x batches per "
        "epoch)), constant 0 after that (default: 0 at train.steps).", check=positive)


@config
class OptimSection:
    G: OptimSpec = option(factory=OptimSpec, help="Generator optimizer.")
    D: OptimSpec = option(factory=OptimSpec, help="Discriminator optimizer.")


@config
class EmaSection:
    enabled: bool = option(True, help="Keep an exponential moving average of G.")
    # below 1: a decay of 1 would never move the EMA generator from its first copy
    decay: float = option(0.999, help="EMA decay per update.",
                          check=in_range(0.0, 1.0, hi_open=True))
    start: int = option(0, help="Step before which the EMA copies G.", check=non_negative)
    every: int = option(1, help="Steps between EMA updates.", check=positive)
    buffers: bool = option(True, help="Average floating buffers (BN statistics) too; "
                           "memory state is always copied.")
    half_life_kimg: Optional[float] = option(None, help="If set, the decay follows a half-life in "
                                             "thousands of images (stylegan2-ada), replacing decay.",
                                             check=positive)
    rampup: Optional[float] = option(None, help="The EMA's half-life (from half_life_kimg, or "
                                     "the one decay gives) is at most rampup x images seen so far "
                                     "(stylegan2-ada's ramp-up, 0.05): short runs average less.",
                                     check=positive)


@config
class PluginsSection:
    local: list[str] = option(factory=list, help="Python files loaded as plugins for this "
                              "recipe (paths relative to the recipe); imported only with your "
                              "consent: --trust-local-plugins or trusted_plugin_dirs "
                              "(docs/trust.md).")


@config
class Recipe:
    run: RunSection = option(factory=RunSection, help="Where the run is written.")
    train: TrainSection = option(factory=TrainSection, help="The training loop.")
    data: slot("dataset") = option(help="The dataset component.")
    generator: slot("generator", blocks=True) = option(help="The generator component.")
    discriminator: slot("discriminator", blocks=True) = option(help="The discriminator component.")
    losses: list[slot("loss")] = option(help="Loss terms, each added to the D or G phase.")
    augment: Optional[slot("augment")] = option(None, help="Augmentation applied to what D sees.")
    optim: OptimSection = option(factory=OptimSection, help="Optimizers of G and D.")
    ema: EmaSection = option(factory=EmaSection, help="EMA generator.")
    metrics: list[slot("metric")] = option(factory=list, help="Metrics computed during training.")
    plugins: PluginsSection = option(factory=PluginsSection, help="Recipe-local plugins.")


def _nonblocking(path, flags):
    return os.open(path, flags | os.O_NONBLOCK)


# -- loading ----------------------------------------------------------------------------------
def read_toml(path: Path, _chain=()) -> dict:
    try:
        path = Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a loop of links (RuntimeError before Python 3.13)
        raise RecipeError([f"cannot read {path}: {exc}"], str(path)) from None
    if path in _chain:
        raise RecipeError([f"extends: circular chain {' -> '.join(str(p) for p in _chain + (path,))}"],
                          str(path))
    try:
        data = tomli.loads(read_toml_text(path))
    except (ValueError, RecursionError) as exc:  # also Python's limits: 4300 digits, nesting
        raise RecipeError([f"not valid TOML: {exc}"], str(path)) from None
    base = data.pop("extends", None)
    if base is None:
        return _absolutise_locals(data, path.parent)
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError([f"extends = {base!r}: expected a path or a list of paths"], str(path))
    merged: dict = {}
    for b in bases:
        try:
            merged = deep_merge(merged, read_toml(path.parent / b, _chain + (path,)))
        except RecipeError as exc:  # say which line led there: the target may be a shared base
            raise RecipeError([f"extends = {b!r}: {problem}" for problem in exc.problems],
                              str(path)) from None
    return _absolutise_locals(deep_merge(merged, data), path.parent)


def read_toml_text(path: Path) -> str:
    """A TOML file's text (recipe, experiment): UTF-8 (a UTF-8 byte-order mark is allowed), else a
    clear error. Only a regular file of at most ``MAX_TOML_BYTES`` is read: a FIFO would wait
    forever and a device (``/dev/zero``) or a huge file would fill the memory."""
    path = Path(path)
    try:
        with open(path, "rb", opener=_nonblocking) as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise RecipeError([f"{path} is not a regular file, expected a .toml file"],
                                  str(path))
            data = fh.read(MAX_TOML_BYTES + 1)
    except FileNotFoundError:
        raise RecipeError([f"file not found: {path}"], str(path)) from None
    except IsADirectoryError:
        raise RecipeError([f"{path} is a folder, expected a .toml file"], str(path)) from None
    except OSError as exc:
        raise RecipeError([f"cannot read {path}: {exc.strerror or exc}"], str(path)) from None
    if len(data) > MAX_TOML_BYTES:
        raise RecipeError([f"{path} is larger than {MAX_TOML_BYTES // 2**20} MiB; no recipe or "
                           "experiment file is that large"], str(path))
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE,
                        codecs.BOM_UTF32_BE)):
        raise RecipeError(["the file is UTF-16/UTF-32 encoded (byte-order mark); TOML files must "
                           "be UTF-8: save it again as UTF-8"], str(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError([f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                           "TOML files must be UTF-8: save it again as UTF-8"], str(path)) from None


def _absolutise_locals(data: dict, folder: Path) -> dict:
    local = data.get("plugins", {}).get("local") if isinstance(data.get("plugins"), dict) else None
    if isinstance(local, list):
        data["plugins"]["local"] = [str((folder / p).resolve()) if isinstance(p, str) else p
                                    for p in local]
    return data


def parse_override(text: str) -> tuple[list, object]:
    """``a.b=value`` -> (["a", "b"], value); the value is read as TOML, else taken as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError([f"--set {_shown(text)}: expected KEY=VALUE, e.g. train.steps=100"],
                          "--set")
    try:
        parsed = tomli.loads(f"v = {value}")["v"]
    except tomli.TOMLDecodeError:
        parsed = value
    except (ValueError, RecursionError) as exc:   # Python's limits, not a string meant as such
        reason = str(exc).split(";")[0]  # not Python's advice to raise its limit
        raise RecipeError([f"--set {_shown(text)}: not a usable value: {reason}"],
                          "--set") from None
    path = key_path(key)
    if len(path) > MAX_KEY_DEPTH:
        raise RecipeError([f"--set {_shown(text)}: a key of {len(path)} parts, expected at most "
                           f"{MAX_KEY_DEPTH} (no recipe key is nested deeper)"], "--set")
    if "\0" in key or _holds_nul(parsed):
        raise RecipeError([f"--set {_shown(text)}: a NUL character (\\u0000) cannot be part of "
                           "a key or a path"], "--set")
    return path, parsed


def _shown(text: str, room: int = 60) -> str:
    """``text`` for a message: long values shortened, with their length."""
    return repr(text) if len(text) <= room else f"{text[:room]!r}... ({len(text)} characters)"


def _holds_nul(value) -> bool:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return "\0" in value if isinstance(value, str) else any(map(_holds_nul, items))


def key_path(key: str) -> list:
    """``generator.blocks[0].at`` or ``generator.blocks.0.at`` -> ["generator", "blocks", 0, "at"]."""
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())
    # an index of more digits than any list has stays text (int() refuses 4300 digits)
    return [int(p) if p.isdigit() and len(p) < 19 else p for p in key.split(".")]


def apply_overrides(raw: dict, overrides) -> dict:
    problems = []
    for text in overrides:
        path, value = parse_override(text)
        problem = set_key(raw, path, value)
        if problem:
            problems.append(f"--set {text}: {problem}")
    if problems:
        raise RecipeError(problems, "--set")
    return raw


def set_key(raw: dict, path: list, value) -> str | None:
    """Set ``raw[path[0]][path[1]]... = value`` (ints index lists, missing tables are created);
    returns what went wrong, or None. The one place that knows ``--set`` key paths."""
    node = raw
    for i, part in enumerate(path[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return f"{'.'.join(map(str, path[:i + 1]))} is not an existing list item"
            node = node[part]
        else:
            if not isinstance(node, dict):
                return f"{'.'.join(map(str, path[:i]))} is not a table"
            node = node.setdefault(part, {})
    last = path[-1]
    if isinstance(last, int) and isinstance(node, list) and last < len(node):
        node[last] = value
    elif isinstance(node, dict) and not isinstance(last, int):
        node[last] = value
    else:
        return "cannot set this key"
    return None


def load_plugin_files(paths, where: str) -> list[str]:
    """Import Python files and register them as plugins ``local:<stem>``; returns problems.

    ``where`` names the source of each path in messages (``plugins.local``). Nothing is imported
    unless the user consented to every file (:func:`memcore.trust.refusals`, docs/trust.md).
    """
    refused = trust.refusals(paths, where)
    if refused:
        return refused
    registry = get_registry()
    problems = []
    for i, path in enumerate(paths):
        name = f"local:{Path(str(path)).stem}"
        if name not in registry.plugins and not Path(str(path)).is_file():
            problems.append(f"{where}[{i}] = {str(path)!r}: no such Python file")
            continue
        info = registry.plugins.get(name) or registry.load_file(path, name)
        if info.status == "failed":
            problems.append(f"{where}[{i}] = {str(path)!r}: plugin '{name}' {info.error}")
    return problems


def load_local_plugins(raw: dict, source: str) -> None:
    local = raw.get("plugins", {}).get("local", []) if isinstance(raw.get("plugins"), dict) else []
    problems = load_plugin_files(local if isinstance(local, list) else [], "plugins.local")
    if problems:
        raise RecipeError(problems, source)


def load_recipe(path, overrides=()) -> tuple[Recipe, dict]:
    """Read, merge, override and validate a recipe. Returns the Recipe and its resolved dict."""
    raw = read_toml(Path(path))
    raw = apply_overrides(raw, overrides)
    return recipe_from_dict(raw, str(path))


def recipe_from_dict(raw: dict, source: str = "recipe") -> tuple[Recipe, dict]:
    """Structure and check ``raw``. A :class:`RecipeError` lists the options' problems and
    those across options at once; its ``repaired`` is the recipe with the bad options at their
    defaults (None where there is none), for :func:`memcore.preflight.checked_recipe`."""
    load_local_plugins(raw, source)
    try:
        recipe, problems = structure(raw, Recipe, source), []
    except RecipeError as exc:
        if exc.repaired is None:
            raise
        recipe, problems = exc.repaired, exc.problems
    if not recipe.losses:
        problems.append("losses: at least one loss is needed, e.g. [[losses]] kind = \"hinge\"")
    for phase in ("G", "D"):
        spec = getattr(recipe.optim, phase)
        if spec.decay_epochs is not None and spec.schedule != "linear":
            problems.append(f"optim.{phase}.decay_epochs = {spec.decay_epochs}: applies to "
                            f"optim.{phase}.schedule = \"linear\" only, got {spec.schedule!r}")
    if recipe.train.batch_size % recipe.train.micro_batches:
        problems.append(f"train.micro_batches = {recipe.train.micro_batches}: must divide "
                        f"train.batch_size = {recipe.train.batch_size}")
    if problems:
        error = RecipeError(problems, source)
        error.repaired = recipe
        raise error
    return recipe, unstructure(recipe)


def dumps(resolved: dict) -> str:
    return tomli_w.dumps(drop_none(resolved))
