"""The Fast Weight Painter generator (Irie & Schmidhuber, ICLR 2023, sec. 3.1).

    (x_1..x_T) = InputGenerator(z)          v1: x_t = z (+ a learned step embedding)
                                            v2: z -> T chunks of d_in -> shared linear to d_in'
    (h_1..h_T) = LSTM(x_1..x_T)             optional z -> initial (h_0, c_0) of every layer
    [k, v, b]_t = W_slow h_t                per channel: key (width), value (height), lr (1 or height)
    W_t = rule(W_{t-1}, softmax(k), v, sigmoid(b))       see painting.py
    image = tanh(W_T)                       (optional tanh)

The generator registered as ``fpa`` holds everything in ``self.painter`` so that a stage-1 run's
weights are ``painter.*`` and load unchanged into the ``fpa-unet`` generator of stage 2.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import nn

import memcore
from memcore import option, positive

from .painting import paint, paint_loop, paint_steps


@memcore.config
class FPAOptions:
    z_dim: int = option(128, help="d_latent: size of z.", check=positive)
    steps: int = option(16, help="T: painting steps (rank-one updates per channel).",
                        check=positive)
    input_generator: Literal["v1", "v2"] = option(
        "v2", help="v1: the same z at every step; v2: z -> T chunks -> shared linear layer.")
    step_embedding: bool = option(False, help="v1 only: add a learned per-step embedding to z "
                                  "(the code's --use_pos_enc).")
    mini_latent_dim: int = option(8, help="v2: d_in, the size of each of the T chunks of z.",
                                  check=positive)
    input_tanh: bool = option(False, help="v2: tanh on the chunks (the code's --v2_input_sigmoid "
                              "applies tanh despite its name).")
    input_dim: int = option(128, help="v2: d_in', the shared linear layer's output (LSTM input).",
                            check=positive)
    hidden: int = option(256, help="d_hidden: LSTM hidden size.", check=positive)
    layers: int = option(1, help="L: LSTM layers.", check=positive)
    latent_to_init: bool = option(True, help="A linear map from z to every layer's initial "
                                  "(h, c); otherwise they start at zero.")
    rule: Literal["delta", "hebbian", "oja", "oja-softmax"] = option(
        "delta", help="Learning rule: delta (eq. 9, the paper's), hebbian (purely additive, lr 1), "
        "oja (W += lr v (k - W^T v)^T, Oja's subspace rule) or oja-softmax (the authors' code's "
        "variant: W += lr v softmax(k - W^T v)^T, the key softmax applied again to the corrected "
        "key; step 1, W = 0, writes v softmax(k)^T).")
    first_step_outer: bool = option(True, help="Step 1 writes the plain outer product v k^T "
                                    "(learning rate 1), as the authors' code does.")
    vector_lr: bool = option(False, help="One learning rate per canvas row instead of one per "
                             "channel and step (the code's --vect_lr; delta rule only).")
    value_tanh: bool = option(False, help="tanh on the values (the code's --val_tanh).")
    value_norm: bool = option(False, help="Scale each value to unit L2 norm (keeps Oja's rule "
                              "stable: it diverges when lr * |v|^2 > 2).")
    out_tanh: bool = option(True, help="tanh on the final canvas.")
    height: Optional[int] = option(None, help="Canvas height = value size (default: the data "
                                   "resolution).", check=positive)
    width: Optional[int] = option(None, help="Canvas width = key size (default: the data "
                                  "resolution).", check=positive)
    painting: Literal["fast", "loop"] = option(
        "fast", help="fast: all steps at once (triangular solve, see painting.py); loop: step by "
        "step (the reference; also used for vector learning rates, where it is faster).")


def check_painter_options(o: FPAOptions, where: str = "generator") -> None:
    if o.vector_lr and o.rule != "delta":
        raise memcore.MemcoreError(f"{where}.vector_lr = true needs {where}.rule = \"delta\" "
                                   f"(got {o.rule!r})")
    if o.step_embedding and o.input_generator != "v1":
        raise memcore.MemcoreError(f"{where}.step_embedding = true is for "
                                   f"{where}.input_generator = \"v1\"")


class InputGeneratorV1(nn.Module):
    """x_t = z at every step, plus an optional learned embedding of t."""

    def __init__(self, z_dim: int, steps: int, step_embedding: bool):
        super().__init__()
        self.steps, self.out_dim = steps, z_dim
        self.step_embedding = nn.Parameter(torch.randn(steps, z_dim) * 0.1) if step_embedding \
            else None

    def forward(self, z):                                   # (B, d_latent) -> (B, T, d_latent)
        x = z[:, None, :].expand(-1, self.steps, -1)
        return x + self.step_embedding if self.step_embedding is not None else x


class InputGeneratorV2(nn.Module):
    """z -> T chunks of d_in (optional tanh) -> one linear layer shared by all steps -> d_in'."""

    def __init__(self, z_dim: int, steps: int, chunk: int, out_dim: int, tanh: bool):
        super().__init__()
        self.steps, self.chunk, self.out_dim, self.tanh = steps, chunk, out_dim, tanh
        self.to_chunks = nn.Linear(z_dim, steps * chunk)
        self.shared = nn.Linear(chunk, out_dim)
        nn.init.kaiming_normal_(self.shared.weight)         # as the authors' code

    def forward(self, z):                                   # (B, d_latent) -> (B, T, d_in')
        chunks = self.to_chunks(z).view(z.shape[0], self.steps, self.chunk)
        return self.shared(chunks.tanh() if self.tanh else chunks)


class SequenceProcessor(nn.Module):
    """An L-layer LSTM, its initial state optionally a linear function of z."""

    def __init__(self, in_dim: int, hidden: int, layers: int, z_dim: int, latent_to_init: bool):
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True)
        self.to_state = nn.Linear(z_dim, 2 * hidden * layers) if latent_to_init else None
        if self.to_state is not None:
            nn.init.kaiming_normal_(self.to_state.weight)

    def forward(self, x, z):                                # (B, T, d_in) -> (B, T, d_hidden)
        state = None
        if self.to_state is not None:
            h0, c0 = self.to_state(z).view(z.shape[0], 2, self.layers, self.hidden) \
                .permute(1, 2, 0, 3).contiguous()           # each (L, B, H)
            state = (h0, c0)
        out, _ = self.lstm(x, state)
        return out


class UpdateNet(nn.Module):
    """W_slow: h_t -> per channel (key, value, learning-rate logits), then phi and sigma."""

    def __init__(self, hidden: int, channels: int, height: int, width: int, o: FPAOptions):
        super().__init__()
        self.channels, self.height, self.width = channels, height, width
        self.lr_dim = 0 if o.rule == "hebbian" else (height if o.vector_lr else 1)
        self.o = o
        out = channels * (width + height + self.lr_dim)
        self.slow = nn.Linear(hidden, out)
        bound = 1 / math.sqrt(out)                          # the code's init: bound from the output width
        nn.init.uniform_(self.slow.weight, -bound, bound)
        nn.init.uniform_(self.slow.bias, -bound, bound)

    def forward(self, h):
        """h (B, T, H) -> keys (B, C, T, width), values (B, C, T, height), lrs (B, C, T, lr_dim)."""
        b, t = h.shape[:2]
        kvb = self.slow(h).view(b, t, self.channels, -1).transpose(1, 2)   # (B, C, T, S_k+S_v+lr)
        keys, values, lr_logits = kvb.split([self.width, self.height, self.lr_dim], dim=-1)
        keys = keys.softmax(dim=-1)
        if self.o.value_tanh:
            values = values.tanh()
        if self.o.value_norm:
            values = nn.functional.normalize(values, dim=-1)
        if self.lr_dim == 0:
            return keys, values, None
        lrs = lr_logits.sigmoid()
        if self.o.first_step_outer:                         # W_1 = v_1 k_1^T: learning rate 1
            lrs = torch.cat([torch.ones_like(lrs[:, :, :1]), lrs[:, :, 1:]], dim=2)
        return keys, values, lrs


class Painter(nn.Module):
    """z -> image (B, C, height, width) as a sum of T rank-one updates per channel."""

    def __init__(self, o: FPAOptions, channels: int, height: int, width: int):
        super().__init__()
        check_painter_options(o)
        self.o = o
        if o.input_generator == "v1":
            self.inputs = InputGeneratorV1(o.z_dim, o.steps, o.step_embedding)
        else:
            self.inputs = InputGeneratorV2(o.z_dim, o.steps, o.mini_latent_dim, o.input_dim,
                                           o.input_tanh)
        self.sequence = SequenceProcessor(self.inputs.out_dim, o.hidden, o.layers, o.z_dim,
                                          o.latent_to_init)
        self.update = UpdateNet(o.hidden, channels, height, width, o)

    def strokes(self, z):
        """The per-step (keys, values, learning rates), each (B, C, T, size)."""
        return self.update(self.sequence(self.inputs(z), z))

    def finish(self, canvas):
        return canvas.tanh() if self.o.out_tanh else canvas

    def canvas(self, z):
        """W_T before the output tanh: (B, C, height, width)."""
        keys, values, lrs = self.strokes(z)
        fast = self.o.painting == "fast" and not self.o.vector_lr
        return (paint if fast else paint_loop)(keys, values, lrs, self.o.rule)

    def forward(self, z):
        return self.finish(self.canvas(z))

    @torch.no_grad()
    def steps(self, z):
        """(rank-one updates, canvases before the output tanh), each (B, C, T, height, width)."""
        return paint_steps(*self.strokes(z), self.o.rule)


def painter_shape(o: FPAOptions, ctx: memcore.BuildContext) -> tuple[int, int]:
    return o.height or ctx.resolution, o.width or ctx.resolution


def check_canvas(o: FPAOptions, resolution: int, where: str) -> None:
    """In a run the canvas is the generated image, which D compares with the data's images: a
    canvas of another shape (the painter alone supports any) could never be trained."""
    for key in ("height", "width"):
        side = getattr(o, key)
        if side is not None and side != resolution:
            raise memcore.MemcoreError(
                f"{where}.{key} = {side}: the canvas is the generated image, but the data's images "
                f"are {resolution} x {resolution} px (leave {where}.height and {where}.width out)")


class FPA(memcore.Generator):
    """The ``fpa`` generator: a Painter and nothing else."""

    def __init__(self, options: FPAOptions, ctx: memcore.BuildContext):
        super().__init__()
        self.z_dim, self.num_classes = options.z_dim, 0
        self.painter = Painter(options, ctx.channels, *painter_shape(options, ctx))
        self.data_side, self.where = ctx.resolution, ctx.role or "generator"

    def on_build(self, models) -> None:
        check_canvas(self.painter.o, self.data_side, self.where)

    def forward(self, z):
        return self.painter(z)

