"""Time one read (forward + backward to the query) and one write (a commit of B rows) of the DMN
memory against N, M and k, and the peak extra memory of a read; CPU, one thread by default.

    OMP_NUM_THREADS=1 .venv/bin/python plugins/memorygan/scripts/bench_memory.py
"""
import argparse
import time

import torch
import torch.nn.functional as F

from memcore_memorygan.memory import DiscriminativeMemory


def filled(slots, dim, top_k):
    mem = DiscriminativeMemory(slots, dim, top_k=top_k)
    mem.keys.copy_(F.normalize(torch.randn(slots, dim), dim=1))
    mem.hist.uniform_(0.01, 2.0)
    return mem


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=128, help="queries per read/write (64 real + 64 fake)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"threads {torch.get_num_threads()}, rows {args.rows}")
    print("| N | M | k | read fwd+bwd ms | write ms | state MiB |")
    print("|---|---|---|---|---|---|")
    for slots, dim, top_k in [(1024, 256, 128), (4096, 256, 128), (16384, 512, 256),
                              (16384, 512, 128), (65536, 512, 256)]:
        mem = filled(slots, dim, top_k)
        q = F.normalize(torch.randn(args.rows, dim), dim=1)
        labels = (torch.arange(args.rows) < args.rows // 2).float()

        def read():
            qq = q.clone().requires_grad_(True)
            mem(qq)["prob"].sum().backward()

        def write():
            mem.stage(query=q, label=labels)
            mem.commit()
        read_s, write_s = best_of(read, args.repeat), best_of(write, args.repeat)
        state = sum(b.numel() * b.element_size() for b in mem.buffers()) / 2 ** 20
        print(f"| {slots} | {dim} | {top_k} | {read_s * 1e3:.0f} | {write_s * 1e3:.0f} | {state:.1f} |")


if __name__ == "__main__":
    main()
