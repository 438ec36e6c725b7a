"""``memcore viz memorygan RUN``: the paper's probabilistic figures from a run's checkpoints.

* ``prior.png``: the prior p(c) of every kept checkpoint, slots sorted (Fig. 3c);
* ``likelihood.png`` / ``likelihood.json``: mean biased log-likelihood log p~(x | y = 1) of held-out
  real images per checkpoint (Fig. 3a);
* ``posteriors.png``: for a few held-out images, the 9 slots of highest posterior p(c|x) with a
  sample drawn from each slot (Fig. 3b; one row per image: the image, then 9 samples);
* ``interpolation.png``: four slots at the corners, keys interpolated bilinearly and every point
  snapped to c = argmax p(c | K_hat), fixed z (Fig. 1 b, d); with ``--dcgan RUN`` also
  ``interpolation-dcgan.png``, the same grid over z of a memory-free run (Fig. 1 a, c).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torchvision.utils import save_image

import memcore
from memcore import MemcoreError

from .networks import DMN, DMNOptions


def run(args) -> int:
    """The command's handler; its arguments are set up in ``plugin.viz_args``."""
    from memcore import safewrite
    run_dir = Path(args.run)
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    if not checkpoints:
        raise MemcoreError(f"{run_dir}: no checkpoints/step-*.pt")
    out = safewrite.folder(Path(args.out) if args.out else run_dir / "viz-memorygan",
                           inside=None if args.out else run_dir)
    gen = torch.Generator().manual_seed(args.seed)
    held_out = None
    priors, likelihood = {}, {}
    for path in checkpoints:
        state = memcore.load_tensors(path, what="checkpoint")
        D = rebuild_discriminator(state)
        if held_out is None:
            held_out = load_held_out(state, args.images)
        step = int(state["step"])
        priors[step] = D.memory.prior().sort(descending=True).values
        with torch.no_grad():
            likelihood[step] = float(D.memory.log_likelihood(D(held_out)["query"]).mean())
    G = memcore.load_run(checkpoints[-1]).G  # EMA G (if any), attached to its own D's memory
    plot_priors(priors, out / "prior.png")
    plot_likelihood(likelihood, out / "likelihood.png")
    safewrite.write_text(out / "likelihood.json", json.dumps(likelihood, indent=1))
    with torch.no_grad():
        grids = {"posteriors.png": (posterior_rows(G, D, held_out[:args.rows], gen), 10),
                 "interpolation.png": (key_interpolation(G, D, args.grid, gen), args.grid)}
        if args.dcgan:
            G0 = memcore.load_run(args.dcgan).G
            grids["interpolation-dcgan.png"] = (z_interpolation(G0, args.grid, gen), args.grid)
    for name, (images, nrow) in grids.items():
        with safewrite.replacing(out / name) as tmp:
            save_image(images, tmp, nrow=nrow, normalize=True, value_range=(-1, 1))
    last = max(likelihood)
    print(f"{len(checkpoints)} checkpoint(s); held-out log p~(x|y=1) at step {last}: "
          f"{likelihood[last]:.3f} -> {out}")
    return 0


# -- rebuilding from a checkpoint -------------------------------------------------------------
def _recipe(state) -> dict:
    import tomli
    return tomli.loads(state["recipe"])


def rebuild_discriminator(state) -> DMN:
    table = dict(_recipe(state)["discriminator"])
    if table.pop("kind") != "memorygan":
        raise MemcoreError("memcore viz memorygan needs a run with discriminator kind = \"memorygan\"")
    if table.get("memory") is False:
        raise MemcoreError("memcore viz memorygan needs a run whose discriminator has a memory; "
                           "this one has discriminator.memory = false (the -Memory ablation: pass "
                           "it as --dcgan for the z-interpolation baseline)")
    if table.pop("blocks", None):
        raise MemcoreError("memcore viz memorygan cannot rebuild a discriminator with blocks")
    info = state["dataset"]
    ctx = memcore.BuildContext(resolution=info["resolution"], channels=info["channels"],
                               role="discriminator")
    D = DMN(DMNOptions(**table), ctx)
    D.load_state_dict(state["models"]["D"])
    return D.eval()


def load_held_out(state, n: int) -> torch.Tensor:
    """``n`` images of the run's dataset, test split when it has one; (n, C, H, W) in [-1, 1]."""
    table = dict(_recipe(state)["data"])
    entry = memcore.get_registry().get("dataset", table.pop("kind"))
    if "split" in table:
        table["split"] = "test"
    table["limit"] = n
    dataset = entry.load_factory()(entry.load_config()(**table), None)
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


# -- figures ----------------------------------------------------------------------------------
def posterior_rows(G, D, images, gen) -> torch.Tensor:
    """Per image: the image, then G(z, K_c) for its 9 slots of highest posterior p(c|x)."""
    memory = D.memory
    query = D(images)["query"]
    posterior = memory.log_scores(query).softmax(-1)                     # (B, N) full posterior
    top = posterior.topk(9, dim=1).indices                               # (B, 9)
    z = G.sample_z(top.numel(), gen)
    samples = G(z=z, key=memory.keys[top.flatten()]).view(len(images), 9, *images.shape[1:])
    return torch.cat([images[:, None], samples], 1).flatten(0, 1)


def key_interpolation(G, D, side: int, gen) -> torch.Tensor:
    memory = D.memory
    corners = memory.keys[memory.sample_slots(4, gen)]                   # (4, M)
    keys = _bilinear(corners, side)                                       # (side², M)
    snapped = memory.log_scores(keys).argmax(1)                          # c = argmax p(c | K_hat)
    z = G.sample_z(1, gen).expand(side * side, -1)
    return G(z=z, key=memory.keys[snapped])


def z_interpolation(G, side: int, gen) -> torch.Tensor:
    latents = G.sample_latent(4, gen, "cpu")
    z = _bilinear(latents["z"], side)
    return G(z=z)


def _bilinear(corners: torch.Tensor, side: int) -> torch.Tensor:
    """(4, D) corners (top-left, top-right, bottom-left, bottom-right) -> (side², D)."""
    t = torch.linspace(0, 1, side)
    v, u = torch.meshgrid(t, t, indexing="ij")
    w = torch.stack([(1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v], -1).view(-1, 4)
    return w @ corners


def plot_priors(priors: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for step, p in priors.items():
        keep = p[p > 4e-4]  # the paper drops slots with p(c) in [0, 0.0004] for readability
        ax.plot(keep.numpy(), label=f"step {step} ({len(keep)} slots)")
    ax.set(xlabel="slots, sorted", ylabel="p(c)", title="prior over memory slots")
    ax.legend()
    fig.tight_layout()
    with memcore.safewrite.replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_likelihood(likelihood: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    steps = sorted(likelihood)
    ax.plot(steps, [likelihood[s] for s in steps], marker="o")
    ax.set(xlabel="step", ylabel="mean log p~(x | y=1)", title="held-out real images")
    fig.tight_layout()
    with memcore.safewrite.replacing(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
