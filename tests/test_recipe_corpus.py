"""The generated corpus of bad recipes: every option of every registered component, and of the
core sections, given a value of the wrong type and one out of its range, plus file-level mistakes.

Cases come from the registry at collection time, so a third-party plugin's components are covered
by installing it. Each case runs ``memcore run`` in-process and must end with exit 2, the option's
full key path in one ``error:`` paragraph, no traceback and no run directory. Values are drawn by
hypothesis from strategies built from each option's type and its ``check``.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import typing
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings, strategies as st

from memcore.cli import main
from memcore.config import Component, MAX_COUNT
from memcore.recipe import Recipe
from memcore.registry import get_registry
from memcore_kit.testing import tiny_recipe

SETTINGS = settings(max_examples=2, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
# where a component of each kind sits in a recipe (a block needs its required position)
PLACES = {"generator": ("generator",), "discriminator": ("discriminator",), "dataset": ("data",),
          "loss": ("losses", 0), "augment": ("augment",), "metric": ("metrics", 0),
          "block": ("generator", "blocks", 0)}
CORE_SECTIONS = ("run", "train", "optim", "ema", "plugins")


# -- types --------------------------------------------------------------------------------------
def _inner(t):
    """Optional[X] -> X."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
            and len(args) == 1:
        return args[0]
    return t


def _fields(cls) -> list[attrs.Attribute]:
    attrs.resolve_types(cls)
    return list(attrs.fields(cls))


def _is_component(t) -> bool:
    return isinstance(t, type) and issubclass(t, Component)


def wrong_type(t) -> st.SearchStrategy:
    """Values no option of type ``t`` may accept."""
    t = _inner(t)
    origin = typing.get_origin(t)
    scalars = {int: st.one_of(st.text(max_size=5), st.booleans(),
                              st.floats(allow_nan=False, allow_infinity=False).filter(
                                  lambda v: v != int(v))),
               float: st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2)),
               bool: st.one_of(st.sampled_from(["true", "yes", "false"]), st.integers(0, 1)),
               str: st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False))}
    if t in scalars:
        return scalars[t]
    if origin is Literal:
        return st.one_of(st.lists(st.integers(), min_size=1, max_size=2), st.just({"a": 1}))
    if origin in (list, tuple) or t is list:
        return st.one_of(st.integers(), st.text(min_size=1, max_size=5))
    if _is_component(t):
        return st.one_of(st.integers(), st.lists(st.integers(), max_size=2))
    if origin is dict:
        return st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=2))
    if attrs.has(t):
        return st.one_of(st.integers(), st.text(max_size=5))
    raise AssertionError(f"no wrong-type strategy for {t!r}: teach the corpus this option type")


def out_of_range(field: attrs.Attribute) -> st.SearchStrategy | None:
    """Values of the right type that the option refuses (its check, or the rules for every number
    and choice); ``None`` when every value of the type is meaningful (booleans, free text)."""
    t = _inner(field.type)
    check = field.metadata.get("check")
    refused = (lambda v: check(v) is not None) if check else (lambda v: False)
    origin = typing.get_origin(t)
    if t is int:
        always = st.sampled_from([2**64, -2**70, 10**30])       # beyond 64 bits
        found = st.one_of(st.integers(-2**40, 2**40), st.sampled_from([0, -1, MAX_COUNT + 1]))
        return st.one_of(always, found.filter(refused)) if check else always
    if t is float:
        always = st.sampled_from([math.inf, -math.inf, math.nan])
        found = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                          st.sampled_from([0.0, -1.0, 1.5, -1e-9]))
        return st.one_of(always, found.filter(refused)) if check else always
    if origin is Literal:
        choices = typing.get_args(t)
        return st.sampled_from(["no-such-choice"] if all(isinstance(c, str) for c in choices)
                               else [max(c for c in choices if isinstance(c, int)) + 1001])
    if origin in (list, tuple):
        (item, *_) = typing.get_args(t) or (Any,)
        if typing.get_origin(item) is Literal:
            return st.just(["no-such-choice"])
        if item in (int, float):
            bad = 2**64 if item is int else math.inf
            return st.lists(st.just(bad), min_size=1, max_size=2)
    if origin is dict:
        (_, value) = typing.get_args(t)
        if value in (int, float):
            return st.just({"x": 2**64 if value is int else math.inf})
    if _is_component(t):
        return st.just({"kind": "no-such-component"})
    return None


def valid(field: attrs.Attribute):
    """A value of the right type for a required option (so only the tested option is wrong)."""
    t = _inner(field.type)
    if _is_component(t):
        names = get_registry().names(t.slot_kind)
        return names[0]
    if typing.get_origin(t) is Literal:
        return typing.get_args(t)[0]
    if field.name == "at":
        return 14
    return {int: 1, float: 1.0, bool: False, str: "x"}.get(t, [])


# -- the cases ----------------------------------------------------------------------------------
@attrs.frozen
class Case:
    place: tuple          # where the table sits in the recipe
    kind: str             # the component's name ("" for a core section)
    cls: type             # its config class
    path: tuple           # the option, below the table
    field: Any

    @property
    def key(self) -> str:
        parts = [*self.place, *self.path]
        return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p)
                       for i, p in enumerate(parts))

    def recipe(self, value) -> dict:
        recipe = tiny_recipe()
        recipe["generator"]["blocks"] = []
        table: dict = {"kind": self.kind} if self.kind else {}
        for f in _fields(self.cls):
            if f.default is attrs.NOTHING:
                table[f.name] = valid(f)
        node = table
        for part in self.path[:-1]:
            node = node.setdefault(part, {})
        node[self.path[-1]] = value
        _put(recipe, self.place, table)
        return recipe


def _put(recipe: dict, place: tuple, table: dict) -> None:
    node = recipe
    for part, nxt in zip(place[:-1], place[1:]):
        if isinstance(nxt, int):
            node[part] = [None]
        node = node[part] if isinstance(part, str) else node[part]
        if node is None:
            raise AssertionError(place)
    last = place[-1]
    if isinstance(last, int):
        node[last] = table
    elif isinstance(node.get(last), dict) and not table.get("kind"):
        node[last] = {**node[last], **table}
    else:
        node[last] = table


def _options(cls, prefix=()):
    """(path, field) of every option, nested option tables included."""
    for f in _fields(cls):
        yield prefix + (f.name,), f
        t = _inner(f.type)
        if attrs.has(t) and not _is_component(t):
            yield from _options(t, prefix + (f.name,))


def _extractor_place() -> tuple | None:
    """A metric whose options hold an extractor: extractors are tested inside it."""
    reg = get_registry()
    for name in reg.names("metric"):
        for f in _fields(reg.get("metric", name).load_config()):
            if _is_component(_inner(f.type)) and _inner(f.type).slot_kind == "extractor":
                return name, f.name
    return None


def cases() -> list[Case]:
    reg = get_registry()
    out = []
    for section in CORE_SECTIONS:
        cls = _inner({f.name: f for f in _fields(Recipe)}[section].type)
        out += [Case((section,), "", cls, path, f) for path, f in _options(cls)]
    for kind, place in PLACES.items():
        for name in reg.names(kind):
            cls = reg.get(kind, name).load_config()
            out += [Case(place, name, cls, path, f) for path, f in _options(cls)]
    host = _extractor_place()
    for name in reg.names("extractor") if host else ():
        cls = reg.get("extractor", name).load_config()
        out += [ExtractorCase(("metrics", 0), name, cls, path, f, host) for path, f in _options(cls)]
    return out


@attrs.frozen
class ExtractorCase(Case):
    host: tuple = ()

    @property
    def key(self) -> str:
        return f"metrics[0].{self.host[1]}." + ".".join(self.path)

    def recipe(self, value) -> dict:
        recipe = super().recipe(value)
        extractor = recipe["metrics"][0]
        recipe["metrics"][0] = {"kind": self.host[0], self.host[1]: extractor}
        return recipe


CASES = cases()
RANGED = [(c, s) for c in CASES if (s := out_of_range(c.field)) is not None]


def refused(case: Case, value, tmp_path: Path, monkeypatch) -> None:
    recipe = case.recipe(value)
    folder = tmp_path / f"case{abs(hash((case.key, repr(value)))) % 10**8}"
    folder.mkdir(exist_ok=True)
    (folder / "r.toml").write_text(tomli_w.dumps(recipe))
    monkeypatch.chdir(folder)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "r.toml"])
    text = err.getvalue()
    assert code == 2, (case.key, value, text)
    assert "Traceback" not in text and text.startswith("error:"), text
    assert any(f"{case.key}{after}" in text for after in (" = ", ":", ".", "[")), \
        (case.key, value, text)
    assert not (folder / "runs").exists()


def _id(case: Case) -> str:
    return f"{case.kind or 'core'}:{case.key}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_wrong_type_is_refused(case, tmp_path, monkeypatch):
    @SETTINGS
    @given(value=wrong_type(case.field.type))
    def check(value):
        refused(case, value, tmp_path, monkeypatch)
    check()


@pytest.mark.parametrize("case,values", RANGED, ids=[_id(c) for c, _ in RANGED])
def test_out_of_range_is_refused(case, values, tmp_path, monkeypatch):
    @SETTINGS
    @given(value=values)
    def check(value):
        refused(case, value, tmp_path, monkeypatch)
    check()


def test_corpus_covers_every_first_party_component():
    """Every component a first-party plugin registers has its options in the corpus."""
    reg = get_registry()
    # test files load local plugins into this process's registry; only installed ones count
    first_party = {name for name, info in reg.plugins.items() if info.dist}
    covered = {(c.place, c.kind) for c in CASES}
    for (kind, name), entry in reg.entries.items():
        if entry.plugin not in first_party:
            continue
        if kind in PLACES and entry.load_config() is not None and _fields(entry.load_config()):
            assert (PLACES[kind], name) in covered, (kind, name)
    assert len(RANGED) > len(CASES) // 2


# -- file-level cases ---------------------------------------------------------------------------
def _write(folder: Path, name: str, content: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


FILE_CASES = {
    "utf16-bom": (lambda d: _write(d, "r.toml", "[train]\nsteps = 1\n".encode("utf-16")), "UTF-16"),
    "utf32-bom": (lambda d: _write(d, "r.toml", "[train]\nsteps = 1\n".encode("utf-32")), "UTF-16"),
    "latin-1": (lambda d: _write(d, "r.toml", "# caf\xe9\n".encode("latin-1")), "not UTF-8"),
    "directory": (lambda d: (d / "r.toml").mkdir() or d / "r.toml", "is a folder"),
    "missing": (lambda d: d / "nothing.toml", "file not found"),
    "not-toml": (lambda d: _write(d, "r.toml", "[train\nsteps = \n"), "not valid TOML"),
    "extends-directory": (lambda d: (d / "base").mkdir() or _write(d, "r.toml", 'extends = "base"\n'),
                          "extends = 'base'"),
    "extends-missing": (lambda d: _write(d, "r.toml", 'extends = "gone.toml"\n'), "extends = 'gone.toml'"),
    "extends-itself": (lambda d: _write(d, "r.toml", 'extends = "r.toml"\n'), "circular"),
    "extends-cycle": (lambda d: _write(d, "b.toml", 'extends = "r.toml"\n') and
                      _write(d, "r.toml", 'extends = "b.toml"\n'), "circular"),
    "extends-number": (lambda d: _write(d, "r.toml", "extends = 3\n"), "extends = 3"),
    "extends-utf16": (lambda d: _write(d, "b.toml", "x = 1\n".encode("utf-16")) and
                      _write(d, "r.toml", 'extends = "b.toml"\n'), "UTF-16"),
    "empty": (lambda d: _write(d, "r.toml", ""), "required key missing"),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_file_level_mistakes(name, command, tmp_path, monkeypatch):
    make, expected = FILE_CASES[name]
    path = make(tmp_path)
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([command, os.fspath(path)])
    assert code == 2, err.getvalue()
    assert expected in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()
    assert not (tmp_path / "runs").exists()
