"""SAGAN self-attention as a memcore block (Zhang et al. 2019, eq. 1-3).

    q = W_q x  (C -> C/8)      k = W_k x  (C -> C/8)      v = W_v x  (C -> C/value_ratio)
    attention[i, j] = softmax_j(q_i . k_j)          -- no 1/sqrt(d) scaling in SAGAN
    o_i = W_o sum_j attention[i, j] v_j             -- W_o only with out_projection
    y = gamma * o + x,  gamma initialised at 0      -- the block starts as the identity

Defaults follow the SAGAN paper / heykeetae code (biased 1x1 convs, value at full width, no output
projection, no pooling, no spectral norm on the projections). The BigGAN/MoCA "SA" variant is
``value_ratio = 2`` (BigGAN; MoCA uses 8), ``out_projection = true``, ``pool_keys = true``,
``spectral_norm = true``, ``bias = false``.

The fused path uses ``scaled_dot_product_attention(scale=1.0)``; the explicit bmm + softmax path is
kept because it returns the attention maps (``record_attention`` below, used by ``memcore viz
attention`` and the tests).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn

import memcore
from memcore import option, positive


@memcore.config
class SelfAttentionOptions(memcore.BlockOptions):
    qk_ratio: int = option(8, help="Query/key channels are C / qk_ratio (SAGAN: 8).", check=positive)
    value_ratio: int = option(1, help="Value channels are C / value_ratio (SAGAN code: 1, BigGAN: "
                              "2, MoCA: 8); > 1 needs out_projection.", check=positive)
    out_projection: bool = option(False, help="1x1 output conv from the value channels back to C "
                                  "(SAGAN paper, BigGAN).")
    pool_keys: bool = option(False, help="2x2 max-pool keys and values (BigGAN): N x N/4 maps.")
    spectral_norm: bool = option(False, help="Spectral norm on the projections (BigGAN).")
    bias: bool = option(True, help="Biases on the 1x1 projections (SAGAN code: yes, BigGAN: no).")
    fused: bool = option(True, help="Use scaled_dot_product_attention; the explicit path is "
                         "used anyway while attention maps are recorded.")


def conv1x1(cin: int, cout: int, bias: bool, spectral: bool) -> nn.Module:
    conv = nn.Conv2d(cin, cout, 1, bias=bias)
    return sn(conv) if spectral else conv


class SelfAttention(nn.Module):
    def __init__(self, options: SelfAttentionOptions, ctx: memcore.BuildContext):
        super().__init__()
        o = options
        channels = ctx.channels
        where = ctx.role or "block"
        if channels // o.qk_ratio < 1 or channels // o.value_ratio < 1:
            raise memcore.MemcoreError(
                f"{where}: {channels} channels at {o.at} px leave no query/value channels with "
                f"qk_ratio = {o.qk_ratio}, value_ratio = {o.value_ratio}")
        if o.value_ratio != 1 and not o.out_projection:
            raise memcore.MemcoreError(
                f"{where}.value_ratio = {o.value_ratio}: values narrower than the input need "
                "out_projection = true to map them back to the input channels")
        qk, value = channels // o.qk_ratio, channels // o.value_ratio
        self.query = conv1x1(channels, qk, o.bias, o.spectral_norm)
        self.key = conv1x1(channels, qk, o.bias, o.spectral_norm)
        self.value = conv1x1(channels, value, o.bias, o.spectral_norm)
        self.out = conv1x1(value, channels, o.bias, o.spectral_norm) if o.out_projection \
            else nn.Identity()
        self.gamma = nn.Parameter(torch.zeros(()))
        self.pool_keys, self.fused = o.pool_keys, o.fused
        self.at = o.at
        self.recording: list | None = None   # set by record_attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        source = F.max_pool2d(x, 2) if self.pool_keys else x
        q = self.query(x).flatten(2).transpose(1, 2)           # (B, N, C/8)
        k = self.key(source).flatten(2).transpose(1, 2)        # (B, M, C/8)
        v = self.value(source).flatten(2).transpose(1, 2)      # (B, M, Cv)
        if self.recording is not None or not self.fused:
            attention = torch.softmax(q @ k.transpose(1, 2), dim=-1)   # (B, N, M), rows sum to 1
            if self.recording is not None:
                key_side = source.shape[-2:]
                self.recording.append((self, attention.detach().view(b, h, w, *key_side)))
            o = attention @ v                                   # (B, N, Cv)
        else:
            o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]
        o = o.transpose(1, 2).reshape(b, -1, h, w)             # (B, Cv, H, W)
        return x + self.gamma * self.out(o)


@contextmanager
def record_attention(*nets: nn.Module) -> Iterator[list]:
    """Collect ``(layer, maps (B, H, W, Hk, Wk))`` from every SelfAttention run inside the block.

    ``maps[b, y, x]`` is where query position (y, x) of image b looks, over the (pooled) key grid.
    """
    found: list = []
    layers = [m for net in nets for m in net.modules() if isinstance(m, SelfAttention)]
    for layer in layers:
        layer.recording = found
    try:
        yield found
    finally:
        for layer in layers:
            layer.recording = None
