"""Forward+backward time and peak memory of the self-attention block, fused
(scaled_dot_product_attention) against explicit (bmm + softmax), at 16x16, 32x32 and 64x64 maps.

Peak memory: on CUDA the allocator's peak; on CPU each case runs in a fresh process and reports the
growth of its peak resident set size (ru_maxrss) over what it held before the first forward.

    OMP_NUM_THREADS=1 python plugins/sagan/benchmarks/attention_bench.py --batch 8 --channels 64
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time

import torch

import memcore
from memcore_sagan.attention import SelfAttention, SelfAttentionOptions


def measure(side: int, fused: bool, args, device) -> tuple[float, float | None]:
    torch.manual_seed(0)
    ctx = memcore.BuildContext(resolution=side, channels=args.channels, role="bench")
    layer = SelfAttention(SelfAttentionOptions(at=side, fused=fused), ctx).to(device)
    x = torch.randn(args.batch, args.channels, side, side, device=device, requires_grad=True)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(args.warmup + args.repeats):
        if device.type == "cuda" and i == args.warmup:
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        layer(x).square().mean().backward()
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else \
        (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    return statistics.median(times) * 1e3, peak


def measure_cpu(side: int, fused: bool, args) -> tuple[float, float]:
    """One case in a fresh process, so ru_maxrss is this case's own peak."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (side, fused, args, torch.device("cpu")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--sides", default="16,32,64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device} · torch {torch.__version__} · threads {torch.get_num_threads()} · "
          f"batch {args.batch} · channels {args.channels} · median of {args.repeats}")
    print("| map | N | explicit ms | fused ms | explicit peak MiB | fused peak MiB |\n"
          "|---|---|---|---|---|---|")
    for side in map(int, args.sides.split(",")):
        run = (lambda fused: measure(side, fused, args, device)) if device.type == "cuda" else \
            (lambda fused: measure_cpu(side, fused, args))
        (t_e, m_e), (t_f, m_f) = run(False), run(True)
        mem = lambda m: f"{m:.0f}" if m is not None else "-"
        print(f"| {side}x{side} | {side * side} | {t_e:.1f} | {t_f:.1f} | {mem(m_e)} | {mem(m_f)} |")


if __name__ == "__main__":
    main()
