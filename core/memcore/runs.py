"""Load a finished (or running) run for sampling, evaluation and visualisation."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import attrs
import tomli
import torch

from . import __version__, checkpoint, dist, rundir
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
    raw = checkpoint.embedded_recipe(state, path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    with rundir.naming_unloaded_plugins(run_dir):
        recipe, resolved = recipe_from_dict(raw, f"{path} (recipe)")
    _say_if_foreign(state, path, run_dir)
    if not isinstance(state.get("dataset"), dict):
        raise MemcoreError(f"checkpoint {path}: holds no image shape ('dataset' entry)")
    models = build_models(recipe, _Shape(**state["dataset"]))
    checkpoint.restore_models(models, state, f"checkpoint {path}", resolved)
    G = models.G_ema if use_ema and models.G_ema is not None else models.G
    for net in (models.G, models.D, models.G_ema):
        if net is not None:
            net.eval()
    return LoadedRun(G=G, models=models, recipe=recipe, state=state, path=path, run_dir=run_dir)


def _say_if_foreign(state: dict, path: Path, run_dir: Path) -> None:
    """The networks are always built from the checkpoint's own recipe; when that is not the
    recipe of the run directory holding it (a checkpoint copied from elsewhere), say so."""
    own = run_dir / "recipe.resolved.toml"
    if not own.exists():
        return
    try:
        differences = checkpoint.recipe_differences(state, tomli.loads(own.read_text()))
    except (ValueError, OSError):  # an unreadable run recipe: the checkpoint's is used anyway
        differences = ["its recipe.resolved.toml cannot be read"]
    if differences:
        print(f"note: {path} was not written by the recipe of {run_dir} ("
              + "; ".join(differences[:4]) + "); built from the checkpoint's own recipe",
              file=sys.stderr)


def train(recipe: str | Path | None = None, overrides=(), *, resume: str | Path | None = None,
          dry_run: bool = False, overwrite: bool = False) -> Path | None:
    """Train from a recipe file, or continue the run directory ``resume``; returns the run dir.

    What ``memcore run`` does, for plugin commands that train (studies, sweeps). ``overrides`` are
    ``"key=value"`` strings as for ``--set``. A new run refuses a ``run.dir`` that holds an earlier
    run unless ``overwrite``. User mistakes raise :class:`memcore.MemcoreError`.
    """
    from .preflight import checked_recipe
    from .trainer import Trainer
    if resume is not None:
        resume_dir = Path(resume)
        if not (resume_dir / "recipe.resolved.toml").exists():
            raise MemcoreError(f"--resume {resume_dir}: not a memcore run directory (no "
                               "recipe.resolved.toml)")
        rundir.check_run_tree(resume_dir)
    else:
        resume_dir = None
    source = recipe or resume_dir / "recipe.resolved.toml"
    with rundir.naming_unloaded_plugins(resume_dir) if resume_dir else contextlib.nullcontext():
        parsed, resolved, dataset = checked_recipe(lambda: load_recipe(source, overrides),
                                                   str(source), init_from=resume is None)
    if dry_run:
        print(dumps(resolved), end="")
        return None
    if resume_dir is None:
        rundir.check_new_run_dir(rundir.new_run_dir(parsed, recipe), parsed, overwrite)
    resume_from = _resume_point(resume_dir) if resume_dir else None
    trainer = Trainer(parsed, resolved, Path("."), resume_from=resume_from, dataset=dataset)
    trainer.run_dir = resume_dir or Path(dist.gather_object(str(rundir.new_run_dir(parsed, recipe)))[0])
    main = trainer.accelerator.is_main_process
    made, start = None, trainer.step
    try:
        made = _start_run_dir(trainer, parsed, resolved, fresh=resume_dir is None,
                              overwrite=overwrite)
        result = trainer.train()
    except BaseException:
        if main and resume_dir is None and trainer.step == start:  # not one step trained
            rundir.discard_run_dir(trainer.run_dir, made)
        raise
    finally:
        trainer.close()
    if main:
        report = trainer.run_dir / "report.md"  # written by a plugin (memcore_run_finished)
        print(f"done: {result['step']} steps · samples {trainer.run_dir / 'samples' / 'latest.png'}"
              + (f" · report {report}" if report.exists() else ""))
    return trainer.run_dir


def _resume_point(run_dir: Path) -> Path | None:
    """The checkpoint to continue from, after removing temporary files a failed write left; None
    (start again from step 0) for a run killed before its first checkpoint."""
    main = dist.launch_rank() == 0  # the process group does not exist yet
    if main:
        for gone in checkpoint.clean_leftovers(run_dir):
            print(f"removed the leftover temporary checkpoint file {gone}", flush=True)
    if checkpoint.latest(run_dir) is not None:
        return checkpoint.resolve(run_dir)
    if main:
        gone = rundir.remove_run_files(run_dir, keep=("recipe.resolved.toml",))
        print(f"{run_dir} holds no checkpoint (the run stopped before its first one): starting it "
              f"again from step 0 in the same directory with its recipe.resolved.toml"
              + (f" (removed the earlier attempt's {', '.join(gone)})" if gone else ""), flush=True)
    return None


def _kept(run_dir: Path) -> str:
    foreign = rundir.foreign_files(run_dir)
    return f"; kept what the run did not write: {', '.join(foreign)}" if foreign else ""


def _start_run_dir(trainer, parsed, resolved, fresh: bool, overwrite: bool) -> Path | None:
    """Write the run's recipe into its directory (a new one, unless resuming) on the main
    process; every process stops if that fails. Returns what :func:`rundir.create_run_dir` made."""
    made, failure = None, None
    if trainer.accelerator.is_main_process:
        try:
            if fresh and overwrite:
                gone = rundir.remove_run_files(trainer.run_dir)
                if gone:
                    print(f"--overwrite: removed the earlier run's {', '.join(gone)} from "
                          f"{trainer.run_dir}{_kept(trainer.run_dir)}", flush=True)
            if fresh:
                made = rundir.create_run_dir(trainer.run_dir, resolved, parsed)
            else:
                rundir.write_run_files(trainer.run_dir, resolved)
        except OSError as exc:  # create_run_dir names its own failures
            doing = "--overwrite: cannot remove the earlier run from" if fresh else \
                f"--resume {trainer.run_dir}: cannot write into"
            failure = MemcoreError(f"{doing} the run directory {trainer.run_dir}: "
                                   f"{exc.strerror or exc}")
        except MemcoreError as exc:
            failure = exc
    if dist.any_rank(failure is not None, device=trainer.device):
        raise failure or MemcoreError("the main process could not create the run directory")
    if trainer.accelerator.is_main_process:
        what = f"resume from step {trainer.step}" if not fresh else \
            "recipe saved as recipe.resolved.toml"
        print(f"memcore {__version__} · run {trainer.run_dir} · {what} · "
              f"{trainer.world} process(es) on {trainer.device}", flush=True)
    return made
