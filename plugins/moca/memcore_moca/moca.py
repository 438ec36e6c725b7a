"""Memory Concept Attention (MoCA, Li et al. 2022): prototype memory + self-attention in one block.

A feature map A (B, C, H, W) is projected by 1x1 convolutions to a reduced dimension d:
queries θ(A), keys φ(A), values ψ(A). Two reads are made per position (a "column"):

* H_m, memory: the column picks its nearest semantic cell K_i (Euclidean, §4.2), then attends over
  that cell's T prototype cells E^(i) (β = softmax of E^(i)ᵀ a); the read is E^(i) β. Cost
  O(N·T·d), plus O(N·M·d) for the routing — never O(N·M·T).
* H_s, context: ordinary self-attention over the H·W positions of the same image (Ŝ, §4.3).

H = H_m + H_s, by default with the two softmaxes of the paper (§4.2–4.4, Algorithm 1; the FastGAN
code does the same); one joint softmax over [prototypes | positions] is the authors' lsGAN code.
Output: A + γ·O(H) with γ = 0 at start.

The memory is written from a momentum copy φ̃ of φ: each column of φ̃(A) replaces one random
prototype of its nearest cell, and the cell means are recomputed. Before that, a warm-up fills the
pool with random columns and forms the cells by k-means (torch, seeded from the memory's write
generator). Options reproduce the FastGAN code where it differs: cosine/dot-product routing, slot
momentum (cp_momentum), φ̃ following φ on every forward.
"""
from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

import memcore
from memcore import in_range, option, positive


@memcore.config
class MocaOptions(memcore.BlockOptions):
    paths: Literal["both", "moca", "sa"] = option(
        "both", help="Reads used: memory + self-attention (the paper), memory only, or "
        "self-attention only (the SA baseline; no memory is built).")
    softmax: Literal["separate", "joint"] = option(
        "separate", help="separate: β over the cell's T prototypes and Ŝ over the H·W positions, "
        "reads summed, H = H_m + H_s (the paper, §4.2-4.4 and Algorithm 1; also the FastGAN "
        "code); joint: one softmax over [prototypes | positions] (the authors' lsGAN code).")
    routing: Literal["euclidean", "fastgan-code"] = option(
        "euclidean", help="Nearest semantic cell for reads and writes: euclidean (the paper, "
        "§4.1-4.2); fastgan-code: reads by cosine similarity of θ(A) to the cells, writes by raw "
        "dot product of φ̃(A) with them (the authors' FastGAN code).")
    dim: Optional[int] = option(None, help="Reduced dimension d of θ, φ, ψ (None: channels // 2, "
                                "at least 8; the code uses 128).", check=positive)
    cells: int = option(32, help="Semantic cells M (paper 32, Table 6's best row; code 10).",
                        check=positive)
    prototypes: int = option(256, help="Prototype cells T per semantic cell (paper 256, Table 6; "
                             "code 100).", check=positive)
    momentum: float = option(0.999, help="Momentum m of the key encoder: φ̃ <- m·φ̃ + (1-m)·φ "
                             "(paper 0.999, §4.1; code 0.6-0.95; 0 = no momentum, Table 4).",
                             check=in_range(0.0, 1.0, hi_open=True))  # 1: φ̃ would never move
    key_update: Literal["g-step", "forward"] = option(
        "g-step", help="When φ̃ follows φ: g-step, once per G optimizer step, i.e. each time φ "
        "has changed (our reading of §4.1 and Algorithm 1); forward: on every forward that writes "
        "the memory once the cells are formed, D-phase and G-phase forwards alike (the FastGAN "
        "code, cp_phi_momentum).")
    slot_momentum: float = option(
        1.0, help="A routed write sets the slot to (1-s)·slot + s·key: 1 = plain replacement "
        "(the paper, §4.1); below 1 the FastGAN code's cp_momentum (its scripts use 1).",
        check=lambda v: None if 0 < v <= 1 else "a number in (0, 1]")
    warmup: int = option(200, help="Memory writes (one per training step) that only fill the pool; "
                         "the cells are then formed by k-means and the memory read from the next "
                         "step on (the paper gives no warm-up; the FastGAN code: 2000 forward "
                         "calls).", check=positive)
    kmeans_iters: int = option(50, help="Lloyd iterations of the warm-up k-means.", check=positive)
    write_in_eval: bool = option(False, help="Also write in eval mode (the code writes on every "
                                 "call, sampling included).")


def nearest(rows: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centre (Euclidean) for every row, and the squared distance to it."""
    # (N, d), (M, d) -> (N, M) without materialising differences
    dist = rows.pow(2).sum(1, keepdim=True) - 2 * rows @ centres.T + centres.pow(2).sum(1)
    d2, idx = dist.min(dim=1)
    return idx, d2.clamp_min(0)


# read rule, write rule per `routing` option
ROUTING = {"euclidean": ("euclidean", "euclidean"), "fastgan-code": ("cosine", "dot")}


def assign(rows: torch.Tensor, centres: torch.Tensor, rule: str) -> torch.Tensor:
    """Index of the closest centre of every row: smallest Euclidean distance, or largest cosine
    similarity / raw dot product."""
    if rule == "euclidean":
        return nearest(rows, centres)[0]
    if rule == "cosine":
        rows, centres = F.normalize(rows, dim=1), F.normalize(centres, dim=1)
    return (rows @ centres.T).argmax(1)


def kmeans(points: torch.Tensor, k: int, iters: int, generator: torch.Generator):
    """Lloyd's k-means with k-means++ seeding. Returns (centroids (k, d), assignment (N,))."""
    n = points.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = points[first:first + 1]
    for _ in range(1, k):  # k-means++: next seed drawn with probability ∝ squared distance
        _, d2 = nearest(points, centroids)
        weights = d2 if d2.sum() > 0 else torch.ones_like(d2)
        pick = torch.multinomial(weights.cpu(), 1, generator=generator).to(points.device)
        centroids = torch.cat([centroids, points[pick]])
    assign = nearest(points, centroids)[0]
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        new_assign = nearest(points, centroids)[0]
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return centroids, assign


def last_writer(slots: torch.Tensor, num_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For slots hit by several rows, keep the last row (deterministic, unlike indexed assignment).

    Returns (slots written, index of the row written into each).
    """
    rows = torch.arange(len(slots), device=slots.device)
    winner = torch.full((num_slots,), -1, dtype=torch.long, device=slots.device)
    winner.scatter_reduce_(0, slots, rows, reduce="amax")
    hit = (winner >= 0).nonzero().squeeze(1)
    return hit, winner[hit]


class MomentumEncoder(nn.Module):
    """φ̃: a 1x1 convolution whose weight is a buffer (saved, moved by .to(), outside autograd)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())

    def forward(self, x):
        return F.conv2d(x, self.weight)

    @torch.no_grad()
    def follow(self, source: torch.Tensor, momentum: float) -> None:
        self.weight.mul_(momentum).add_(source.detach(), alpha=1.0 - momentum)


class PrototypeMemory(memcore.Memory):
    """M semantic cells × T prototype cells of dimension d, written from φ̃(A).

    Buffers: ``prototypes`` (M·T, d), cell-contiguous (cell i owns rows i·T ... i·T+T-1);
    ``cells`` (M, d), always the mean of their prototypes once ``ready``; usage counters for stats.
    """

    sync, write_at = "gather", "after_step"

    def __init__(self, phi_weight: torch.Tensor, cells: int, prototypes: int, warmup: int,
                 kmeans_iters: int, write_in_eval: bool = False, seed: int = 0,
                 routing: str = "euclidean", slot_momentum: float = 1.0):
        super().__init__(write_in_eval=write_in_eval, seed=seed)
        dim = phi_weight.shape[0]
        self.num_cells, self.size, self.warmup, self.kmeans_iters = cells, prototypes, warmup, \
            kmeans_iters
        self.read_rule, self.write_rule = ROUTING[routing]
        self.slot_momentum = slot_momentum
        self.key_encoder = MomentumEncoder(phi_weight)
        self.register_buffer("prototypes", torch.zeros(cells * prototypes, dim))
        self.register_buffer("cells", torch.zeros(cells, dim))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("warmup_writes", torch.zeros((), dtype=torch.long))
        self.register_buffer("slot_writes", torch.zeros(cells * prototypes, dtype=torch.long))
        self.register_buffer("cell_reads", torch.zeros(cells, dtype=torch.long))
        self.register_buffer("route_distance", torch.zeros(()))

    # -- read ---------------------------------------------------------------------------------
    def route(self, queries: torch.Tensor) -> torch.Tensor:
        """Semantic cell of every query row (..., d) -> (...), by the read rule."""
        flat = queries.detach().reshape(-1, queries.shape[-1])
        return assign(flat, self.cells, self.read_rule).view(queries.shape[:-1])

    def group(self, cell: torch.Tensor, chunk: int = 32) -> "Groups":
        """Pack the columns routed to each cell into chunks of ``chunk`` rows, so that the read is a
        batched matmul of (chunks, chunk, d) by each chunk's own (T, d) prototypes: cost
        O((L + M·chunk)·T·d) for L columns, never O(L·M·T), and T·d gathered per chunk, not per
        column. A column's packed row: its cell's first chunk times ``chunk`` plus its rank among
        the cell's columns. 32 rows: padding is up to chunk - 1 rows per cell, and at 32 cells
        x 256 on 4 x 16 x 16 columns (32 a cell on average) 64 nearly doubled the rows."""
        flat = cell.reshape(-1)
        L, M = len(flat), self.num_cells
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=M)
        chunks_per_cell = (counts + chunk - 1) // chunk
        first_chunk = torch.cumsum(chunks_per_cell, 0) - chunks_per_cell
        first_column = torch.cumsum(counts, 0) - counts
        sorted_cell = flat[order]
        rank = torch.arange(L, device=flat.device) - first_column[sorted_cell]
        position = torch.empty_like(flat)
        position[order] = first_chunk[sorted_cell] * chunk + rank
        chunk_cell = torch.repeat_interleave(torch.arange(M, device=flat.device), chunks_per_cell)
        protos = self.prototypes.view(M, self.size, -1).index_select(0, chunk_cell)  # (K, T, d)
        return Groups(position, protos, chunk)

    def logits(self, query: torch.Tensor, groups: "Groups") -> torch.Tensor:
        """aᵀE^(i) for every column over its own cell's prototypes, packed: (B, N, d) ->
        (K, S, T); a chunk's rows past its columns are padding (zero logits, never read)."""
        packed = groups.pack(query.reshape(-1, query.shape[-1]))               # (K, S, d)
        return packed @ groups.protos.transpose(1, 2)

    def read(self, attn: torch.Tensor, groups: "Groups") -> torch.Tensor:
        """E^(i) β for every column: packed β (K, S, T) -> (L, d) in column order."""
        return groups.unpack(attn @ groups.protos)

    # -- write --------------------------------------------------------------------------------
    def encode_keys(self, features: torch.Tensor) -> torch.Tensor:
        """φ̃(A) as rows: (B, C, H, W) -> (B·H·W, d)."""
        with torch.no_grad():
            keys = self.key_encoder(features.detach())
        return keys.flatten(2).transpose(1, 2).reshape(-1, keys.shape[1])

    def write(self, items, generator):
        keys = items["key"].to(self.prototypes.dtype)
        if not bool(self.ready):
            self._fill(keys, generator)
            return
        cell = assign(keys, self.cells, self.write_rule)
        distance = (keys - self.cells[cell]).norm(dim=1).mean()
        offset = torch.randint(self.size, (len(keys),), generator=generator).to(cell.device)
        self._store(keys, cell * self.size + offset, self.slot_momentum)
        self.cells.copy_(self.prototypes.view(self.num_cells, self.size, -1).mean(1))
        self.route_distance.copy_(distance)
        if "read_cell" in items:
            self.cell_reads += torch.bincount(items["read_cell"], minlength=self.num_cells)

    def _store(self, keys, slots, momentum=1.0):
        hit, row = last_writer(slots, len(self.prototypes))
        # momentum < 1: every writer blends into the slot's old value; the last one is kept
        self.prototypes[hit] = keys[row] if momentum == 1 else \
            torch.lerp(self.prototypes[hit], keys[row], momentum)
        self.slot_writes[hit] += 1

    def _fill(self, keys, generator):
        """Warm-up: random slots anywhere; on the last warm-up write, form the cells."""
        slots = torch.randint(len(self.prototypes), (len(keys),), generator=generator)
        self._store(keys, slots.to(keys.device))
        self.warmup_writes += 1
        if int(self.warmup_writes) >= self.warmup:
            self.form_cells(generator)

    def form_cells(self, generator):
        """k-means over the filled slots; each cluster's members fill its T slots (a random subset
        when it has more than T, cycled in random order when fewer; an empty cluster holds copies of
        its centroid). The memory is read from the next forward on."""
        filled = self.slot_writes > 0
        points = self.prototypes[filled] if int(filled.sum()) >= self.num_cells else self.prototypes
        n, M, T = len(points), self.num_cells, self.size
        centroids, assign = kmeans(points, M, self.kmeans_iters, generator)
        # group members by cluster, random order inside each group
        shuffle = torch.randperm(n, generator=generator).to(points.device)
        order = shuffle[torch.sort(assign[shuffle], stable=True).indices]
        counts = torch.bincount(assign, minlength=M)                          # (M,)
        starts = torch.cumsum(counts, 0) - counts                              # (M,)
        within = torch.arange(T, device=points.device)[None] % counts.clamp_min(1)[:, None]
        members = points[order[(starts[:, None] + within).clamp_max(n - 1)]]   # (M, T, d)
        members = torch.where(counts[:, None, None] > 0, members, centroids[:, None])
        self.prototypes.copy_(members.reshape(M * T, -1))
        self.cells.copy_(members.mean(1))
        self.slot_writes.zero_()
        self.ready.fill_(True)

    # -- introspection ------------------------------------------------------------------------
    def stats(self):
        if not bool(self.ready):
            return {"warmup_progress": float(self.warmup_writes) / self.warmup,
                    "filled": float((self.slot_writes > 0).float().mean())}
        reads = memcore.slot_statistics(self.cell_reads)
        writes = memcore.slot_statistics(self.slot_writes)
        return {"cells_used": reads["used"], "cells_dead": reads["dead"],
                "routing_entropy": reads["entropy"], "prototypes_dead": writes["dead"],
                "route_distance": float(self.route_distance)}


class Groups(NamedTuple):
    position: torch.Tensor   # (L,) packed row (chunk · size + row in chunk) of every column
    protos: torch.Tensor     # (K, T, d) prototypes of each chunk's cell
    size: int                # rows per chunk

    # index_copy / index_select on one flat index: their backward passes are index_select /
    # index_add, several times cheaper on CPU than those of 2-index index_put / indexing.
    def pack(self, rows: torch.Tensor) -> torch.Tensor:
        """(L, w) column rows -> (K, S, w), zero padding rows."""
        packed = rows.new_zeros(len(self.protos) * self.size, rows.shape[-1])
        return packed.index_copy(0, self.position, rows).view(len(self.protos), self.size, -1)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(K, S, w) -> (L, w) in column order."""
        return packed.reshape(-1, packed.shape[-1]).index_select(0, self.position)


class Attention(NamedTuple):
    read: torch.Tensor                     # H (B, N, d)
    cell: Optional[torch.Tensor]           # routed cell per position (B, N), or None
    memory_attn: Optional[torch.Tensor]    # β over the cell's prototypes (B, N, T), or None
    context_attn: Optional[torch.Tensor]   # Ŝ over positions (B, N, N), or None


def conv1x1(cin, cout):
    return nn.Conv2d(cin, cout, 1, bias=False)


class MocaBlock(nn.Module):
    def __init__(self, options: MocaOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        channels = ctx.channels
        dim = o.dim or max(8, channels // 2)
        self.paths, self.softmax, self.momentum = o.paths, o.softmax, o.momentum
        self.key_update = o.key_update
        self.theta = conv1x1(channels, dim)
        self.phi = conv1x1(channels, dim)
        self.psi = conv1x1(channels, dim) if o.paths != "moca" else None
        self.out = conv1x1(dim, channels)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.memory = None if o.paths == "sa" else PrototypeMemory(
            self.phi.weight, o.cells, o.prototypes, o.warmup, o.kmeans_iters,
            write_in_eval=o.write_in_eval, seed=ctx.seed, routing=o.routing,
            slot_momentum=o.slot_momentum)
        # memory-only: φ feeds φ̃ but gets no gradient, θ none during warm-up
        self.ddp_find_unused = o.paths == "moca"

    def attend(self, x: torch.Tensor, weights: bool = True) -> Attention:
        """H and the routing; ``weights``: also β as (B, N, T) (the forward needs H only, and
        the memory path computes β packed by cell, (K, S, T))."""
        b, _, h, w = x.shape
        query = self.theta(x).flatten(2).transpose(1, 2)                  # (B, N, d)
        use_memory = self.memory is not None and bool(self.memory.ready)
        use_context = self.paths != "moca"
        if not (use_memory or use_context):  # memory-only block still warming up: no modulation
            return Attention(torch.zeros_like(query), None, None, None)
        cell = memory_attn = context_attn = None
        if use_memory:
            cell = self.memory.route(query)                                # (B, N)
            groups = self.memory.group(cell)
            memory_logits = self.memory.logits(query, groups)              # (K, S, T)
        if use_context:
            key = self.phi(x).flatten(2)                                   # (B, d, N)
            value = self.psi(x).flatten(2).transpose(1, 2)                 # (B, N, d)
            context_logits = query @ key                                   # (B, N, N)
        if use_memory and use_context and self.softmax == "joint":
            # one softmax over [prototypes | positions] per column: β has to be unpacked for it
            unpacked = groups.unpack(memory_logits).view(b, h * w, -1)      # (B, N, T)
            joint = torch.cat([unpacked, context_logits], -1).softmax(-1)
            memory_attn, context_attn = joint.split([unpacked.shape[-1], h * w], -1)
            packed_attn = groups.pack(memory_attn.reshape(b * h * w, -1))  # (K, S, T)
        else:  # the paper's separate softmaxes; β stays packed (its padding rows are not read)
            packed_attn = memory_logits.softmax(-1) if use_memory else None
            context_attn = context_logits.softmax(-1) if use_context else None
        read = 0
        if use_memory:
            read = read + self.memory.read(packed_attn, groups).view(b, h * w, -1)
            if weights and memory_attn is None:
                memory_attn = groups.unpack(packed_attn).view(b, h * w, -1)
        if use_context:
            read = read + context_attn @ value
        return Attention(read, cell, memory_attn, context_attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        att = self.attend(x, weights=False)
        if self.memory is not None and self.memory.writes_enabled:
            staged = {"key": self.memory.encode_keys(x)}
            if att.cell is not None:
                staged["read_cell"] = att.cell.reshape(-1)
            self.memory.stage(**staged)
            if self.key_update == "forward" and bool(self.memory.ready):
                self.memory.key_encoder.follow(self.phi.weight, self.momentum)
        modulation = self.out(att.read.transpose(1, 2).reshape(b, -1, h, w))
        return x + self.gamma * modulation

    def after_phase(self, ctx) -> None:
        """φ̃ follows φ once per G optimizer step (identical on every rank, like φ)."""
        if self.memory is not None and self.key_update == "g-step" and ctx.pass_name == "G":
            self.memory.key_encoder.follow(self.phi.weight, self.momentum)
