"""Build a run's parts from a validated recipe: dataset, networks, losses, augmentation, metrics."""
from __future__ import annotations

import copy
import os

import attrs
import torch
from torch import nn

from .errors import MemcoreError, RecipeError
from .memory import Memory, SYNC_POLICIES, WRITE_POINTS
from .protocols import BuildContext, Models
from .recipe import Recipe
from .registry import make_component
from .step import AUGMENT_TARGETS, applies_to


def build_component(kind: str, table: dict, ctx: BuildContext | None = None, where: str = ""):
    """A component from a recipe-style table (``{"kind": name, **options}``), validated strictly:
    for plugin commands and scripts that need a dataset, metric or extractor outside a run."""
    from .config import slot, structure
    where = where or kind
    spec = structure(table, slot(kind), source=where)
    return make_component(kind, spec, ctx or BuildContext(resolution=0, channels=0, role=where))


def build_dataset(recipe: Recipe):
    ctx = BuildContext(resolution=0, channels=0, role="data", seed=recipe.train.seed)
    return make_component("dataset", recipe.data, ctx)


def base_context(recipe: Recipe, dataset) -> BuildContext:
    t = recipe.train
    # the launcher's WORLD_SIZE: the process group may not exist yet when networks are built
    per_process = t.batch_size // max(1, int(os.environ.get("WORLD_SIZE", "1"))) // t.micro_batches
    return BuildContext(resolution=dataset.resolution, channels=dataset.channels,
                        num_classes=dataset.num_classes, seed=t.seed, batch_size=per_process,
                        data=recipe.data)


def build_network(recipe: Recipe, dataset, role: str) -> nn.Module:
    spec = getattr(recipe, role)
    ctx = attrs.evolve(base_context(recipe, dataset), role=role, blocks=spec.blocks)
    net = make_component(role, spec, ctx)
    if not isinstance(net, nn.Module):
        raise MemcoreError(f"{role} '{spec.kind}' did not build an nn.Module")
    if spec.blocks and not ctx._slots_used:
        raise RecipeError([f"{role}.blocks: {role} '{spec.kind}' offers no block slots"], role)
    _check_memories(net, role)
    return net


def _check_memories(net: nn.Module, role: str) -> None:
    for name, m in net.named_modules():
        if isinstance(m, Memory):
            where = f"{role}.{name}" if name else role
            if m.sync not in SYNC_POLICIES:
                raise MemcoreError(f"{where}: {type(m).__name__}.sync = {m.sync!r}, expected one of "
                                   f"{', '.join(SYNC_POLICIES)}")
            if m.write_at not in WRITE_POINTS:
                raise MemcoreError(f"{where}: {type(m).__name__}.write_at = {m.write_at!r}, expected "
                                   f"one of {', '.join(WRITE_POINTS)}")


def build_models(recipe: Recipe, dataset) -> Models:
    """G, D, EMA G, augmentation and losses, with weights drawn from ``train.seed``."""
    torch.manual_seed(recipe.train.seed)
    G = build_network(recipe, dataset, "generator")
    D = build_network(recipe, dataset, "discriminator")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if recipe.ema.enabled else None
    ctx = base_context(recipe, dataset)
    augment = make_component("augment", recipe.augment, attrs.evolve(ctx, role="augment")) \
        if recipe.augment is not None else None
    if augment is not None and applies_to(augment) not in AUGMENT_TARGETS:
        raise MemcoreError(f"augment '{recipe.augment.kind}': applies_to = "
                           f"{applies_to(augment)!r}, expected one of "
                           f"{', '.join(map(repr, AUGMENT_TARGETS))}")
    losses = [make_component("loss", spec, attrs.evolve(ctx, role=f"losses[{i}]"))
              for i, spec in enumerate(recipe.losses)]
    models = Models(G=G, D=D, G_ema=G_ema, augment=augment, losses=losses)
    for m in models.modules_with("on_build", include_ema=True):
        m.on_build(models)
    return models


def build_metrics(recipe: Recipe, dataset) -> list:
    ctx = attrs.evolve(base_context(recipe, dataset), role="metrics")
    return [make_component("metric", spec, attrs.evolve(ctx, role=f"metrics[{i}]"))
            for i, spec in enumerate(recipe.metrics)]
