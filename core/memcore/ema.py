"""EMA generator: parameters (and floating buffers) averaged; memory state copied verbatim.

The policy for a :class:`~memcore.memory.Memory`: its buffers (what ``write()`` changes) are copied,
so the EMA generator reads exactly the memory G has; its parameters, if any, are learned by
gradient (``learns_by_gradient = True``, a learned codebook) and averaged like every other weight. A
``write()`` that changed a parameter would be averaged with stale copies of itself, which is why
the memory contract ``write-into-buffers`` refuses it.
"""
from __future__ import annotations

import torch
from torch import nn

from . import dist
from .memory import Memory


def _memory_buffer_names(module: nn.Module) -> set[str]:
    names = set()
    for prefix, m in module.named_modules():
        if isinstance(m, Memory):
            names |= {f"{prefix}.{n}" if prefix else n for n, _ in m.named_buffers()}
    return names


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, average_buffers: bool) -> None:
    """``ema <- decay * ema + (1 - decay) * model``; ``decay=0`` copies."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    memory_buffers = _memory_buffer_names(model)
    for (name, b_ema), b in zip(ema.named_buffers(), model.buffers()):
        if average_buffers and b.is_floating_point() and name not in memory_buffers:
            b_ema.lerp_(b, 1.0 - decay)
        else:
            b_ema.copy_(b)


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """All-reduce-average floating buffers outside memories (BatchNorm statistics) across ranks.

    DDP runs with ``broadcast_buffers=False`` so that memory writes are not overwritten by rank 0;
    running statistics would then drift apart per rank. One flat all-reduce per step keeps them
    identical (the mean of the per-rank statistics, as SyncBatchNorm's would be).
    """
    if not dist.is_distributed():
        return
    skip = _memory_buffer_names(module)
    buffers = [b for n, b in module.named_buffers() if b.is_floating_point() and n not in skip]
    if not buffers:
        return
    flat = dist.all_reduce_mean(torch.cat([b.reshape(-1).double() for b in buffers]))
    offset = 0
    for b in buffers:
        b.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()
