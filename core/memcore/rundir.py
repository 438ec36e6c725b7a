"""Run directories: numbered folders holding the resolved recipe, plugin versions and outputs."""
from __future__ import annotations

import json
import re
from pathlib import Path

from . import __version__
from .recipe import Recipe, dumps
from .registry import get_registry


def plugin_versions() -> dict[str, str]:
    return {name: (info.version or "local") for name, info in sorted(get_registry().plugins.items())
            if info.status == "ok"}


def new_run_dir(recipe: Recipe, recipe_path: str | None) -> Path:
    if recipe.run.dir:
        return Path(recipe.run.dir).expanduser()
    name = recipe.run.name or (Path(recipe_path).stem if recipe_path else "run")
    root = Path(recipe.run.root).expanduser()
    taken = [int(m.group(1)) for p in root.glob("*") if (m := re.match(r"(\d{4,})-", p.name))] \
        if root.exists() else []
    return root / f"{max(taken, default=0) + 1:04d}-{name}"


def write_run_files(run_dir: Path, resolved: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.resolved.toml").write_text(dumps(resolved))
    (run_dir / "plugins.json").write_text(json.dumps(
        {"memcore": __version__, "plugins": plugin_versions()}, indent=2))
