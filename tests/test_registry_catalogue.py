"""registry.toml, the catalogue of first-party plugins, matches what discovery finds at run time."""
import tomli

from helpers import ROOT
from memcore.registry import get_registry


def _catalogue():
    return tomli.loads((ROOT / "registry.toml").read_text())["plugins"]


def test_every_plugin_folder_is_catalogued():
    folders = {p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml")}
    assert folders == {entry["path"].split("/")[-1] for entry in _catalogue().values()}


def test_discovery_matches_catalogue():
    plugins = get_registry().plugins
    for name, entry in _catalogue().items():
        assert name in plugins, f"plugin '{name}' is not installed (pip install -e {entry['path']})"
        info = plugins[name]
        assert info.status == "ok", f"{name}: {info.error}"
        assert info.dist == entry["distribution"]
        assert sorted(info.components) == sorted(entry["components"]), name
