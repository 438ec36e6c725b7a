"""Commands: ``memcore moca-robustness RUN`` (the paper's Table 5) and ``memcore viz moca RUN``
(cluster maps, top-3 decomposition, prototype gallery, attention sharpening; Figs. 4, 5, 8, 9b).

Heavy imports happen inside the handlers so the CLI starts fast.
"""
from __future__ import annotations

import json
from pathlib import Path

ROBUSTNESS_HELP = ("Feature-noise robustness (MoCA Table 5): Gaussian noise added to the feature "
                   "map entering every moca block at inference; FID/KID per level over repeats.")
VIZ_HELP = "MoCA concept maps: cluster maps, top-3 clusters, prototype gallery, attention curve."


def _run_args(p):
    p.add_argument("run", help="Run directory or checkpoint file.")
    p.add_argument("--checkpoint", choices=["latest", "best"], default="latest")


def robustness_args(p):
    _run_args(p)
    p.add_argument("--feature-noise", default="1,0.7,0.5,0.3,0",
                   help="Noise levels σ (relative to each sample's feature std), comma-separated.")
    p.add_argument("--repeats", type=int, default=3, help="Repeats per level (mean ± std).")
    p.add_argument("--num-samples", type=int, default=500, help="Generated images per repeat.")
    p.add_argument("--num-real", type=int, default=1000, help="Real images for the reference.")
    p.add_argument("--extractor", default="efficientnet-lite0",
                   help="Feature extractor of the fid/kid metrics (a registered extractor).")


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


def robustness(args) -> int:
    """FID/KID of the EMA generator per noise level, through the registered ``fid``/``kid`` metrics
    (the metrics plugin: torch-fidelity on the chosen extractor, cached real statistics)."""
    import torch
    import memcore
    levels = [float(v) for v in args.feature_noise.split(",") if v.strip()]
    G, dataset, state = load_run(args.run, args.checkpoint)
    blocks = moca_blocks(G) if any(sigma > 0 for sigma in levels) else []  # level 0: plain FID
    counts = {"num_samples": args.num_samples, "num_real": args.num_real,
              "extractor": args.extractor}
    metrics = [memcore.build_component("metric", {"kind": k, **counts}, where="moca-robustness")
               for k in ("fid", "kid")]
    for m in metrics:
        m.preflight()
    rows, protocol = [], {}
    for sigma in levels:
        fids, kids = [], []
        for repeat in range(args.repeats):
            noise_gen = torch.Generator().manual_seed(1000 * repeat + 17)
            hooks = [b.register_forward_pre_hook(_noise_hook(sigma, noise_gen)) for b in blocks] \
                if sigma > 0 else []
            session = memcore.MetricSession(G, dataset, "cpu", None, state["step"], seed=repeat)
            try:
                fid, kid = (m.compute(session) for m in metrics)
            finally:
                for h in hooks:
                    h.remove()
            fids.append(fid["fid"])
            kids.append(kid["kid"])
            protocol = {k: v for k, v in fid.items() if isinstance(v, str)}
        t_f, t_k = torch.tensor(fids), torch.tensor(kids)
        row = {"noise": sigma, "fid_mean": float(t_f.mean()), "fid_std": float(t_f.std()) if
               len(fids) > 1 else 0.0, "kid_mean": float(t_k.mean()),
               "kid_std": float(t_k.std()) if len(kids) > 1 else 0.0, "fid": fids, "kid": kids}
        rows.append(row)
        print(f"noise {sigma:<5} FID {row['fid_mean']:8.2f} ± {row['fid_std']:.2f}   "
              f"KID {row['kid_mean']:.4f} ± {row['kid_std']:.4f}   ({args.extractor})", flush=True)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent.parent
    target = run_dir / f"moca-robustness-step-{state['step']:07d}.json"
    target.write_text(json.dumps({"step": state["step"], "protocol": protocol,
                                  "repeats": args.repeats,
                                  "noise": "x + σ·std(x)·N(0, I), std per sample",
                                  "levels": rows}, indent=2))
    print(f"-> {target}")
    return 0


# -- visualisation ----------------------------------------------------------------------------
def viz_args(p):
    _run_args(p)
    p.add_argument("--n", type=int, default=8, help="Generated images to analyse.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prototypes", type=int, default=8, help="Rows of the prototype gallery.")
    p.add_argument("--patches", type=int, default=8, help="Patches per prototype.")
    p.add_argument("--out", default=None, help="Output folder (default: RUN/viz-moca).")


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
    G, _, state = load_run(args.run, args.checkpoint)
    block = moca_blocks(G)[0]
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent.parent
    out = Path(args.out) if args.out else run_dir / "viz-moca"
    out.mkdir(parents=True, exist_ok=True)
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
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"no memory read in this block (paths = 'sa' or still warming up); "
              f"attention curve -> {out / 'summary.json'}")
        return 0
    memory = block.memory
    cells = att.cell.view(b, h, w)
    # Fig. 4: every position coloured by its semantic cell, over the image
    colours = palette(memory.num_cells)[cells].permute(0, 3, 1, 2)            # (B, 3, h, w)
    overlay = 0.5 * rgb + 0.5 * F.interpolate(colours, size=R, mode="nearest")
    save_image(torch.cat([rgb, overlay]), out / "clusters.png", nrow=b)
    # Fig. 8: binary masks of each image's three most used cells
    rows = []
    for i in range(b):
        counts = torch.bincount(cells[i].flatten(), minlength=memory.num_cells)
        top = counts.topk(min(3, memory.num_cells)).indices
        masks = [(cells[i] == c).float()[None, None] for c in top]
        rows += [rgb[i:i + 1]] + [F.interpolate(m, size=R, mode="nearest").repeat(1, 3, 1, 1)
                                  for m in masks]
    save_image(torch.cat(rows), out / "top3.png", nrow=1 + min(3, memory.num_cells))
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
    save_image(torch.stack(gallery), out / "prototypes.png", nrow=args.patches)
    usage = torch.bincount(att.cell.flatten(), minlength=memory.num_cells)
    summary.update({"cell_usage": usage.tolist(), "top_prototypes": top_protos.tolist(),
                    "memory_stats": memory.stats()})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"clusters.png, top3.png, prototypes.png, summary.json -> {out}")
    return 0
