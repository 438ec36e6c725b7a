"""Component registry: plugins found through entry points, loaded and called one at a time.

pluggy's own ``load_setuptools_entrypoints`` stops at the first broken plugin. Here each entry point
is imported, registered and called inside its own ``try``, so a broken plugin is reported by name
(``memcore plugins``) and everything else keeps working. Environment variables:

* ``MEMCORE_DISABLE_PLUGINS=a,b``: never load these plugins.
* ``MEMCORE_LOAD_PLUGINS=a,b``: load only these (an empty value loads none).
* ``MEMCORE_STRICT_PLUGINS=1``: re-raise the first plugin failure (for CI and plugin authors).
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import importlib.util
import os
import re
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs
import pluggy

from . import hookspecs
from .errors import MemcoreError

KINDS = (
    "generator",      # nn.Module: latent (+ condition) -> image
    "discriminator",  # nn.Module: image (+ condition) -> logits
    "block",          # nn.Module inserted into a backbone at a resolution: (B,C,H,W) -> (B,C,H,W)
    "loss",           # memcore.Loss: a term added to the D or G phase
    "augment",        # nn.Module applied to every image D sees
    "dataset",        # map-style dataset of (image in [-1, 1], label)
    "metric",         # memcore.Metric: numbers computed from samples of the EMA generator
    "extractor",      # feature network used by metrics
)
API_VERSION = "1"
# Not a kind, though a plugin author looks for one: the component a recipe names holds the memory.
NO_MEMORY_KIND = ("a memory (memcore.Memory) is no component of its own: it lives inside the block, "
                  "generator or discriminator that reads it, and that component is registered and "
                  "named in recipes (docs/protocols.md)")


def unknown_kind(kind: str) -> str:
    """Why ``kind`` is refused, with the kinds there are."""
    why = f"; {NO_MEMORY_KIND}" if did_you_mean(kind, ("memory",)) else did_you_mean(kind, KINDS)
    return f"unknown kind '{kind}'{why} (kinds: {', '.join(KINDS)})"


@attrs.define
class Entry:
    kind: str
    name: str
    factory: Any        # callable or "module:attr"
    config: Any         # attrs class or "module:attr"
    help: str
    plugin: str

    def load_factory(self) -> Callable:
        return _resolve(self.factory, f"{self.kind}:{self.name} factory", self.plugin)

    def load_config(self) -> type:
        return _resolve(self.config, f"{self.kind}:{self.name} config", self.plugin)


@attrs.define
class PluginInfo:
    name: str
    dist: str | None
    version: str | None
    module: str
    status: str = "ok"          # "ok" | "failed" | "disabled"
    error: str | None = None     # one line
    traceback: str | None = None
    components: list[str] = attrs.Factory(list)


class UnknownComponent(MemcoreError):
    pass


class PluginError(MemcoreError):
    pass


def _resolve(target, what, plugin):
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception as exc:
        raise PluginError(f"plugin '{plugin}' cannot import {what} '{target}': "
                          f"{type(exc).__name__}: {exc}") from exc


def deferred(target, what: str, plugin: str) -> Callable:
    """``target`` itself when it is callable; for a ``"module:attr"`` string, a function that imports
    it on each call (modules are cached), so registering it costs no import at start-up."""
    if not isinstance(target, str):
        return target
    return lambda *args, **kwargs: _resolve(target, what, plugin)(*args, **kwargs)


def did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _env_list(var):
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {x.strip() for x in raw.split(",") if x.strip()}


# What a plugin's import or hook may raise without taking memcore down: any error, and
# sys.exit() (SystemExit is no Exception); Ctrl-C still stops everything.
PLUGIN_FAILURES = (Exception, SystemExit)


class Registry:
    """Components by (kind, name), and the plugins that provided them."""

    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.entries: dict[tuple[str, str], Entry] = {}
        self.plugins: dict[str, PluginInfo] = {}
        self.conflicts: dict[tuple[str, str], list[str]] = {}
        self._current: str | None = None

    # -- registration (called by plugins through memcore_register_components) --------------
    def add(self, kind: str, name: str, factory, config=None, *, help: str = "") -> None:
        """Register ``kind:name``. ``config`` is the attrs class of its recipe options."""
        plugin = self._current or "<direct>"
        if kind not in KINDS:
            raise PluginError(f"plugin '{plugin}' registers {unknown_kind(kind)}")
        if config is None:  # by name, as plugins register: config stands above the registry
            config = "memcore.config:NoOptions"
        key = (kind, name)
        if key in self.entries:
            other = self.entries[key].plugin
            self.conflicts.setdefault(key, [other]).append(plugin)
            raise PluginError(f"{kind} '{name}' is registered by two plugins: "
                              f"{self.source(other)} and {self.source(plugin)}; neither wins: "
                              "rename one, or uninstall or disable one (MEMCORE_DISABLE_PLUGINS)")
        self.entries[key] = Entry(kind, name, factory, config, help, plugin)
        if plugin in self.plugins:
            self.plugins[plugin].components.append(f"{kind}:{name}")

    def source(self, plugin: str) -> str:
        """``'name' (where its code is)``: the module of an installed plugin, a local file."""
        info = self.plugins.get(plugin)
        return f"'{plugin}' ({info.module})" if info else f"'{plugin}'"

    # -- loading ------------------------------------------------------------------------------
    def load_entry_points(self, group: str = "memcore") -> None:
        allow, deny = _env_list("MEMCORE_LOAD_PLUGINS"), _env_list("MEMCORE_DISABLE_PLUGINS") or set()
        seen = set()
        for ep in sorted(md.entry_points(group=group), key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, dist.name if dist else None,
                              dist.version if dist else None, ep.value)
            if ep.name in deny or (allow is not None and ep.name not in allow):
                info.status = "disabled"
                self.plugins[ep.name] = info
                continue
            self._load_one(info, ep.load)

    def register_module(self, module, name: str | None = None, version: str | None = None):
        """Register a plugin object directly (tests, local plugin files)."""
        name = name or getattr(module, "__name__", repr(module))
        info = PluginInfo(name, None, version, getattr(module, "__name__", repr(module)))
        self._load_one(info, lambda: module)
        return self.plugins[name]

    def load_file(self, path, name: str) -> PluginInfo:
        """Import a plugin file (``--plugins-dir``, ``[plugins] local``) as the plugin ``name``,
        isolated exactly like an entry point: a file that raises or calls ``sys.exit`` while
        imported or registering, implements a misspelled hook or registers a taken name is
        marked failed with its error, and the others keep working."""
        module_name = "memcore_local_" + re.sub(r"\W", "_", Path(str(path)).stem)

        def load():
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
            return module
        self._load_one(PluginInfo(name, None, None, str(path)), load)
        return self.plugins[name]

    def _load_one(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        self.plugins[info.name] = info
        try:
            module = load()
            self.pm.register(module, name=info.name)
        except PLUGIN_FAILURES as exc:
            return self._fail(info, exc, "failed to load")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=info.name)
            return self._fail(info, exc, "implements an unknown hook (see memcore/hookspecs.py)")
        if not self._compatible(info, module):
            return
        impls = [i for i in self.pm.hook.memcore_register_components.get_hookimpls()
                 if i.plugin_name == info.name]
        self._current = info.name
        try:
            for impl in impls:
                impl.function(registry=self)
        except PLUGIN_FAILURES as exc:
            for key in [k for k, e in self.entries.items() if e.plugin == info.name]:
                del self.entries[key]
            self.pm.unregister(name=info.name)  # info.components keeps the names it meant to add
            return self._fail(info, exc, "failed while registering components")
        finally:
            self._current = None

    def _compatible(self, info, module) -> bool:
        impl = getattr(module, "memcore_api_version", None)
        if impl is None:
            return True
        try:
            wanted = str(impl())
        except PLUGIN_FAILURES as exc:
            self.pm.unregister(name=info.name)
            self._fail(info, exc, "failed in memcore_api_version")
            return False
        if wanted.split(".")[0] != API_VERSION.split(".")[0]:
            self.pm.unregister(name=info.name)
            self._fail(info, PluginError(f"needs memcore API {wanted}, this memcore provides "
                                         f"API {API_VERSION}"), "is incompatible")
            return False
        return True

    def _fail(self, info, exc, what):
        info.status = "failed"
        info.error = f"{what}: called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) \
            else f"{what}: {type(exc).__name__}: {exc}"
        info.traceback = "".join(traceback.format_exception(exc))
        if os.environ.get("MEMCORE_STRICT_PLUGINS") == "1":
            raise PluginError(f"plugin '{info.name}' {info.error}") from exc

    # -- lookup -------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.entries if k == kind)

    def get(self, kind: str, name: str) -> Entry:
        if (kind, name) in self.conflicts:
            raise UnknownComponent(f"{kind} '{name}' is registered by several plugins "
                                   f"({', '.join(map(self.source, self.conflicts[(kind, name)]))}); "
                                   "neither wins: rename it in one, or disable all but one")
        entry = self.entries.get((kind, name))
        if entry is not None:
            return entry
        failed = [p for p in self.plugins.values() if p.status == "failed"]
        owner = next((p for p in failed if f"{kind}:{name}" in p.components or p.name == name), None)
        if owner is not None:
            raise UnknownComponent(f"{kind} '{name}' comes from plugin '{owner.name}', which "
                                   f"{owner.error}")
        installed = ", ".join(self.names(kind)) or "none"
        msg = f"unknown {kind} '{name}'{did_you_mean(name, self.names(kind))} (installed: {installed})"
        if failed:
            msg += "; plugins that failed to load: " + "; ".join(f"'{p.name}' {p.error}" for p in failed)
        raise UnknownComponent(msg)

    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "failed"]

    def unavailable(self, kind: str) -> dict[str, str]:
        """Names of ``kind`` that a recipe cannot use, with the reason: the components a failed
        plugin registered before it failed, and names registered by several plugins."""
        out = {}
        for plugin in self.failed():
            for component in plugin.components:
                k, _, name = component.partition(":")
                if k == kind and (k, name) not in self.entries:
                    out[name] = f"plugin '{plugin.name}' {plugin.error}"
        for (k, name), plugins in self.conflicts.items():
            if k == kind:
                out[name] = (f"registered by several plugins ({', '.join(map(self.source, plugins))}); "
                             "disable all but one")
        return out


def make_component(kind: str, spec, ctx):
    """``factory(options, ctx)`` of a recipe component (``spec`` has ``kind`` and ``options``,
    ``ctx`` is a BuildContext); a failure names the component and its plugin."""
    entry = get_registry().get(kind, spec.kind)
    try:
        return entry.load_factory()(spec.options, ctx)
    except MemcoreError:
        raise
    except Exception as exc:
        raise MemcoreError(f"{ctx.role} '{spec.kind}' (plugin '{entry.plugin}') failed to build: "
                           f"{type(exc).__name__}: {exc}") from exc


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loading entry points on first use."""
    global _registry
    if _registry is None:
        reg = Registry()
        reg.load_entry_points()
        _registry = reg
    return _registry


@contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the process-wide one inside the block (tests, tools)."""
    global _registry
    saved, _registry = _registry, registry
    try:
        yield registry
    finally:
        _registry = saved
