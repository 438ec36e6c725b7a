"""Features of fake and real images, sharded over ranks and gathered; real features cached on disk.

The cache key holds everything the features depend on — dataset and its options, split,
resolution, channels, sample count, a hash of the very images, extractor, weights sha256, resize
and preprocessing — so a cached file is never stale (torch-fidelity's own key ignores the weights).
"""
from __future__ import annotations

import hashlib
import json
import os
import typing
import warnings
import weakref
from pathlib import Path

import attrs
import torch

import memcore
from memcore import dist

CACHE_FORMAT = 1
SHUFFLE_SEED = 2024  # the order of memcore's MetricSession.real, so both paths pick the same images


def cache_root(option: str | None) -> Path:
    if option:
        return Path(option).expanduser()
    base = os.environ.get("MEMCORE_CACHE")
    return Path(base) / "fidelity" if base else Path.home() / ".cache" / "memcore" / "fidelity"


# -- which rows this rank extracts ----------------------------------------------------------------
def shard(n: int) -> range:
    per = -(-n // dist.world_size())
    return range(min(n, dist.rank() * per), min(n, (dist.rank() + 1) * per))


def _extract_rows(extractor, batches, device, empty_shape) -> dict[str, torch.Tensor]:
    """Extract this rank's batches, then gather every rank's rows in rank order."""
    parts = [extractor.extract(b, device) for b in batches]
    if not parts:  # this rank has no rows: shapes from one blank image, zero rows of it
        blank = extractor.extract(torch.zeros((1,) + tuple(empty_shape), dtype=torch.uint8), device)
        parts = [{k: v[:0] for k, v in blank.items()}]
    local = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return {k: dist.gather_rows(v.to(device)).cpu() for k, v in local.items()}


# -- fake ---------------------------------------------------------------------------------------
_FAKE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def fake_features(session, extractor, n: int) -> dict[str, torch.Tensor]:
    """Features of ``n`` EMA samples (each rank generates its share); shared by the metrics that
    use the same extractor in one evaluation, so fid + kid + prc generate once."""
    per_session = _FAKE.setdefault(session, {})
    key = (extractor.cache_id(), n)
    if key not in per_session:
        shape = (session.dataset.channels, session.dataset.resolution, session.dataset.resolution)
        per_session[key] = _extract_rows(extractor, session.generate(n), session.device, shape)
    return per_session[key]


# -- real ---------------------------------------------------------------------------------------
@attrs.frozen
class Reference:
    """The real images of a metric and the facts that identify them."""

    images: torch.Tensor        # uint8 (N, C, H, W)
    dataset: str                # registry name of the dataset
    dataset_options: dict
    split: str

    def describe(self) -> str:
        c, h = self.images.shape[1], self.images.shape[2]
        return f"{self.dataset} split={self.split} {h}px {c}ch"


def check_reference_split(spec, split: str, where: str) -> None:
    """A reference split other than 'train' must be a split the recipe's dataset (``spec``, its
    [data] component) has; found when the metric is built, so before step 1."""
    if split == "train" or spec is None:
        return
    fields = attrs.fields_dict(attrs.resolve_types(type(spec.options)))
    if "split" not in fields:
        raise memcore.MemcoreError(f"{where}.reference_split = '{split}': dataset '{spec.kind}' "
                                   "has no split option; use reference_split = 'train'")
    splits = typing.get_args(fields["split"].type)
    if splits and split not in splits:
        raise memcore.MemcoreError(f"{where}.reference_split = '{split}': dataset '{spec.kind}' "
                                   f"has the splits {', '.join(map(repr, splits))}")


def reference_images(session, split: str, n: int, where: str) -> Reference:
    """``n`` real images: the run's training data (``split='train'``) or another split of the
    same dataset, in a fixed shuffled order. Warns when fewer than ``n`` exist."""
    recipe = getattr(session, "recipe", None)
    spec = recipe.data if recipe is not None else None
    kind = spec.kind if spec is not None else getattr(session.dataset, "description", "images")
    options = attrs.asdict(spec.options) if spec is not None else {}
    if split == "train":
        dataset, used_split = session.dataset, options.get("split", "train")
    else:
        if spec is None:
            raise memcore.MemcoreError(f"{where}.reference_split = '{split}': no recipe names "
                                       f"the dataset ('{kind}'); use reference_split = 'train'")
        check_reference_split(spec, split, where)
        ds_options = attrs.evolve(spec.options, split=split, limit=None)
        entry = memcore.get_registry().get("dataset", kind)
        dataset = entry.load_factory()(ds_options, memcore.BuildContext(resolution=0, channels=0,
                                                                        role="data"))
        options, used_split = attrs.asdict(ds_options), split
    if n > len(dataset):
        warnings.warn(f"{where}: {n} reference images asked, the {kind} {used_split} set has "
                      f"{len(dataset)}; using {len(dataset)}", stacklevel=3)
        n = len(dataset)
    if split == "train":
        images = session.real(n)
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SHUFFLE_SEED))[:n]
        images = dataset.images[order] if getattr(dataset, "images", None) is not None else \
            torch.stack([memcore.to_uint8(dataset[int(i)][0]) for i in order])
    return Reference(images.contiguous(), kind, options, used_split)


def reference_key(ref: Reference, extractor_protocol: dict, weights_sha256: str) -> tuple[dict, str]:
    """The cache key (a readable dict) and its digest."""
    key = {
        "format": CACHE_FORMAT,
        "dataset": ref.dataset,
        "dataset_options": ref.dataset_options,
        "split": ref.split,
        "resolution": int(ref.images.shape[-1]),
        "channels": int(ref.images.shape[1]),
        "count": int(ref.images.shape[0]),
        "images_sha256": hashlib.sha256(ref.images.numpy().tobytes()).hexdigest(),
        "extractor": extractor_protocol["extractor"],
        "resize": extractor_protocol["resize"],
        "preprocessing": extractor_protocol["preprocessing"],
        "weights_sha256": weights_sha256,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return key, digest


_MEMORY: dict[str, dict] = {}  # digest -> features, so evaluations every N steps skip the disk
MEMORY_ENTRIES = 4


def reference_features(ref: Reference, extractor, device, cache_dir: Path) -> tuple[dict, str]:
    """Features of the reference images, from memory, the disk cache or extraction (sharded)."""
    key, digest = reference_key(ref, extractor.protocol(), extractor.weights_sha256())
    if digest in _MEMORY:
        return _MEMORY[digest], digest
    path = cache_dir / (f"{ref.dataset}-{ref.split}-{key['resolution']}px-{key['extractor']}-"
                        f"{key['count']}-{digest[:16]}.pt")
    cached = _load(path, key) if dist.is_main() else None
    if dist.any_rank(cached is not None):
        names = sorted(cached) if dist.is_main() else None
        names = dist.gather_object(names)[0]
        features = {k: dist.broadcast_rows((cached[k] if cached else torch.empty(0)).to(device)).cpu()
                    for k in names}
    else:
        mine = shard(len(ref.images))
        batches = [ref.images[mine.start:mine.stop]] if len(mine) else []
        features = _extract_rows(extractor, batches, device, ref.images.shape[1:])
        if dist.is_main():
            _save(path, key, features)
    while len(_MEMORY) >= MEMORY_ENTRIES:  # oldest first: reference features can be large
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[digest] = features
    return features, digest


def _load(path: Path, key: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = memcore.load_tensors(path, what="reference feature cache")
    except memcore.MemcoreError as exc:  # a truncated file from a killed run, or a planted one
        warnings.warn(f"ignoring unreadable reference cache: {exc}", stacklevel=2)
        return None
    if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    return data["features"]


def _save(path: Path, key: dict, features: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"key": json.loads(json.dumps(key, default=str)), "features": features}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole file
