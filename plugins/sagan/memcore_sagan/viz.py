"""``memcore viz attention RUN``: where each self-attention layer looks (SAGAN Fig. 1/5 style).

For a few generated images and a few query points, every attention layer of G (run while
generating) and of D (run on the generated image) contributes one panel: the image in grey with
the attention row of that query, upsampled from the layer's key grid, as a heat map on top.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

import memcore

from .attention import record_attention
from .runs import load_networks

COLOURS = ("#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#a65628")


def parse_points(texts) -> list[tuple[float, float]]:
    points = []
    for text in texts:
        try:
            y, x = (float(v) for v in text.split(","))
        except ValueError:
            raise memcore.MemcoreError(f"--points {text!r}: expected Y,X fractions, e.g. 0.25,0.5") \
                from None
        if not (0 <= y < 1 and 0 <= x < 1):
            raise memcore.MemcoreError(f"--points {text!r}: fractions must lie in [0, 1)")
        points.append((y, x))
    return points


@torch.no_grad()
def attention_maps(G, D, n: int, seed: int, nets: str):
    """(images (n, C, R, R) in [-1, 1], [(label, maps (n, H, W, Hk, Wk))]) for every layer run."""
    latents = G.sample_latent(n, torch.Generator().manual_seed(seed), "cpu")
    with record_attention(G) as g_layers:
        images = G(**latents)
    with record_attention(D) as d_layers:
        D(images, latents.get("c"))
    layers = []
    if nets in ("G", "both"):
        layers += [(f"G {layer.at}px", maps) for layer, maps in g_layers]
    if nets in ("D", "both"):
        layers += [(f"D {layer.at}px", maps) for layer, maps in d_layers]
    return images, layers


def heat(maps: torch.Tensor, point, side: int) -> torch.Tensor:
    """The attention row of one query point, (n, side, side), each image scaled to [0, 1]."""
    h, w = maps.shape[1:3]
    row = maps[:, int(point[0] * h), int(point[1] * w)]              # (n, Hk, Wk)
    up = F.interpolate(row[:, None], size=(side, side), mode="nearest")[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    return (up - lo) / (hi - lo).clamp_min(1e-12)


def render(images, layers, points, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, side = images.shape[0], images.shape[-1]
    grey = memcore.to_uint8(images).float().mean(1) / 255            # (n, R, R)
    rgb = memcore.to_uint8(images).permute(0, 2, 3, 1)
    rgb = rgb.expand(-1, -1, -1, 3) if rgb.shape[-1] == 1 else rgb
    panels = [(label, maps, k, p) for label, maps in layers for k, p in enumerate(points)]
    cols = 1 + len(panels)
    fig, axes = plt.subplots(n, cols, figsize=(1.8 * cols, 1.9 * n), squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(rgb[i].numpy())
        for k, (y, x) in enumerate(points):
            ax.scatter([x * side], [y * side], s=30, c=COLOURS[k % len(COLOURS)], edgecolors="white")
        ax.set_title("sample" if i == 0 else "", fontsize=8)
        for j, (label, maps, k, (y, x)) in enumerate(panels, start=1):
            ax = axes[i, j]
            ax.imshow(grey[i].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.imshow(heat(maps, (y, x), side)[i].numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            ax.scatter([x * side], [y * side], s=30, c=COLOURS[k % len(COLOURS)], edgecolors="white")
            ax.set_title(label if i == 0 else "", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with memcore.safewrite.replacing(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


def handler(args) -> int:
    points = parse_points(args.points)
    G, D, state = load_networks(args.run, args.step, use_ema=not args.no_ema)
    images, layers = attention_maps(G, D, args.n, args.seed, args.nets)
    if not layers:
        raise memcore.MemcoreError(f"{args.run}: no self-attention layer in "
                                   f"{'G or D' if args.nets == 'both' else args.nets}")
    out = render(images, layers, points, Path(args.out))
    print(f"attention of {len(layers)} layer(s) at {len(points)} point(s), step {state['step']} -> {out}")
    return 0
