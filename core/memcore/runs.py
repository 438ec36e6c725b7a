"""Load a finished (or running) run for sampling, evaluation and visualisation."""
from __future__ import annotations

from pathlib import Path

import attrs
import tomli
import torch

from . import checkpoint
from .build import build_dataset, build_models
from .protocols import Models
from .recipe import Recipe, recipe_from_dict


@attrs.define
class _Shape:
    resolution: int
    channels: int
    num_classes: int


@attrs.define
class LoadedRun:
    """``G`` is the EMA generator (or the trained one with ``use_ema=False``), in eval mode."""

    G: torch.nn.Module
    models: Models
    recipe: Recipe
    state: dict
    path: Path                 # the checkpoint file
    run_dir: Path

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def dataset(self):
        """The run's dataset (built on demand: it may be large or absent on this machine)."""
        return build_dataset(self.recipe)


def load_run(run: str | Path, which: str = "latest", use_ema: bool = True) -> LoadedRun:
    """Rebuild every network of a run from its checkpoint (``which``: "latest" or "best").

    All networks are built and linked (``on_build``) as in training, so a generator that samples
    from D's memory works here too.
    """
    path = checkpoint.resolve(run, prefer=which)
    state = checkpoint.load(path)
    recipe, _ = recipe_from_dict(tomli.loads(state["recipe"]), f"{path} (recipe)")
    models = build_models(recipe, _Shape(**state["dataset"]))
    models.G.load_state_dict(state["models"]["G"])
    models.D.load_state_dict(state["models"]["D"])
    if models.G_ema is not None and "G_ema" in state["models"]:
        models.G_ema.load_state_dict(state["models"]["G_ema"])
    if models.augment is not None and "augment" in state["models"]:
        models.augment.load_state_dict(state["models"]["augment"])
    G = models.G_ema if use_ema and models.G_ema is not None else models.G
    for net in (models.G, models.D, models.G_ema):
        if net is not None:
            net.eval()
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return LoadedRun(G=G, models=models, recipe=recipe, state=state, path=path, run_dir=run_dir)
