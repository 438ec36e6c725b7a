"""``memcore eval RUN --feature-noise ...`` (the paper's Table 5) and ``memcore viz moca RUN``
(cluster maps, top-3 decomposition, prototype gallery, attention sharpening; Figs. 4, 5, 8, 9b).

Heavy imports happen inside the handlers so the CLI starts fast.
"""
from __future__ import annotations

import json
from pathlib import Path

FEATURE_NOISE_HELP = ("MoCA Table 5: comma-separated noise levels σ; Gaussian noise σ·std(x) is "
                      "added to the feature map entering every moca block while samples are "
                      "generated, and every metric is reported per level (with --repeats).")
VIZ_HELP = "MoCA concept maps: cluster maps, top-3 clusters, prototype gallery, attention curve."


def _run_args(p):
    p.add_argument("run", help="Run directory or checkpoint file.")
    p.add_argument("--checkpoint", choices=["latest", "best"], default="latest")


def load_run(run: str, which: str = "latest"):
    """(EMA G in eval mode, dataset, state) of a run."""
    import memcore
    loaded = memcore.load_run(run, which)
    return loaded.G, loaded.dataset(), loaded.state


def moca_blocks(G):
    import memcore
    from .moca import MocaBlock
    blocks = [m for m in G.modules() if isinstance(m, MocaBlock)]
    if not blocks:
        raise memcore.MemcoreError("this run's generator has no moca block ([[generator.blocks]] "
                                   "kind = \"moca\")")
    return blocks


def _noise_hook(sigma: float, generator):
    import torch

    def add_noise(module, inputs):
        (x,) = inputs
        scale = x.std(dim=(1, 2, 3), keepdim=True)
        noise = torch.randn(x.shape, generator=generator).to(x)
        return (x + sigma * scale * noise,)
    return add_noise


def parse_levels(text: str) -> list[float]:
    """``--feature-noise`` (an argparse type): noise levels σ, each a finite number >= 0."""
    import argparse
    from memcore.cliargs import finite_float
    level = finite_float(0, 1000)
    try:
        levels = [level(v) for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError as exc:
        levels, problem = [], f"; one level: {exc}"
    else:
        problem = ""
    if not levels:
        raise argparse.ArgumentTypeError(f"expected noise levels separated by commas, e.g. "
                                         f"1,0.7,0.5,0.3,0, got {text!r}{problem}")
    return levels


def feature_noise_variants(G, levels: list[float]) -> list:
    """``memcore eval`` variants (MoCA Table 5): Gaussian noise σ·std(x)·N(0, I), std per sample,
    added to the feature map entering every moca block while samples are generated."""
    import contextlib
    import torch
    blocks = moca_blocks(G) if any(sigma > 0 for sigma in levels) else []  # level 0: plain

    def variant(sigma):
        @contextlib.contextmanager
        def noisy(repeat):
            gen = torch.Generator().manual_seed(1000 * repeat + 17)
            hooks = [b.register_forward_pre_hook(_noise_hook(sigma, gen)) for b in blocks] \
                if sigma > 0 else []
            try:
                yield
            finally:
                for h in hooks:
                    h.remove()
        return noisy
    return [(f"feature_noise={sigma:g}", variant(sigma)) for sigma in levels]


# -- visualisation ----------------------------------------------------------------------------
def viz_args(p):
    from memcore.cliargs import count, out_folder, seed64
    _run_args(p)
    p.add_argument("--n", type=count(1, 256), default=8, help="Generated images to analyse.")
    p.add_argument("--seed", type=seed64, default=0)
    p.add_argument("--prototypes", type=count(1, 256), default=8,
                   help="Rows of the prototype gallery.")
    p.add_argument("--patches", type=count(1, 256), default=8, help="Patches per prototype.")
    p.add_argument("--out", type=out_folder, help="Output folder (default: RUN/viz-moca).")


def palette(k: int):
    import torch
    hue = torch.arange(k) / max(k, 1)
    # HSV (h, 1, 1) -> RGB, enough to tell cells apart
    channels = [((hue * 6 + shift) % 6 - 3).abs().sub(1).clamp(0, 1) for shift in (0, 4, 2)]
    return torch.stack(channels, 1)                                           # (k, 3)


def capture(G, block, latents):
    """The feature map entering ``block`` and G's images for ``latents``."""
    import torch
    seen = {}
    hook = block.register_forward_pre_hook(lambda m, inp: seen.__setitem__("x", inp[0]))
    try:
        with torch.no_grad():
            images = G(**latents)
    finally:
        hook.remove()
    return seen["x"], images


def viz(args) -> int:
    import torch
    import torch.nn.functional as F
    from torchvision.utils import save_image
    from memcore import safewrite
    G, _, state = load_run(args.run, args.checkpoint)
    block = moca_blocks(G)[0]
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent.parent
    out = safewrite.folder(Path(args.out) if args.out else run_dir / "viz-moca",
                           inside=None if args.out else run_dir)

    def save(images, name, nrow):
        with safewrite.replacing(out / name) as tmp:
            save_image(images, tmp, nrow=nrow)
    latents = G.sample_latent(args.n, torch.Generator().manual_seed(args.seed), "cpu")
    x, images = capture(G, block, latents)
    with torch.no_grad():
        att = block.attend(x)
    rgb = images.add(1).div(2).clamp(0, 1)
    rgb = rgb.repeat(1, 3, 1, 1) if rgb.shape[1] == 1 else rgb
    b, _, h, w = x.shape
    R = rgb.shape[-1]
    summary = {"step": state["step"], "block_resolution": h, "images": args.n}
    if att.context_attn is not None:  # Fig. 9b: rank-ordered self-attention weights
        ranked = att.context_attn.sort(dim=-1, descending=True).values.mean(dim=(0, 1))
        summary["context_attention_ranked"] = [float(v) for v in ranked[:64]]
    if att.cell is None:
        safewrite.write_text(out / "summary.json", json.dumps(summary, indent=2))
        print(f"no memory read in this block (paths = 'sa' or still warming up); "
              f"attention curve -> {out / 'summary.json'}")
        return 0
    memory = block.memory
    cells = att.cell.view(b, h, w)
    # Fig. 4: every position coloured by its semantic cell, over the image
    colours = palette(memory.num_cells)[cells].permute(0, 3, 1, 2)            # (B, 3, h, w)
    overlay = 0.5 * rgb + 0.5 * F.interpolate(colours, size=R, mode="nearest")
    save(torch.cat([rgb, overlay]), "clusters.png", b)
    # Fig. 8: binary masks of each image's three most used cells
    rows = []
    for i in range(b):
        counts = torch.bincount(cells[i].flatten(), minlength=memory.num_cells)
        top = counts.topk(min(3, memory.num_cells)).indices
        masks = [(cells[i] == c).float()[None, None] for c in top]
        rows += [rgb[i:i + 1]] + [F.interpolate(m, size=R, mode="nearest").repeat(1, 3, 1, 1)
                                  for m in masks]
    save(torch.cat(rows), "top3.png", 1 + min(3, memory.num_cells))
    # Fig. 5: for the prototypes receiving most attention, the patches attending to them most
    T = memory.size
    slot = att.cell[..., None] * T + torch.arange(T)                           # (B, N, T)
    mass = torch.zeros(memory.num_cells * T).index_add_(0, slot.flatten(),
                                                        att.memory_attn.flatten())
    top_protos = mass.topk(min(args.prototypes, len(mass))).indices
    stride = R // h
    half = stride  # receptive-field proxy: a window twice the stride around the position
    padded = F.pad(rgb, (half, half, half, half))
    gallery = []
    for p in top_protos:
        weight = torch.where(slot == p, att.memory_attn, torch.zeros(())).sum(-1).flatten()
        picks = weight.topk(args.patches).indices
        for flat in picks:
            img, pos = divmod(int(flat), h * w)
            r, c = divmod(pos, w)
            top, left = r * stride, c * stride
            gallery.append(padded[img, :, top:top + stride + 2 * half,
                                  left:left + stride + 2 * half])
    save(torch.stack(gallery), "prototypes.png", args.patches)
    usage = torch.bincount(att.cell.flatten(), minlength=memory.num_cells)
    summary.update({"cell_usage": usage.tolist(), "top_prototypes": top_protos.tolist(),
                    "memory_stats": memory.stats()})
    safewrite.write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"clusters.png, top3.png, prototypes.png, summary.json -> {out}")
    return 0
