"""EMA generator: parameters (and floating buffers) averaged; memory state copied verbatim."""
from __future__ import annotations

import torch
from torch import nn

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
