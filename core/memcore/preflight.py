"""Everything knowable before step 1, checked before a run directory exists.

``memcore validate``, ``memcore run`` and ``memcore run --dry-run`` call :func:`preflight` on a
structured recipe. It opens the dataset (and counts its usable images), builds every network, the
augmentation and the losses on the CPU, tensors too large for a bounded budget on the meta
device (:class:`_ShapeBuild`), and links them (``on_build``), so block positions and component
combinations are checked; it builds the metrics and runs their ``preflight()`` (extractor
weights present), checks ``train.best_metric`` against the values the metrics give and
``train.init_from`` against the networks. Every problem is reported at
once, each naming its recipe key, in one :class:`RecipeError` (exit 2).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
from pathlib import Path
from typing import Callable

import attrs
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import checkpoint
from .build import base_context, build_dataset, build_metrics, build_network, make_component
from .errors import MemcoreError, RecipeError
from .protocols import Models
from .recipe import Recipe
from .registry import did_you_mean, get_registry


@attrs.define
class _Shape:
    """What metrics are built for when the dataset is not opened: nothing known."""

    resolution: int = 0
    channels: int = 0
    num_classes: int = 0


_NO_DATA = _Shape()


class _Unexpected(Exception):
    """A component raised something other than a MemcoreError while built on the meta device."""


def preflight(recipe: Recipe, source: str = "recipe", init_from: bool = True,
              portable: bool = False):
    """Check ``recipe`` as far as it can be without training; returns the opened dataset.

    ``init_from=False`` skips ``train.init_from`` (a resumed run has its own weights).
    ``portable=True`` looks at no file of this machine (a recipe meant for another one): no
    dataset is opened, no extractor weights or ``init_from`` looked for, so what depends on the
    data's shape (networks, block positions) is not checked either.
    """
    problems: list[str] = []
    dataset = None if portable else _attempt(problems, "data", lambda: build_dataset(recipe))
    if dataset is not None:
        _check_size(recipe, dataset, problems)
        models = _check_models(recipe, dataset, problems)
        if models is not None and init_from:
            _check_init_from(recipe, models, problems)
    if dataset is not None or portable:
        _check_metrics(recipe, dataset or _NO_DATA, problems, files=not portable)
    if problems:
        raise RecipeError(problems, source)
    return dataset


def checked_recipe(load: Callable[[], tuple[Recipe, dict]], source: str, **options):
    """``load()`` (e.g. :func:`memcore.recipe.load_recipe`), then :func:`preflight` with
    ``options``: (recipe, resolved, dataset). Where the options are wrong, the rest is still
    checked with those at their defaults, so every problem is reported in one round."""
    try:
        recipe, resolved = load()
    except RecipeError as exc:
        repaired = getattr(exc, "repaired", None)
        if repaired is None:
            raise
        try:
            preflight(repaired, source, **options)
        except RecipeError as more:
            raise RecipeError(exc.problems + [p for p in more.problems if p not in exc.problems],
                              exc.source) from None
        raise
    return recipe, resolved, preflight(recipe, source, **options)


def _attempt(problems: list[str], where: str, build: Callable, unexpected: bool = True):
    """``build()``, or ``None`` with its failure added to ``problems`` under the key ``where``.

    ``unexpected=False`` lets an exception that is not a :class:`MemcoreError` through as
    :class:`_Unexpected` (the build is then retried in the next place of :func:`_check_models`),
    also where :func:`memcore.registry.make_component` wrapped it in one (its ``__cause__``).
    """
    try:
        return build()
    except RecipeError as exc:
        problems.extend(exc.problems)
    except MemcoreError as exc:
        if not unexpected and exc.__cause__ is not None and \
                not isinstance(exc.__cause__, MemcoreError):
            raise _Unexpected() from exc
        problems.append(_keyed(where, str(exc)))
    except Exception as exc:
        if not unexpected:
            raise _Unexpected() from exc
        problems.append(_keyed(where, _failure(exc)))
    return None


def _keyed(where: str, message: str) -> str:
    """``message`` under the key ``where`` (``losses[1]``), unless it names a key already; one
    naming only the list (``losses: ...``, a component does not know its index) gets it."""
    section = where.split("[")[0]
    if where != section and message.startswith(f"{section}:"):
        return where + message[len(section):]
    return message if message.startswith(section) else f"{where}: {message}"


def _failure(exc: BaseException) -> str:
    """``Type: message`` of an exception, with the plugin whose code raised it when known."""
    plugin = plugin_of_traceback(exc)
    return f"{f'plugin {plugin!r} raised ' if plugin else ''}{type(exc).__name__}: {exc}"


def plugin_of_traceback(exc: BaseException) -> str | None:
    """The registered plugin whose module raised ``exc`` (the innermost such frame), if any."""
    frame = _plugin_frame(exc)
    return frame[0] if frame else None


def _plugin_frame(exc: BaseException):
    """(plugin, frame summary) of the innermost traceback frame in a plugin's package."""
    import traceback
    packages = {}
    try:
        registry = get_registry()
        entries, plugins = list(registry.entries.values()), list(registry.plugins.values())
    except Exception:  # the registry itself is what broke
        entries, plugins = [], []
    for entry in entries:
        target = entry.factory if isinstance(entry.factory, str) else \
            getattr(entry.factory, "__module__", "")
        packages.setdefault(target.split(":")[0].split(".")[0], entry.plugin)
    for info in plugins:  # plugins that only add commands or hooks, plugin files by their path
        module = str(info.module).split(":")[0]
        packages.setdefault(module if module.endswith(".py") else module.split(".")[0], info.name)
    packages.pop("memcore", None)
    files = {str(Path(m).resolve()): name for m, name in packages.items() if m.endswith(".py")}
    found, tb = None, exc.__traceback__
    while tb is not None:  # a plugin file (--plugins-dir) is known by its path
        top = tb.tb_frame.f_globals.get("__name__", "").split(".")[0]
        owner = packages.get(top) or files.get(str(Path(tb.tb_frame.f_code.co_filename).resolve()))
        if owner:
            found = (owner, traceback.extract_tb(tb, limit=1)[0])
        tb = tb.tb_next
    return found


def describe_crash(exc: BaseException) -> str:
    """The command line's last resort: what raised, in whose code, how to see the traceback."""
    frame = _plugin_frame(exc)
    where = f"plugin {frame[0]!r} ({Path(frame[1].filename).name}:{frame[1].lineno} in " \
        f"{frame[1].name})" if frame else "memcore"
    return (f"{type(exc).__name__}: {exc}\n  raised in {where}: a bug there, not a mistake in "
            "your recipe; MEMCORE_DEBUG=1 shows the traceback")


# -- the dataset ------------------------------------------------------------------------------
def _check_size(recipe: Recipe, dataset, problems: list[str]) -> None:
    batch, n = recipe.train.batch_size, len(dataset)
    if n >= batch:
        return
    limit = getattr(recipe.data.options, "limit", None)
    if limit is not None and limit < batch:
        problems.append(f"data.limit = {limit}: fewer images than train.batch_size = {batch}")
    else:
        problems.append(f"data: the dataset '{recipe.data.kind}' has {n} usable image(s), fewer "
                        f"than train.batch_size = {batch}")


# -- the networks -----------------------------------------------------------------------------
def _check_models(recipe: Recipe, dataset, problems: list[str]) -> Models | None:
    """Every network, the augmentation and the losses, built and linked.

    First under :class:`_ShapeBuild`. Where a component fails there with something other than a
    :class:`MemcoreError` (it mixed one of the CPU tensors with a meta one given for a large
    request), everything is built again on the meta device, and where one needs real values there
    (``.item()``, numpy), on the CPU, where what it raises is reported.
    """
    places = (_ShapeBuild, lambda: torch.device("meta"), contextlib.nullcontext)
    for tier, place in enumerate(places):
        found: list[str] = []
        try:
            with place():
                models = _build_all(recipe, dataset, found, unexpected=tier == len(places) - 1)
            break
        except _Unexpected:
            continue
    problems.extend(found)
    if models is not None:
        _check_memory(recipe, models, problems)
    return models


class _ShapeBuild(TorchFunctionMode):
    """Networks built on the CPU within a bounded amount of memory.

    A factory call (``empty``, ``zeros``, ``randn``, ...) whose tensor is larger than
    ``TENSOR_BYTES``, or would take this build's tensors past ``BUDGET_BYTES``, gives a meta tensor
    instead, so a recipe asking for more than the machine holds is refused by
    :func:`_check_memory`, not by the allocator. Why not the meta device throughout: several of
    torch's meta kernels (``normal_``, ``arange``, spectral norm's ``mv``) are Python reference
    kernels that import ``torch._dynamo`` and ``sympy`` on first use, which costs about as much
    CPU time as ``import torch`` itself (docs/performance.md); the fills of a network that fits
    the budget cost a few milliseconds.
    """

    TENSOR_BYTES = 16 * 2**20
    BUDGET_BYTES = 256 * 2**20

    def __init__(self):
        super().__init__()
        self.cpu_bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SIZED_FACTORIES and kwargs.get("device") is None:
            size = _requested_bytes(func, args, kwargs)
            if size is not None:
                if size > self.TENSOR_BYTES or self.cpu_bytes + size > self.BUDGET_BYTES:
                    return func(*args, **{**kwargs, "device": "meta"})
                self.cpu_bytes += size
        return func(*args, **kwargs)


# torch's factory functions whose first argument (or ``size=``) is the shape
_SIZED_FACTORIES = frozenset([torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn,
                              torch.full, torch.empty_strided])


def _requested_bytes(func, args, kwargs) -> int | None:
    """Bytes of the tensor a factory call asks for (``None`` where the call is malformed: the
    factory itself then says what is wrong)."""
    if "size" in kwargs:
        size = kwargs["size"]
    elif func in (torch.full, torch.empty_strided) or (args and not isinstance(args[0], int)):
        size = args[0] if args else ()
    else:
        size = args  # torch.zeros(3, 4)
    try:
        numel = math.prod(int(n) for n in size)
    except (TypeError, ValueError):
        return None
    return max(numel, 0) * (kwargs.get("dtype") or torch.get_default_dtype()).itemsize


def _build_all(recipe: Recipe, dataset, problems: list[str], unexpected: bool) -> Models | None:
    def attempt(where, build):
        return _attempt(problems, where, build, unexpected)

    torch.manual_seed(recipe.train.seed)
    G = attempt("generator", lambda: build_network(recipe, dataset, "generator"))
    D = attempt("discriminator", lambda: build_network(recipe, dataset, "discriminator"))
    ctx = base_context(recipe, dataset)
    augment = None if recipe.augment is None else attempt(
        "augment", lambda: make_component("augment", recipe.augment,
                                          attrs.evolve(ctx, role="augment")))
    losses = [attempt(f"losses[{i}]", lambda spec=spec, i=i: make_component(
        "loss", spec, attrs.evolve(ctx, role=f"losses[{i}]"))) for i, spec in enumerate(recipe.losses)]
    if G is None or D is None or (recipe.augment is not None and augment is None) or None in losses:
        return None
    G_ema = copy.deepcopy(G).eval() if recipe.ema.enabled else None
    models = Models(G=G, D=D, G_ema=G_ema, augment=augment, losses=losses)
    roots = [("generator", G), ("discriminator", D), ("augment", augment)] + \
        [(f"losses[{i}]", loss) for i, loss in enumerate(losses)]
    failed = len(problems)
    for where, root in roots:
        for m in root.modules() if isinstance(root, nn.Module) else [root]:
            if callable(getattr(m, "on_build", None)):
                attempt(where, lambda m=m: m.on_build(models))
    return models if len(problems) == failed else None


def _check_memory(recipe: Recipe, models: Models, problems: list[str]) -> None:
    """Weights that could never be allocated are refused with the sizes that made them."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for role, net in (("generator", models.G), ("discriminator", models.D)):
        tensors = list(net.parameters()) + list(net.buffers())
        need = sum(t.numel() * t.element_size() for t in tensors)
        if need > available:
            spec = getattr(recipe, role)
            sizes = sorted(((v, k) for k, v in attrs.asdict(spec.options, recurse=False).items()
                            if type(v) is int), reverse=True)[:3]
            shown = ", ".join(f"{role}.{k} = {v}" for v, k in sizes) or "its options"
            problems.append(f"{role}: '{spec.kind}' would hold {need / 2**30:,.0f} GiB of weights, "
                            f"more than this machine's {available / 2**30:,.0f} GiB of memory "
                            f"(check {shown})")


def _check_init_from(recipe: Recipe, models: Models, problems: list[str]) -> None:
    """``train.init_from`` names a readable checkpoint whose tensors fit the recipe's networks."""
    source = recipe.train.init_from
    if not source:
        return
    where = f"train.init_from = {source!r}"
    try:
        state = checkpoint.load(checkpoint.resolve(source, prefer="latest"))
    except MemcoreError as exc:
        problems.append(f"{where}: {exc}")
        return
    saved = state.get("models", {})
    for role, net in (("G", models.G), ("D", models.D), ("G_ema", models.G_ema)):
        if role not in recipe.train.init_roles or net is None or role not in saved:
            continue
        own = net.state_dict()
        unknown = [k for k in saved[role] if k not in own]
        if unknown:
            problems.append(f"{where}: {role} has no parameters named "
                            f"{', '.join(unknown[:5])} (another architecture?)")
        misfit = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in saved[role].items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if misfit:
            problems.append(f"{where}: {role} tensors of other shapes (checkpoint vs recipe): "
                            f"{'; '.join(misfit[:3])}")


# -- metrics ----------------------------------------------------------------------------------
def _check_metrics(recipe: Recipe, dataset, problems: list[str], files: bool) -> None:
    """The metrics build, find what they need (``preflight``, unless ``files`` is false) and
    offer the value ``train.best_metric`` names."""
    metrics = _attempt(problems, "metrics", lambda: build_metrics(recipe, dataset))
    for i, metric in enumerate(metrics or () if files else ()):
        _attempt(problems, f"metrics[{i}]", metric.preflight)
    best = recipe.train.best_metric
    if best is None or metrics is None:
        return
    offered = [name for spec, m in zip(recipe.metrics, metrics) for name in value_names(spec, m)]
    if best not in offered:
        listed = ", ".join(offered) or "none: the recipe has no [[metrics]]"
        problems.append(f"train.best_metric = {best!r}: no metric of the recipe gives this value"
                        f"{did_you_mean(best, offered)} (values: {listed})")


def value_names(spec, metric) -> list[str]:
    """What ``train.best_metric`` may name for one metric: each value, and ``value@extractor``."""
    names = list(getattr(metric, "values", ()) or (metric.key,))
    extractor = getattr(spec.options, "extractor", None)
    kind = getattr(extractor, "kind", None)
    return names + [f"{n}@{kind}" for n in names] if kind else names


# -- block slots, for `memcore show` ------------------------------------------------------------
SHOWN_RESOLUTIONS = ((28, 1), (32, 3), (64, 3), (128, 3))


def offered_slots(kind: str, name: str) -> dict[tuple[int, int], dict[int, int]]:
    """``{(resolution, channels): {slot resolution: channels}}`` of a backbone with its default
    options, built on the meta device for data of each shape in ``SHOWN_RESOLUTIONS`` that it
    supports (a shape it refuses is left out)."""
    from .blocks import BlockSlots
    from .config import slot, structure
    from .protocols import BuildContext
    spec = structure({"kind": name}, slot(kind), source=f"{kind}:{name}")
    out = {}
    for resolution, channels in SHOWN_RESOLUTIONS:
        ctx = BuildContext(resolution=resolution, channels=channels, role=kind)
        try:
            with torch.device("meta"):
                net = make_component(kind, spec, ctx)
        except Exception:  # this data shape is not one the backbone supports
            continue
        slots = {}
        for m in net.modules() if isinstance(net, nn.Module) else ():
            if isinstance(m, BlockSlots):
                slots.update(m.resolutions)
        if slots:
            out[(resolution, channels)] = dict(sorted(slots.items()))
    return out
