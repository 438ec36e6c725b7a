import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def own_settings(tmp_path_factory, monkeypatch):
    """No test reads the real ~/.config/memcore/settings.toml (its trusted plugin folders)."""
    monkeypatch.setenv("MEMCORE_CONFIG", str(tmp_path_factory.mktemp("settings") / "settings.toml"))


@pytest.fixture
def trusted_tmp_path(tmp_path, monkeypatch):
    """``tmp_path``, listed in this test's settings as a folder whose plugin files a recipe may
    name in ``[plugins] local`` (docs/trust.md)."""
    settings = tmp_path / "memcore-settings.toml"
    settings.write_text(f"trusted_plugin_dirs = [{json.dumps(str(tmp_path.resolve()))}]\n")
    monkeypatch.setenv("MEMCORE_CONFIG", str(settings))
    return tmp_path
