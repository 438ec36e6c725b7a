"""``memcore viz painting RUN``: the painting process of an FPA run, as in Fig. 5 (and Fig. 9).

For each sample two rows: the rank-one update of each chosen step, and the canvas after it (the
cumulative sum). As in the paper each image is rescaled to the norm of the final canvas and put
through tanh (so the colour scale is per image). For ``fpa-unet`` runs a last column shows the
U-Net's output beside the final canvas. ``--gif`` also writes the canvases as an animation.
"""
from __future__ import annotations

from pathlib import Path

HELP = "Painting steps of an FPA run: rank-one updates and canvases (PNG strip, optional GIF)."


def configure(parser):
    from memcore.cliargs import count, out_file, seed64
    parser.add_argument("run", help="Run directory or checkpoint file of an fpa / fpa-unet run.")
    parser.add_argument("--seed", type=seed64, default=0, help="Seed of the latents.")
    parser.add_argument("--n", type=count(1, 64), default=4, help="Number of samples.")
    parser.add_argument("--steps", default="", help="Comma-separated steps to show, 1-based "
                        "(default: up to 16 evenly spaced, always the last).")
    parser.add_argument("--out", type=out_file(".png"),
                        help="PNG path (default: RUN/painting-seed<S>.png).")
    parser.add_argument("--gif", action="store_true", help="Also write an animated GIF of the "
                        "canvases after every step.")
    parser.add_argument("--no-ema", action="store_true", help="Use the live G, not the EMA G.")
    parser.add_argument("--scale", type=count(1, 16), default=2,
                        help="Pixel upscaling of the figure.")


def load_fpa(run: str, use_ema: bool = True):
    """(generator, step) of an ``fpa`` or ``fpa-unet`` run, rebuilt from its checkpoint."""
    import memcore
    loaded = memcore.load_run(run, use_ema=use_ema)
    kind = loaded.recipe.generator.kind
    if kind not in ("fpa", "fpa-unet"):
        raise memcore.MemcoreError(f"{run}: generator.kind = {kind!r}, not an FPA (fpa, fpa-unet)")
    return loaded.G, loaded.step


def chosen_steps(text: str, total: int) -> list[int]:
    import memcore
    if text:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if not (s.isdigit() and len(s) < 10 and 1 <= int(s) <= total)]
        if bad:
            raise memcore.MemcoreError(f"--steps {text}: expected steps in 1..{total} "
                                       f"(got {', '.join(bad)})")
        return [int(s) for s in items]
    count = min(total, 16)
    return sorted({round(total * (i + 1) / count) for i in range(count)})


def normalised(images, final):
    """Rescale every image (..., C, H, W) to the norm of its final canvas, then tanh (Fig. 5)."""
    norm = lambda x: x.flatten(-3).norm(dim=-1).clamp_min(1e-8)[..., None, None, None]
    return (images * (norm(final[:, None]) / norm(images))).tanh()


def painting_figure(G, n: int, seed: int, steps_text: str = ""):
    """(figure (rows, cols, C, H, W) in [-1, 1], canvases after every step (n, T, C, H, W))."""
    import torch
    latents = G.sample_latent(n, torch.Generator().manual_seed(seed), "cpu")
    with torch.no_grad():
        updates, canvases = G.painter.steps(**latents)              # (n, C, T, H, W) each
        updates, canvases = updates.transpose(1, 2), canvases.transpose(1, 2)   # (n, T, C, H, W)
        final = canvases[:, -1]
        picked = [s - 1 for s in chosen_steps(steps_text, canvases.shape[1])]
        update_row = normalised(updates[:, picked], final)
        canvas_row = normalised(canvases[:, picked], final)
        if hasattr(G, "unet"):                                      # Fig. 9: before / after
            refined = G.refine(final)[:, None]
            update_row = torch.cat([update_row, torch.zeros_like(refined)], dim=1)
            canvas_row = torch.cat([canvas_row, refined], dim=1)
    figure = torch.stack([update_row, canvas_row], dim=1).flatten(0, 1)   # (2n, cols, C, H, W)
    return figure, normalised(canvases, final)


def _to_pil(images, nrow: int, scale: int):
    from PIL import Image
    from torchvision.utils import make_grid
    grid = make_grid(images.add(1).div(2).clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    array = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def handle(args) -> int:
    from memcore import safewrite
    G, step = load_fpa(args.run, use_ema=not args.no_ema)
    figure, canvases = painting_figure(G, args.n, args.seed, args.steps)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent.parent
    out = Path(args.out) if args.out else run_dir / f"painting-seed{args.seed}.png"
    with safewrite.replacing(out) as tmp:
        _to_pil(figure.flatten(0, 1), figure.shape[1], args.scale).save(tmp)
    print(f"painting steps of {args.n} samples (step {step}) -> {out}")
    if args.gif:
        frames = [_to_pil(canvases[:, t], args.n, args.scale) for t in range(canvases.shape[1])]
        gif = out.with_suffix(".gif")
        with safewrite.replacing(gif) as tmp:
            frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=150, loop=0)
        print(f"animation of {len(frames)} steps -> {gif}")
    return 0
