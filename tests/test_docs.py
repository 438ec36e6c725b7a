"""Docs that must match the code."""
import re

import attrs

from helpers import ROOT
from memcore.cli import describe_options
from memcore.recipe import EmaSection, OptimSpec, PluginsSection, RunSection, TrainSection

SECTIONS = {"run.": RunSection, "train.": TrainSection, "optim.G.": OptimSpec, "ema.": EmaSection,
            "plugins.": PluginsSection}


def test_recipe_reference_matches_attrs_classes():
    doc = (ROOT / "docs" / "recipes.md").read_text()
    rows = dict(re.findall(r"^\| `([\w.]+)` \| [^|]+ \| `([^`]*)` \|", doc, flags=re.M))
    expected = {prefix + name: default for prefix, cls in SECTIONS.items()
                for name, _, default, _ in describe_options(cls)}
    assert rows == expected, "docs/recipes.md is out of date with core/memcore/recipe.py"


def test_every_option_has_help():
    for cls in SECTIONS.values():
        for f in attrs.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_fixed_key_names_exist():
    for key in ("train.steps", "train.batch_size", "train.seed", "run.dir"):
        prefix, name = key.split(".")
        assert name in attrs.fields_dict(SECTIONS[prefix + "."])
    from memcore.protocols import DatasetOptions
    assert "limit" in attrs.fields_dict(DatasetOptions)


def test_core_never_names_a_paper():
    words = re.compile(r"moca|memorygan|sagan|mfh|fpainter|painter", re.I)
    for path in (ROOT / "core").rglob("*.py"):
        assert not words.search(path.read_text()), f"{path} names a paper"


def test_readme_recipe_example_is_valid(tmp_path, capsys):
    from helpers import run_cli
    text = (ROOT / "README.md").read_text()
    example = re.search(r"## A recipe\n\n```toml\n(.*?)```", text, flags=re.S).group(1)
    base = re.search(r'extends = "(.*?)"', example).group(1)  # relative to the repository
    example = example.replace(f'"{base}"', f'"{ROOT / base}"')
    (tmp_path / "example.toml").write_text(example)
    assert run_cli("validate", tmp_path / "example.toml") == 0, capsys.readouterr().err
