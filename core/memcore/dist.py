"""Small distributed facade: works unchanged with one process (no torch.distributed group)."""
from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def launch_rank() -> int:
    """This process's rank, also before the process group exists (the launcher's ``RANK``)."""
    return rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (rows along dim 0, any count per rank) from every rank, in rank order.

    Every rank gets the same result. Not differentiable: used for memory writes and metrics.
    """
    if not is_distributed():
        return x
    counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    tdist.all_gather(counts, torch.tensor([x.shape[0]], device=x.device))
    counts = [int(c) for c in counts]
    pad = max(counts) - x.shape[0]
    padded = torch.cat([x, x.new_zeros((pad,) + tuple(x.shape[1:]))]) if pad else x
    chunks = [torch.empty_like(padded) for _ in counts]
    tdist.all_gather(chunks, padded.contiguous())
    return torch.cat([c[:n] for c, n in zip(chunks, counts)])


def broadcast_rows(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``x`` on every rank (shapes may differ before the call)."""
    if not is_distributed():
        return x
    shape = torch.tensor(list(x.shape), dtype=torch.long, device=x.device)
    ndim = torch.tensor([x.dim()], device=x.device)
    tdist.broadcast(ndim, src)
    if shape.numel() != int(ndim):
        shape = torch.zeros(int(ndim), dtype=torch.long, device=x.device)
    tdist.broadcast(shape, src)
    out = x if rank() == src else torch.empty(tuple(shape.tolist()), dtype=x.dtype, device=x.device)
    tdist.broadcast(out, src)
    return out


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    x = x.clone()
    tdist.all_reduce(x)
    return x / world_size()


def any_rank(flag: bool, device="cpu") -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    tdist.all_reduce(t)
    return bool(t.item() > 0)


def gather_object(obj) -> list:
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out
