"""Run by test_fidelity_distributed.py, with one process or under torchrun: compute the four metrics
on fixed Fashion-MNIST images and write the numbers (rank 0) and per-rank extraction counts."""
import json
import os
import sys

import torch
import torch.distributed as tdist

import memcore
from memcore import dist
from memcore_fidelity.images import ImageSession, build_metric


def fashion(split, n):
    entry = memcore.get_registry().get("dataset", "fashion-mnist")
    options = entry.load_config()(split=split, limit=n)
    return entry.load_factory()(options, memcore.BuildContext(resolution=0, channels=0)).images


def main(out):
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        tdist.init_process_group("gloo")
    torch.set_num_threads(1)
    fake, real = fashion("train", 61), fashion("test", 47)  # odd counts: uneven shards
    metrics = [build_metric(k, extractor="fashion-classifier", num_samples=61, num_real=47,
                            **({"kid_subset_size": 20, "kid_subsets": 10} if k == "kid" else {}))
               for k in ("fid", "kid", "isc", "prc")]
    rows = []
    extract = metrics[0].extractor.extract
    metrics[0].extractor.extract = lambda x, *a: (rows.append(len(x)), extract(x, *a))[1]
    session = ImageSession(fake, real, batch=16)
    results = {m.metric: {k: v for k, v in m.compute(session).items() if isinstance(v, float)}
               for m in metrics}
    counts = dist.gather_object(sum(rows))
    if dist.is_main():
        with open(out, "w") as fh:
            json.dump({"results": results, "rows_per_rank": counts}, fh)
    if tdist.is_initialized():
        tdist.barrier()  # no rank leaves while another still talks to it
        tdist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
