"""MoCA block forward+backward time and peak memory (Linux peak resident set, reset before each
measured pass, in a fresh process) against the SA-only block of the same size and against a
straightforward per-column implementation (Python loop over columns, as Algorithm 1 is written).
Every block uses the block's default softmax (the paper's two softmaxes, "separate") unless
``--softmax joint`` (the authors' lsGAN code) is given; the per-column loop follows the same one.

    OMP_NUM_THREADS=1 .venv/bin/python plugins/moca/benchmarks/bench_block.py
"""
import argparse
import gc
import multiprocessing
import time

import torch

import memcore
from memcore_moca.moca import MocaBlock, MocaOptions


DEFAULT_SOFTMAX = MocaOptions(at=16).softmax


def block(paths, channels, res, cells, size, softmax=DEFAULT_SOFTMAX):
    ctx = memcore.BuildContext(resolution=res, channels=channels, seed=0)
    b = MocaBlock(MocaOptions(at=res, paths=paths, cells=cells, prototypes=size, warmup=1,
                              softmax=softmax), ctx).train()
    if b.memory is not None:
        b(torch.randn(8, channels, res, res))
        b.memory.commit()
    with torch.no_grad():
        b.gamma.fill_(0.5)
    return b


def per_column(b, x):
    """Algorithm 1's loop, one column at a time (the memory part), then SA, then O, with the
    block's softmax: β over the cell's prototypes and Ŝ over the positions ("separate"), or one
    softmax over both ("joint"), so that both give the same output."""
    bsz, c, h, w = x.shape
    q = b.theta(x).flatten(2)
    k, v = b.phi(x).flatten(2), b.psi(x).flatten(2)
    mem = b.memory
    protos = mem.prototypes.view(mem.num_cells, mem.size, -1)
    cols = []
    for i in range(bsz):
        for n in range(h * w):
            a = q[i, :, n]
            cell = int(((mem.cells - a.detach()) ** 2).sum(1).argmin())
            memory_logits, context_logits = protos[cell] @ a, k[i].T @ a   # (T,), (N,)
            if b.softmax == "joint":
                beta = torch.cat([memory_logits, context_logits]).softmax(0)
                beta_mem, beta_ctx = beta[:mem.size], beta[mem.size:]
            else:
                beta_mem, beta_ctx = memory_logits.softmax(0), context_logits.softmax(0)
            cols.append(protos[cell].T @ beta_mem + v[i] @ beta_ctx)
    read = torch.stack(cols, 1).view(-1, bsz, h * w).transpose(0, 1).reshape(bsz, -1, h, w)
    return x + b.gamma * b.out(read)


def timed(fn, x, repeats):
    fn(x).sum().backward()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x).sum().backward()
    return (time.perf_counter() - start) / repeats


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _peak_in_child(case, a):
    """Peak resident memory added by one forward+backward (Linux: VmHWM reset through
    /proc/self/clear_refs just before), in MiB, measured in a fresh process."""
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.channels, a.res, a.res, requires_grad=True)
    moca = block("both", a.channels, a.res, a.cells, a.size, a.softmax)
    fn = {"sa": block("sa", a.channels, a.res, a.cells, a.size, a.softmax), "moca": moca,
          "loop": lambda x: per_column(moca, x)}[case]
    fn(x).sum().backward()  # warm-up: lazily built state is not the block's working memory
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    start = _status_kib("VmRSS")
    fn(x).sum().backward()
    return (_status_kib("VmHWM") - start) / 1024


def peak_mib(case, a) -> float:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_peak_in_child, (case, a))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--res", type=int, default=16)
    p.add_argument("--cells", type=int, default=32)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--softmax", choices=("separate", "joint"), default=DEFAULT_SOFTMAX,
                   help="the blocks' softmax (default: the block's default)")
    a = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.channels, a.res, a.res, requires_grad=True)
    moca = block("both", a.channels, a.res, a.cells, a.size, a.softmax)
    sa = block("sa", a.channels, a.res, a.cells, a.size, a.softmax)
    t_moca, t_sa = timed(moca, x, a.repeats), timed(sa, x, a.repeats)
    t_loop = timed(lambda x: per_column(moca, x), x, 1)
    print(f"B={a.batch} C={a.channels} {a.res}x{a.res} M={a.cells} T={a.size} "
          f"d={moca.theta.out_channels}, softmax {a.softmax}, forward+backward, "
          f"CPU {torch.get_num_threads()} thread(s)")
    peaks = {case: peak_mib(case, a) for case in ("sa", "moca", "loop")}
    print(f"SA-only block      {1000 * t_sa:9.1f} ms   peak +{peaks['sa']:.1f} MiB")
    print(f"MoCA block         {1000 * t_moca:9.1f} ms  ({t_moca / t_sa:.2f}x SA)   "
          f"peak +{peaks['moca']:.1f} MiB")
    print(f"per-column MoCA    {1000 * t_loop:9.1f} ms  ({t_loop / t_moca:.0f}x the vectorised "
          f"block)   peak +{peaks['loop']:.1f} MiB")
    with torch.no_grad():
        assert torch.allclose(per_column(moca, x), moca(x), atol=1e-4)
    print("per-column output matches the vectorised block (atol 1e-4)")


if __name__ == "__main__":
    main()
