"""Train the `fashion-classifier` extractor's network on Fashion-MNIST (train split), report its
test accuracy and write the weights into the package.

    OMP_NUM_THREADS=1 .venv/bin/python plugins/fidelity/scripts/train_fashion_classifier.py

Seeded and single-threaded, so a rerun on the same machine writes the same file (its sha256 is
printed; the extractor records it with every metric). A few CPU minutes.
"""
from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import memcore
from memcore_fidelity.fashion import FashionNet, to_grey_28

WEIGHTS = Path(__file__).resolve().parents[1] / "memcore_fidelity" / "weights" / "fashion-classifier.pt"


def load_split(split: str):
    """Fashion-MNIST through memcore's own dataset component: uint8 (N, 1, 28, 28), labels (N,)."""
    entry = memcore.get_registry().get("dataset", "fashion-mnist")
    options = entry.load_config()(split=split)
    dataset = entry.load_factory()(options, memcore.BuildContext(resolution=0, channels=0))
    return dataset.images, dataset.labels


@torch.no_grad()
def accuracy(net, images, labels, batch: int = 1000) -> float:
    net.eval()
    hits = sum(int((net(to_grey_28(images[i:i + batch]))[1].argmax(1) == labels[i:i + batch]).sum())
               for i in range(0, len(images), batch))
    return hits / len(images)


def train(epochs: int, batch: int, lr: float, seed: int) -> FashionNet:
    torch.manual_seed(seed)
    images, labels = load_split("train")
    net = FashionNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(images) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    order_rng = torch.Generator().manual_seed(seed)
    step, start = 0, time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(images), generator=order_rng)
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            x = to_grey_28(images[idx])
            # random horizontal flips: clothes are left/right symmetric, the test set is not flipped
            flip = torch.rand(len(x), generator=order_rng) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(net(x)[1], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} "
                      f"{time.perf_counter() - start:.0f}s", flush=True)
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    net = train(args.epochs, args.batch, args.lr, args.seed)
    test_images, test_labels = load_split("test")
    acc = accuracy(net, test_images, test_labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"test accuracy {acc:.4f} on 10,000 images; {time.perf_counter() - start:.0f}s; "
          f"{args.out} ({args.out.stat().st_size / 1e3:.0f} kB) sha256 {digest}")


if __name__ == "__main__":
    main()
