"""memcore's packages stand in layers: no import circle among their modules, counting imports
inside functions too (a lazy import hides a circle from Python, not from a reader), in the core and
in every plugin, across packages as well. The runtime core imports no plugin, and the tools that
are plugins now (the kit, the experiments, the datasets) have no module left in core/."""
import ast
from pathlib import Path

from helpers import ROOT

CORE = ROOT / "core" / "memcore"
PACKAGES = [CORE] + sorted(p.parent for p in ROOT.glob("plugins/*/memcore_*/__init__.py"))


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p, package): p for package in PACKAGES for p in package.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The memcore and plugin modules ``name`` imports. ``from . import x`` is the submodule x when
    there is one, else the package itself; the package ``memcore`` (the public facade that
    re-exports) counts only for names it defines, such as ``__version__``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    roots = {p.name for p in PACKAGES}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in roots}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] not in roots:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_anywhere():
    assert cycles(graph()) == []


def test_the_runtime_core_imports_no_plugin():
    edges = graph()
    offenders = {m: sorted(w for w in edges[m] if w.split(".")[0] != "memcore")
                 for m in edges if m.split(".")[0] == "memcore"}
    assert {m: found for m, found in offenders.items() if found} == {}


def test_the_tools_are_plugins_not_core():
    """The kit (contracts, fixtures, scaffold, check), the experiment tools (sweep, compare,
    report) and the datasets are plugins: none of their modules is left in core/."""
    tools = {"kit", "contracts", "testing", "scaffold", "check", "distributed", "sweep", "compare",
             "report", "datasets", "builtin"}
    core = {m.split(".", 1)[1] for m in modules() if m.startswith("memcore.")}
    assert {m for m in core if m.split(".")[0] in tools} == set()
    assert {"memcore_kit", "memcore_experiments", "memcore_datasets"} <= \
        {p.name for p in PACKAGES}


def test_the_graph_sees_lazy_imports():
    edges = graph()
    assert "memcore_kit.contracts" in edges["memcore_kit.check"]  # imported inside a function
    assert "memcore.registry" in edges["memcore.config"]
    assert "memcore.preflight" in edges["memcore_experiments.sweep"]  # across packages
