"""pytest plugin for memcore and its plugins (loaded automatically through the ``pytest11`` entry
point): fixtures for an isolated registry and temporary plugin registration, and tiny recipes."""
from __future__ import annotations

import types

import pytest

from .registry import Registry, use_registry


@pytest.fixture
def isolated_registry():
    """A registry with every installed plugin loaded afresh, private to the test."""
    reg = Registry()
    reg.load_entry_points()
    with use_registry(reg):
        yield reg


@pytest.fixture
def register_plugin(isolated_registry):
    """``register_plugin(name, **hooks)`` registers hook functions as a plugin for one test."""
    def register(name, **hooks):
        module = types.ModuleType(name)
        for hook_name, fn in hooks.items():
            setattr(module, hook_name, fn)
        return isolated_registry.register_module(module, name)
    return register


def tiny_recipe(**sections) -> dict:
    """A few-step recipe on 256 Fashion-MNIST images with the base plugin's DCGAN, as a dict."""
    recipe = {
        "run": {"root": "runs"},
        "train": {"steps": 4, "batch_size": 8, "seed": 0, "log_every": 2, "sample_every": 4,
                  "checkpoint_every": 2, "grid_size": 16, "progress": False},
        "data": {"kind": "fashion-mnist", "limit": 256},
        "generator": {"kind": "dcgan", "z_dim": 16, "width": 16},
        "discriminator": {"kind": "dcgan", "width": 16},
        "losses": [{"kind": "hinge"}],
    }
    for key, value in sections.items():
        recipe[key] = value
    return recipe


@pytest.fixture
def tiny_recipe_dict():
    return tiny_recipe
