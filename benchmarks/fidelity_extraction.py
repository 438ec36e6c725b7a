"""Feature extraction speed: memcore-fidelity's settings against torch-fidelity's defaults, on the
same Fashion-MNIST images and the same network weights, checking the features agree.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fidelity_extraction.py --extractor efficientnet-lite0 --n 128

Baseline = what ``torch_fidelity.calculate_metrics`` does for a Dataset input on CPU with its
defaults: ``get_featuresdict_from_dataset`` with batch 64, a DataLoader with
``min(4, 2 * cpu_count)`` workers (``save_cpu_ram=False``), ``torch.no_grad`` and the network as
published (contiguous memory, BatchNorm separate). Ours = ``Extractor.extract`` with the default
options: inference mode, BatchNorm folded into the convolutions, channels-last, in-process
batching (no workers). Rounds alternate between the two; medians are reported.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch_fidelity
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

import memcore
from memcore_fidelity import torch_fidelity_adapter
from memcore_fidelity.images import build_metric


class Uint8Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def fashion_test(n: int) -> torch.Tensor:
    entry = memcore.get_registry().get("dataset", "fashion-mnist")
    options = entry.load_config()(split="test", limit=n)
    images = entry.load_factory()(options, memcore.BuildContext(resolution=0, channels=0)).images
    return images.expand(-1, 3, -1, -1).contiguous()  # torch-fidelity reads RGB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractor", default="efficientnet-lite0")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = fashion_test(args.n)

    plain = build_metric("fid", extractor={"kind": args.extractor, "fold_batchnorm": False,
                                           "channels_last": False}).extractor
    ours = build_metric("fid", extractor=args.extractor).extractor
    name = f"bench-{args.extractor}"
    torch_fidelity.register_feature_extractor(name, torch_fidelity_adapter(plain))
    baseline_net = create_feature_extractor(name, ["features"], cuda=False, verbose=False)

    def baseline():
        return get_featuresdict_from_dataset(Uint8Images(images), baseline_net, batch_size=64,
                                             cuda=False, save_cpu_ram=False,
                                             verbose=False)["features"]

    def fast():
        return ours.extract(images)["features"]

    baseline(), fast()  # warm-up: weights loaded, allocator and oneDNN primitives ready
    times = {"torch-fidelity defaults": [], "memcore-fidelity": []}
    for _ in range(args.rounds):
        for label, fn in (("torch-fidelity defaults", baseline), ("memcore-fidelity", fast)):
            start = time.perf_counter()
            features = fn()
            times[label].append(time.perf_counter() - start)
            if label == "torch-fidelity defaults":
                reference_features = features
            else:
                our_features = features

    # agreement: features, and FID of each pipeline's features against the other half of the set
    diff = (our_features - reference_features).abs().max().item()
    scale = reference_features.abs().max().item()
    half = args.n // 2
    fid = lambda f: fid_statistics_to_metric(fid_features_to_statistics(f[:half]),  # noqa: E731
                                             fid_features_to_statistics(f[half:]), False)[
        "frechet_inception_distance"]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"extractor {args.extractor}, {args.n} Fashion-MNIST test images (28 px -> "
          f"{ours.resize}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"torch-fidelity {torch_fidelity.__version__}")
    print("| pipeline | median s | img/s |\n|---|---|---|")
    for label, t in med.items():
        print(f"| {label} | {t:.2f} | {args.n / t:.1f} |")
    print(f"speed-up {med['torch-fidelity defaults'] / med['memcore-fidelity']:.2f}x; "
          f"rounds: {', '.join(f'{k}: ' + ' '.join(f'{x:.2f}' for x in v) for k, v in times.items())}")
    print(f"max |feature difference| {diff:.2e} (max |feature| {scale:.2f}); FID between halves "
          f"{fid(reference_features):.6f} (torch-fidelity) vs {fid(our_features):.6f} (ours)")


if __name__ == "__main__":
    main()
