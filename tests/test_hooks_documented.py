"""Every hook in memcore/hookspecs.py is documented in docs/writing-plugins.md with its exact
signature, and exercised by a test (datasette's test_plugin_hooks_are_documented / _have_tests)."""
import inspect
from pathlib import Path

import pytest

from memcore import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, fn in vars(hookspecs).items()
               if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec"))


def signature(name):
    return f"{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})"


def test_there_are_hooks():
    assert {"memcore_register_components", "memcore_add_commands", "memcore_api_version"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    doc = (ROOT / "docs" / "writing-plugins.md").read_text()
    assert f"### `{signature(hook)}`" in doc, f"document {signature(hook)} in docs/writing-plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    assert any(hook in p.read_text() for p in tests), f"no test in tests/ mentions {hook}"
