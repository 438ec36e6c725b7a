"""Load a finished (or running) run for sampling, evaluation and visualisation."""
from __future__ import annotations

from pathlib import Path

import attrs
import tomli
import torch

from . import __version__, checkpoint, dist
from .build import build_dataset, build_models
from .errors import MemcoreError
from .protocols import Models
from .recipe import Recipe, dumps, load_recipe, recipe_from_dict


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
    checkpoint.restore_models(models, state)
    G = models.G_ema if use_ema and models.G_ema is not None else models.G
    for net in (models.G, models.D, models.G_ema):
        if net is not None:
            net.eval()
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return LoadedRun(G=G, models=models, recipe=recipe, state=state, path=path, run_dir=run_dir)


def train(recipe: str | Path | None = None, overrides=(), *, resume: str | Path | None = None,
          dry_run: bool = False) -> Path | None:
    """Train from a recipe file, or continue the run directory ``resume``; returns the run dir.

    What ``memcore run`` does, for plugin commands that train (studies, sweeps). ``overrides`` are
    ``"key=value"`` strings as for ``--set``. User mistakes raise :class:`memcore.MemcoreError`.
    """
    from .rundir import new_run_dir, write_run_files
    from .trainer import Trainer
    if resume is not None:
        resume_dir = Path(resume)
        if not (resume_dir / "recipe.resolved.toml").exists():
            raise MemcoreError(f"--resume {resume_dir}: not a memcore run directory (no "
                               "recipe.resolved.toml)")
        parsed, resolved = load_recipe(resume_dir / "recipe.resolved.toml", overrides)
    else:
        resume_dir = None
        parsed, resolved = load_recipe(recipe, overrides)
    if dry_run:
        print(dumps(resolved), end="")
        return None
    resume_from = checkpoint.resolve(resume_dir) if resume_dir else None
    trainer = Trainer(parsed, resolved, Path("."), resume_from=resume_from)
    trainer.run_dir = resume_dir or Path(dist.gather_object(str(new_run_dir(parsed, recipe)))[0])
    main = trainer.accelerator.is_main_process
    if main:
        write_run_files(trainer.run_dir, resolved)
        what = f"resume from step {trainer.step}" if resume_dir else "recipe saved as recipe.resolved.toml"
        print(f"memcore {__version__} · run {trainer.run_dir} · {what} · "
              f"{trainer.world} process(es) on {trainer.device}", flush=True)
    try:
        result = trainer.train()
    finally:
        trainer.close()
    if main:
        print(f"done: {result['step']} steps · samples {trainer.run_dir / 'samples' / 'latest.png'} · "
              f"report {trainer.run_dir / 'report.md'}")
    return trainer.run_dir
