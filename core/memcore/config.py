"""Strict TOML -> attrs structuring with errors that name the TOML key.

cattrs is lenient by default (``3.7`` becomes ``3``, ``"false"`` becomes ``True``) and cannot know
plugin classes in advance, so this module adds:

* strict scalar hooks (no coercion between bool, int, float and str; an int is accepted for a float);
* component slots: a table with ``kind = "name"`` is structured into the config class that the
  registry holds for that name, at the time of structuring (plugins load late);
* error collection: every problem in a recipe is reported at once as ``key.path = value: expected``
  with did-you-mean suggestions for unknown keys and component names;
* per-field checks declared with :func:`option` (``check=positive``), also reported by key path.
"""
from __future__ import annotations

import copy
import enum
import math
import typing
from collections.abc import Mapping
from typing import Any, Callable, Literal

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from .errors import RecipeError
from .registry import UnknownComponent, did_you_mean, get_registry

config = attrs.frozen(kw_only=True)
"""Decorator for component option classes: ``@memcore.config class MyOptions: ...``."""


def option(default=attrs.NOTHING, *, help: str = "", check: Callable | None = None, factory=None):
    """A recipe option with help text (shown by ``memcore show``) and an optional check.

    ``check(value)`` returns ``None`` when the value is fine, else a short text saying what was
    expected ("a number > 0").
    """
    meta = {"help": help, "check": check}
    if factory is not None:
        return attrs.field(factory=factory, metadata=meta)
    return attrs.field(default=default, metadata=meta)


@config
class NoOptions:
    """For components without options."""


# -- checks ----------------------------------------------------------------------------------
MAX_COUNT = 2**31 - 1
"""Largest integer a size or count option accepts: anything above cannot be allocated or reached
(a z_dim, a number of memory slots or a batch of 2^31 does not fit in memory)."""


def positive(v):
    if type(v) is int and v > MAX_COUNT:
        return f"an integer in [1, {MAX_COUNT}] (a size or count this large cannot be allocated)"
    return None if v is None or v > 0 else "a number > 0"


def non_negative(v):
    return None if v is None or v >= 0 else "a number >= 0"


def in_range(lo, hi, *, lo_open: bool = False, hi_open: bool = False):
    """A check for ``lo <= v <= hi``: both bounds are inclusive, unless ``lo_open`` / ``hi_open``
    exclude them (``hi_open``: a momentum, a decay or an Adam beta, where ``hi`` itself would
    never move anything)."""
    def check(v):
        if v is None or ((lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)):
            return None
        return f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return check


def at_least(n: int, reason: str):
    """A check for a count of at least ``n`` (and no larger than any size, as :func:`positive`),
    with the reason fewer cannot work."""
    def check(v):
        return positive(v) or (None if v is None or v >= n else f"at least {n} ({reason})")
    return check


def each(check):
    """A check applying ``check`` to every entry of a list; the message names the first bad one."""
    def check_all(values):
        for i, v in enumerate(values):
            problem = check(v)
            if problem:
                return f"a list of {problem} (entry {i} is {v!r})"
        return None
    return check_all


# -- component slots --------------------------------------------------------------------------
@attrs.frozen
class Component:
    """A recipe table naming a registered component: ``kind`` plus that component's options.

    ``blocks`` holds the ``[[<slot>.blocks]]`` tables of a backbone (generator or discriminator).
    """

    kind: str
    options: Any
    blocks: tuple = ()

    slot_kind: typing.ClassVar[str] = ""


def slot(kind: str, *, blocks: bool = False) -> type:
    """The type annotation for a recipe field that holds a component of ``kind``."""
    return _SLOTS[(kind, blocks)]


_SLOTS = {(k, b): type(f"{k.title()}Slot{'WithBlocks' if b else ''}", (Component,),
                       {"slot_kind": k, "has_blocks": b})
          for k in ("generator", "discriminator", "dataset", "loss", "augment", "metric", "block",
                    "extractor") for b in (False, True)}


class _Problem(Exception):
    """A message for one key path, raised from structure hooks."""


INT64 = (-2**63, 2**63 - 1)


def _strict(kind: type):
    def hook(val, _):
        if kind is float and type(val) is int:
            val = _finite_float(val)
        if type(val) is not kind:
            raise _Problem(f"expected {_type_name(kind)}, got {_describe(val)}")
        if kind is float and not math.isfinite(val):
            raise _Problem(f"expected a finite number, got {val}")
        if kind is int and not INT64[0] <= val <= INT64[1]:
            raise _Problem("expected an integer that fits in 64 bits (at most 2^63 - 1 = "
                           f"{INT64[1]})")
        return val
    return hook


def _finite_float(val: int) -> float:
    """An integer given for a number; one too large for a float cannot mean anything either."""
    try:
        return float(val)
    except OverflowError:
        raise _Problem(f"expected a finite number, got an integer with {len(str(val))} digits") \
            from None


def _type_name(t) -> str:
    origin = typing.get_origin(t)
    if t is int:
        return "an integer"
    if t is float:
        return "a number"
    if t is bool:
        return "true or false"
    if t is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(t))
    if origin in (list, tuple):
        return "a list"
    return getattr(t, "__name__", str(t))


def _describe(val) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(val), type(val).__name__)
    shown = repr(val)
    return f"{kind} {shown[:60]}" if not isinstance(val, (dict, list)) else kind


def _literal_hook(t):
    choices = typing.get_args(t)

    def hook(val, _):
        if val in choices and type(val) in {type(c) for c in choices}:
            return val
        names = [str(c) for c in choices]
        raise _Problem(f"expected one of {', '.join(repr(c) for c in choices)}, got {val!r}"
                       f"{did_you_mean(val, names)}")
    return hook


def _optional_hook(t, conv):
    inner = [a for a in typing.get_args(t) if a is not type(None)]

    def hook(val, _):
        if val is None:
            return None
        return conv.structure(val, inner[0])
    return hook


def _is_optional(t) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
        and type(None) in args and len(args) == 2


def _tuple_hook(t, conv):
    args = typing.get_args(t)

    def hook(val, _):
        if not isinstance(val, (list, tuple)):
            raise _Problem(f"expected a list, got {_describe(val)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(conv.structure(v, args[0]) for v in val)
        if len(val) != len(args):
            raise _Problem(f"expected a list of {len(args)} values, got {len(val)}")
        return tuple(conv.structure(v, a) for v, a in zip(val, args))
    return hook


def _list_hook(t, conv):
    (inner,) = typing.get_args(t) or (Any,)

    def hook(val, _):
        if not isinstance(val, (list, tuple)):
            raise _Problem(f"expected a list, got {_describe(val)}")
        errors, out = [], []
        for i, v in enumerate(val):
            try:
                out.append(conv.structure(v, inner))
            except Exception as exc:
                exc.__notes__ = getattr(exc, "__notes__", []) + [cattrs.errors.IterableValidationNote(
                    f"index {i}", i, inner)]
                errors.append(exc)
        if errors:
            raise IterableValidationError("While structuring list", errors, t)
        return out
    return hook


def _component_hook(t, conv):
    kind = t.slot_kind

    def hook(val, _):
        if isinstance(val, str):
            val = {"kind": val}
        if not isinstance(val, Mapping):
            raise _Problem(f"expected a table with kind = \"<{kind} name>\", got {_describe(val)}")
        registry = get_registry()
        if "kind" not in val:
            raise _Problem(f"missing key 'kind' (installed {kind}s: "
                           f"{', '.join(registry.names(kind)) or 'none'})")
        name = val["kind"]
        if not isinstance(name, str):
            raise _Problem(f"'kind' must be a string, got {_describe(name)}")
        try:
            entry = registry.get(kind, name)
        except UnknownComponent as exc:
            raise ClassValidationError(f"While structuring {kind}", [_note(_Problem(str(exc)), "kind")],
                                       t) from None
        body = {k: v for k, v in val.items() if k not in ("kind", "blocks")}
        errors = []
        options = blocks = None
        try:
            options = conv.structure(body, entry.load_config())
        except Exception as exc:
            errors.append(exc)
        if "blocks" in val and not t.has_blocks:
            errors.append(_note(_Problem(f"a {kind} has no block slots here"), "blocks"))
        elif "blocks" in val:
            try:
                blocks = tuple(conv.structure(val["blocks"], list[slot("block")]))
            except Exception as exc:
                errors.append(_note(exc, "blocks"))
        if errors:
            raise ClassValidationError(f"While structuring {kind} '{name}'", errors, t)
        return t(kind=name, options=options, blocks=blocks or ())
    return hook


def _note(exc, name):
    exc.__notes__ = getattr(exc, "__notes__", []) + [cattrs.errors.AttributeValidationNote(
        f"@ attribute {name}", name, Any)]
    return exc


def _checked_attrs_hook(cls, conv):
    """attrs classes: structure, then run every ``option(check=...)`` of the class."""
    from cattrs.gen import make_dict_structure_fn
    base = make_dict_structure_fn(cls, conv)
    checks = [(f.name, f.metadata["check"]) for f in attrs.fields(cls) if f.metadata.get("check")]

    def hook(val, t):
        if not isinstance(val, Mapping):
            raise _Problem(f"expected a table, got {_describe(val)}")
        obj = base(val, t)
        errors = [_note(_Problem(f"expected {problem}"), name) for name, check in checks
                  if (problem := check(getattr(obj, name)))]
        if errors:
            raise ClassValidationError(f"While checking {cls.__name__}", errors, cls)
        return obj
    return hook


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, bool, str):
        conv.register_structure_hook(kind, _strict(kind))
    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is Literal, _literal_hook)
    conv.register_structure_hook_factory(_is_optional, lambda t: _optional_hook(t, conv))
    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is tuple,
                                         lambda t: _tuple_hook(t, conv))
    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is list or t is list,
                                         lambda t: _list_hook(t, conv))
    conv.register_structure_hook_factory(
        lambda t: attrs.has(t) and not (isinstance(t, type) and issubclass(t, Component)),
        lambda t: _checked_attrs_hook(t, conv))
    conv.register_structure_hook_factory(
        lambda t: isinstance(t, type) and issubclass(t, Component) and t is not Component,
        lambda t: _component_hook(t, conv))
    conv.register_unstructure_hook(
        Component, lambda c: _component_unstructure(c, conv))
    conv.register_unstructure_hook_factory(lambda t: isinstance(t, type) and issubclass(t, Component),
                                           lambda t: (lambda c: _component_unstructure(c, conv)))
    conv.register_unstructure_hook(tuple, lambda v: [conv.unstructure(x) for x in v])
    conv.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum),
                                        lambda v: v.value)
    return conv


def _component_unstructure(c: Component, conv) -> dict:
    out = {"kind": c.kind, **conv.unstructure(c.options)}
    if c.blocks:
        out["blocks"] = [conv.unstructure(b) for b in c.blocks]
    return out


converter = make_converter()


# -- error formatting -------------------------------------------------------------------------
def _value_at(raw, path):
    node = raw
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return attrs.NOTHING
    return node


def _fmt_path(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _problems(exc: BaseException, raw, path=()) -> list[tuple[tuple | None, str]]:
    """(key path of the bad value, or None where leaving it out cannot help, message) pairs."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        out = []
        for sub, note in with_notes:
            step = note.index if isinstance(note, cattrs.errors.IterableValidationNote) else note.name
            out += _problems(sub, raw, path + (step,))
        for sub in without:
            out += _problems(sub, raw, path)
        return out
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [f.name for f in attrs.fields(exc.cl)]
        return [(path + (k,), f"{_fmt_path(path + (k,))}: unknown key{did_you_mean(k, known)} "
                 f"(valid keys: {', '.join(known) or 'none'})") for k in sorted(exc.extra_fields)]
    if isinstance(exc, KeyError):
        return [(None, f"{_fmt_path(path)}: required key missing")]
    val = _value_at(raw, path)
    shown = "" if val is attrs.NOTHING or isinstance(val, (dict, list)) else f" = {val!r}"
    msg = str(exc) if isinstance(exc, _Problem) else f"{type(exc).__name__}: {exc}"
    return [(path, f"{_fmt_path(path)}{shown}: {msg}")]


def structure(raw: dict, cls: type, source: str = "recipe"):
    """Structure ``raw`` into ``cls`` or raise :class:`RecipeError` listing every problem.

    The error's ``repaired`` is ``cls`` structured with the bad options left out (at their
    defaults), where that works, so checks across options can still run and their problems be
    reported in the same round; else None."""
    try:
        return converter.structure(raw, cls)
    except Exception as exc:
        found = _problems(exc, raw)
        error = RecipeError([m for _, m in found] or [f"{type(exc).__name__}: {exc}"], source)
    error.repaired = _without(raw, cls, [p for p, _ in found]) if found else None
    raise error


def _without(raw: dict, cls: type, paths: list):
    """``cls`` structured from ``raw`` less the options at ``paths``, or None."""
    try:
        trimmed = copy.deepcopy(raw)
        for path in paths:
            parent = _value_at(trimmed, path[:-1]) if path else attrs.NOTHING
            if not (isinstance(parent, dict) and isinstance(path[-1], str) and path[-1] != "kind"):
                return None
            parent.pop(path[-1], None)
        return converter.structure(trimmed, cls)
    except Exception:   # a RecursionError too: the recipe is then refused for its options alone
        return None


def unstructure(obj) -> Any:
    return converter.unstructure(obj)


def drop_none(value):
    """TOML has no null: absent keys stand for None, recursively."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def defaults_of(cls) -> dict:
    """The default options of an attrs config class as a TOML-ready dict (required keys skipped)."""
    out = {}
    for f in attrs.fields(cls):
        if f.default is attrs.NOTHING:
            continue
        value = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
        out[f.name] = unstructure(value)
    return drop_none(out)


def deep_merge(base: dict, override: dict) -> dict:
    """Tables merge key by key; any other value (lists included) is replaced."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
