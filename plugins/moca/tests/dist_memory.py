"""Run under torchrun with 2 processes: every rank stages different columns, the core gathers them,
and the memories must be identical on both ranks and equal to one process writing them all."""
import sys

import torch
import torch.distributed as tdist

from memcore_moca.moca import PrototypeMemory


def memory():
    torch.manual_seed(0)
    m = PrototypeMemory(torch.randn(4, 6, 1, 1), cells=3, prototypes=4, warmup=2, kmeans_iters=10)
    return m.train()


def keys_of(rank, step):
    return torch.randn(10, 4, generator=torch.Generator().manual_seed(100 * step + rank))


tdist.init_process_group("gloo")
rank, world = tdist.get_rank(), tdist.get_world_size()
shared = memory()
for step in range(5):
    shared.stage(key=keys_of(rank, step))
    shared.commit()
state = torch.cat([b.double().flatten() for b in shared.state_dict().values()])
gathered = [torch.zeros_like(state) for _ in range(world)]
tdist.all_gather(gathered, state)
alone = memory()
alone.sync = "local"  # this rank writes the concatenation itself, as one process would
for step in range(5):
    alone.stage(key=torch.cat([keys_of(r, step) for r in range(world)]))
    alone.commit()
expected = torch.cat([b.double().flatten() for b in alone.state_dict().values()])
ok = all(torch.equal(g, gathered[0]) for g in gathered) and torch.equal(state, expected) \
    and bool(shared.ready)
print(f"rank {rank}: {'identical' if ok else 'DIFFERENT'}", flush=True)
tdist.barrier()  # no rank leaves while another still talks to it
tdist.destroy_process_group()
sys.exit(0 if ok else 1)
