"""Training speed of the stylegan2 plugin: images/s and step time at 32 and 64 px.

Runs the real training loop (`memcore.train` on plugins/stylegan2/recipes/stylegan2-fashion.toml:
logistic loss, R1 every 16, path length every 4, ADA) for --steps steps per resolution and reports
the mean over log intervals after the first (which includes start-up). Lazy terms are amortised
over the interval, as in training. Prints a markdown table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stylegan2_speed.py --steps 48 --batch 16
    .venv/bin/python benchmarks/stylegan2_speed.py --width paper  # stylegan2-ada widths (GPU)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import tempfile
from pathlib import Path

import torch

import memcore

RECIPE = Path(__file__).resolve().parents[1] / "plugins/stylegan2/recipes/stylegan2-fashion.toml"
WIDTHS = {
    # the CPU recipe's networks (64-128 channels, 64-d latents)
    "cpu": ["generator.channel_base=2048", "generator.channel_max=128",
            "discriminator.channel_base=2048", "discriminator.channel_max=128"],
    # stylegan2-ada's cifar preset networks (512 channels, 512-d latents, 2 mapping layers)
    "paper": ["generator.channel_base=32768", "generator.channel_max=512", "generator.z_dim=512",
              "generator.w_dim=512", "discriminator.channel_base=32768",
              "discriminator.channel_max=512"],
}


def measure(resolution: int, steps: int, batch: int, width: str, interval: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        overrides = WIDTHS[width] + [
            f"data.resolution={resolution}", "data.limit=512", f"train.steps={steps}",
            f"train.batch_size={batch}", f"train.log_every={interval}", "train.progress=false",
            f"train.sample_every={steps}", f"train.checkpoint_every={steps}", "train.grid_size=4",
            f"run.root={folder}/runs", "discriminator.mbstd_group=4"]
        with contextlib.redirect_stdout(io.StringIO()):  # keep the table clean
            run = memcore.train(RECIPE, overrides)
        lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rates = [line["img_per_s"] for line in lines if "img_per_s" in line][1:]
    rate = sum(rates) / len(rates)
    return {"resolution": resolution, "img_per_s": rate, "step_ms": 1000 * batch / rate,
            "intervals": len(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=48, help="Steps per resolution (x16).")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--width", choices=sorted(WIDTHS), default="cpu")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"stylegan2 training speed · {device} · torch {torch.__version__} · width {args.width} · "
          f"batch {args.batch} · {args.steps} steps (first 16 not counted)\n")
    print("| resolution | images/s | step time (ms) | log intervals |")
    print("|---|---|---|---|")
    for res in args.resolutions:
        r = measure(res, args.steps, args.batch, args.width, interval=16)
        print(f"| {r['resolution']} | {r['img_per_s']:.1f} | {r['step_ms']:.0f} | {r['intervals']} |",
              flush=True)


if __name__ == "__main__":
    main()
