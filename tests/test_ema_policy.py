"""The EMA generator's policy for memories: buffers (what write() changes) are copied verbatim,
parameters (a memory learned by gradient, like MFH's M) are averaged like every other weight."""
import torch
from torch import nn

import memcore
from memcore.ema import update_ema


class LearnedMemory(memcore.Memory):
    learns_by_gradient = True

    def __init__(self):
        super().__init__()
        self.slots = nn.Parameter(torch.zeros(3, 2))
        self.register_buffer("recent", torch.zeros(3))


def test_memory_buffers_are_copied_and_parameters_averaged():
    G, G_ema = nn.Sequential(LearnedMemory()), nn.Sequential(LearnedMemory())
    with torch.no_grad():
        G[0].slots.fill_(1.0)
        G[0].recent.fill_(4.0)
    update_ema(G_ema, G, decay=0.75, average_buffers=True)
    assert torch.equal(G_ema[0].slots, torch.full((3, 2), 0.25))  # 0.75 * 0 + 0.25 * 1
    assert torch.equal(G_ema[0].recent, torch.full((3,), 4.0))    # verbatim, never blended
