"""The Memory protocol: state outside autograd, read separately from written.

A memory is an ``nn.Module`` whose state lives in registered buffers (so checkpoints, device moves
and the EMA generator carry it; nothing in plain attributes). Reading happens in ``forward`` (or any
method) with gradients flowing to the query only, unless the class declares
``learns_by_gradient = True`` (a memory whose slots are parameters trained through the read,
such as a learned class-prototype codebook). Writing changes buffers only, never a parameter, and
is two-step:

1. During a forward pass the memory calls ``self.stage(name=tensor, ...)`` with the rows it wants to
   write (keys, values, labels; dim 0 indexes items), under the same names at every call before a
   commit. Nothing changes yet, and nothing is staged in eval mode unless ``write_in_eval`` is set.
2. At the declared point of the step (``write_at``) the core commits: it applies the distributed
   policy ``sync`` to the staged rows, then calls ``write(items, generator)`` under ``no_grad``.
   Rows staged after that point (say, in the G phase of a memory written ``after_D``) are dropped
   at the end of the step, so no pending write is ever carried across a checkpoint; a memory that
   wants every row of the step declares ``write_at = "after_step"``.

``sync`` is implemented here once, for every plugin:

* ``"gather"``: rows from all ranks are concatenated in rank order; every rank writes all of them,
  so memories stay identical and no rank's data is lost (the default).
* ``"local"``: each rank writes its own rows (memories diverge; for per-rank caches only).

``generator`` is a ``torch.Generator`` seeded from the memory's write counter, identical on all
ranks, for any randomness in ``write`` (random slot replacement); resumed runs draw the same
numbers because the counter is a buffer.
"""
from __future__ import annotations

import math
from typing import ClassVar, Iterable

import torch
from torch import nn

from . import dist

SYNC_POLICIES = ("gather", "local")
WRITE_POINTS = ("forward", "after_D", "after_G", "after_step")


class Memory(nn.Module):
    sync: ClassVar[str] = "gather"
    write_at: ClassVar[str] = "after_D"
    # True for a memory whose parameters are learned by gradient through its read (a learned
    # codebook): the contracts then allow gradients to reach them. Either way write() changes
    # buffers only, and the EMA generator averages a memory's parameters like any weight while
    # copying its buffers verbatim.
    learns_by_gradient: ClassVar[bool] = False

    def __init__(self, *, write_in_eval: bool = False, seed: int = 0):
        super().__init__()
        self.write_in_eval = write_in_eval
        self.register_buffer("write_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("write_seed", torch.tensor(int(seed), dtype=torch.long))
        self._staged: list[dict[str, torch.Tensor]] = []  # transient: emptied at every commit

    # -- to implement -------------------------------------------------------------------------
    def write(self, items: dict[str, torch.Tensor], generator: torch.Generator) -> None:
        """Apply a write. ``items`` are the staged rows after the sync policy; runs under no_grad."""
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Numbers for the log (slot usage, entropy, dead slots, ...); cheap, no side effects."""
        return {}

    # -- provided -----------------------------------------------------------------------------
    @property
    def writes_enabled(self) -> bool:
        return self.training or self.write_in_eval

    def stage(self, **items: torch.Tensor) -> None:
        """Queue rows for the next commit (no-op when writes are disabled). The rows are
        detached: no autograd history reaches ``write()``. Every ``stage()`` before a commit
        names the same rows (they are concatenated name by name for ``write``)."""
        if not self.writes_enabled:
            return
        if self._staged and set(items) != set(self._staged[0]):
            raise ValueError(f"{type(self).__name__}.stage({', '.join(sorted(items))}): every "
                             "stage() before a commit must name the same rows as the first one "
                             f"({', '.join(sorted(self._staged[0]))}), since write() gets them "
                             "concatenated name by name; stage every name in each call")
        self._staged.append({k: v.detach() for k, v in items.items()})
        if self.write_at == "forward":
            self.commit()

    def commit(self) -> None:
        """Apply the sync policy to everything staged and write it. Every rank must call this."""
        staged, self._staged = self._staged, []
        local = _concat(staged)
        if self.sync not in SYNC_POLICIES:
            raise ValueError(f"{type(self).__name__}.sync = {self.sync!r}; expected one of "
                             f"{SYNC_POLICIES}")
        has_any = dist.any_rank(bool(local), device=self.write_count.device)
        if not has_any:
            return
        if self.sync == "local":
            items = local
        else:
            names = _agreed_names(local)
            items = {}
            for name in names:
                mine = local.get(name)
                if mine is None:
                    raise RuntimeError(f"{type(self).__name__}: rank {dist.rank()} staged no "
                                       f"'{name}' rows while another rank did")
                items[name] = dist.gather_rows(mine)
        if not items:
            return
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(self.write_seed) * 1_000_003 + int(self.write_count))
        with torch.no_grad():
            self.write(items, generator)
        self.write_count += 1

    def discard_staged(self) -> None:
        self._staged = []


def _concat(staged: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not staged:
        return {}
    names = staged[0].keys()
    return {n: torch.cat([s[n] for s in staged]) for n in names}


def _agreed_names(local: dict) -> list[str]:
    everyone = dist.gather_object(sorted(local))
    names = sorted(set().union(*map(set, everyone)))
    return names


def memories_in(*modules: nn.Module) -> dict[str, Memory]:
    """Every Memory inside the given modules, by qualified name (``G.blocks.16.memory``)."""
    out = {}
    for prefix, root in zip(("G", "D", "aug"), modules):
        if root is None:
            continue
        for name, m in root.named_modules():
            if isinstance(m, Memory):
                out[f"{prefix}.{name}" if name else prefix] = m
    return out


def commit_all(memories: Iterable[Memory], point: str) -> None:
    for m in memories:
        if m.write_at == point:
            m.commit()


def slot_statistics(usage: torch.Tensor) -> dict[str, float]:
    """Usage statistics of a memory from per-slot hit counts (or weights).

    ``used``: slots with any hit; ``dead``: slots with none; ``entropy``: of the normalised usage in
    nats (log of the number of slots when uniform); ``perplexity``: exp(entropy).
    """
    usage = usage.detach().float().flatten()
    total = usage.sum()
    used = int((usage > 0).sum())
    if total <= 0:
        return {"used": 0.0, "dead": float(usage.numel()), "entropy": 0.0, "perplexity": 0.0}
    p = usage / total
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {"used": float(used), "dead": float(usage.numel() - used), "entropy": entropy,
            "perplexity": math.exp(entropy)}
