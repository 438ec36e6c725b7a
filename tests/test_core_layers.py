"""The core's modules stand in layers: no import circle among them, counting imports inside
functions too (a lazy import hides a circle from Python, not from a reader). The kit
(memcore.kit) stands on the core, and the runtime core never imports it."""
import ast
from pathlib import Path

import memcore

PACKAGE = Path(memcore.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The memcore modules ``name`` imports. ``from . import x`` is the submodule x when there is
    one, else the package itself; the package ``memcore`` (the public facade that re-exports)
    counts only for names it defines, such as ``__version__``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "memcore"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] != "memcore":
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


def test_no_import_circles_in_the_core():
    assert cycles(graph()) == []


def test_the_runtime_core_does_not_import_the_kit():
    edges = graph()
    kit = {m for m in edges if m.startswith("memcore.kit")}
    # builtin is the core's own plugin: it registers the kit's commands (new-plugin, check);
    # contracts and testing are the kit's public names.
    allowed = {"memcore.builtin", "memcore.contracts", "memcore.testing"}
    offenders = {m: sorted(edges[m] & kit) for m in edges
                 if m not in kit and m not in allowed and edges[m] & kit}
    assert offenders == {}


def test_the_graph_sees_lazy_imports():
    edges = graph()
    assert "memcore.kit.contracts" in edges["memcore.kit.check"]  # imported inside a function
    assert "memcore.registry" in edges["memcore.config"]
