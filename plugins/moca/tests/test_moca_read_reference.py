"""The MoCA block's read equals, within 1e-6, a frozen copy of the read it replaced (commit
67f4c61: chunks of 64 columns indexed by (chunk, row) pairs, β unpacked to (B, N, T) for both
softmaxes) on fixed batches: the block's output, the gradients of a loss to the input and to
every parameter, H, the routed cells, β and Ŝ, for both softmaxes, both memory paths and both
routings, at a tiny size and at the benchmark's 32 x 256 memory on 4 x 64 x 16 x 16."""
from typing import NamedTuple

import pytest
import torch

import memcore
from memcore_moca.moca import MocaBlock, MocaOptions

ATOL = 1e-6


# -- the frozen read (reference only) ---------------------------------------------------------
class FrozenGroups(NamedTuple):
    chunk_id: torch.Tensor
    slot: torch.Tensor
    protos: torch.Tensor
    size: int

    def pack(self, rows):
        packed = rows.new_zeros(len(self.protos), self.size, rows.shape[-1])
        return packed.index_put((self.chunk_id, self.slot), rows)

    def unpack(self, packed):
        return packed[self.chunk_id, self.slot]


def frozen_group(mem, cell, chunk=64):
    flat = cell.reshape(-1)
    L, M = len(flat), mem.num_cells
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=M)
    chunks_per_cell = (counts + chunk - 1) // chunk
    first_chunk = torch.cumsum(chunks_per_cell, 0) - chunks_per_cell
    first_column = torch.cumsum(counts, 0) - counts
    sorted_cell = flat[order]
    rank = torch.arange(L) - first_column[sorted_cell]
    chunk_id, slot = torch.empty_like(flat), torch.empty_like(flat)
    chunk_id[order] = first_chunk[sorted_cell] + rank // chunk
    slot[order] = rank % chunk
    chunk_cell = torch.repeat_interleave(torch.arange(M), chunks_per_cell)
    protos = mem.prototypes.view(M, mem.size, -1)[chunk_cell]
    return FrozenGroups(chunk_id, slot, protos, chunk)


def frozen_logits(query, groups):
    packed = groups.pack(query.reshape(-1, query.shape[-1]))
    scores = packed @ groups.protos.transpose(1, 2)
    return groups.unpack(scores).view(*query.shape[:-1], -1)


def frozen_read(attn, groups):
    packed = groups.pack(attn.reshape(-1, attn.shape[-1]))
    return groups.unpack(packed @ groups.protos).view(*attn.shape[:-1], -1)


def frozen_attend(block, x):
    """(H, cell, β, Ŝ) as MocaBlock.attend computed them."""
    query = block.theta(x).flatten(2).transpose(1, 2)
    use_memory = block.memory is not None and bool(block.memory.ready)
    use_context = block.paths != "moca"
    logits, values = [], []
    cell = None
    if use_memory:
        cell = block.memory.route(query)
        groups = frozen_group(block.memory, cell)
        logits.append(frozen_logits(query, groups))
        values.append(groups)
    if use_context:
        key = block.phi(x).flatten(2)
        value = block.psi(x).flatten(2).transpose(1, 2)
        logits.append(query @ key)
        values.append(value)
    if not logits:
        return torch.zeros_like(query), None, None, None
    if block.softmax == "joint":
        sizes = [l.shape[-1] for l in logits]
        attn = list(torch.cat(logits, -1).softmax(-1).split(sizes, -1))
    else:
        attn = [l.softmax(-1) for l in logits]
    read = 0
    memory_attn = context_attn = None
    if use_memory:
        memory_attn = attn.pop(0)
        read = read + frozen_read(memory_attn, values.pop(0))
    if use_context:
        context_attn = attn.pop(0)
        read = read + context_attn @ values.pop(0)
    return read, cell, memory_attn, context_attn


def frozen_forward(block, x):
    b, _, h, w = x.shape
    read = frozen_attend(block, x)[0]
    return x + block.gamma * block.out(read.transpose(1, 2).reshape(b, -1, h, w))


# -- fixed batches ----------------------------------------------------------------------------
def warmed_block(channels, res, cells, prototypes, **options):
    """A block whose memory was filled and clustered from one batch (ready), γ = 0.7."""
    torch.manual_seed(0)
    ctx = memcore.BuildContext(resolution=res, channels=channels, seed=0)
    block = MocaBlock(MocaOptions(at=res, cells=cells, prototypes=prototypes, warmup=1,
                                  **options), ctx).train()
    block(torch.randn(8, channels, res, res))
    block.memory.commit()
    assert bool(block.memory.ready)
    with torch.no_grad():
        block.gamma.fill_(0.7)
    return block


def output_and_gradients(forward, block, x):
    """The output and the gradients of a fixed non-trivial loss to x and every parameter."""
    x = x.clone().requires_grad_(True)
    block.zero_grad()
    y = forward(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), x.grad, [None if p.grad is None else p.grad.clone()
                                for p in block.parameters()]


SIZES = {"tiny": (8, 4, 3, 5, 2), "bench": (64, 16, 32, 256, 4)}  # C, side, M, T, batch


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("routing", ["euclidean", "fastgan-code"])
@pytest.mark.parametrize("paths", ["both", "moca"])
@pytest.mark.parametrize("softmax", ["separate", "joint"])
def test_block_read_equals_the_frozen_read(softmax, paths, routing, size):
    channels, res, cells, prototypes, batch = SIZES[size]
    block = warmed_block(channels, res, cells, prototypes, softmax=softmax, paths=paths,
                         routing=routing)
    x = torch.randn(batch, channels, res, res, generator=torch.Generator().manual_seed(1))
    y, x_grad, grads = output_and_gradients(block, block, x)
    ref_y, ref_x_grad, ref_grads = output_and_gradients(lambda x: frozen_forward(block, x),
                                                        block, x)
    torch.testing.assert_close(y, ref_y, rtol=0, atol=ATOL)
    torch.testing.assert_close(x_grad, ref_x_grad, rtol=0, atol=ATOL)
    for g, ref_g in zip(grads, ref_grads):
        if ref_g is None:  # φ in the memory-only path: no gradient either way
            assert g is None
        else:
            torch.testing.assert_close(g, ref_g, rtol=0, atol=ATOL)
    with torch.no_grad():
        att, ref = block.attend(x), frozen_attend(block, x)
    assert torch.equal(att.cell, ref[1])
    for got, expected in zip((att.read, att.memory_attn, att.context_attn),
                             (ref[0], ref[2], ref[3])):
        if expected is None:
            assert got is None
        else:
            torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)
