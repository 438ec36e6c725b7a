"""The core's dataset components on real data (Debian Fashion-MNIST, PyPI animal-mnist) and on
small image folders made here."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from memcore.config import structure
from memcore.data import BatchStream
from memcore.errors import MemcoreError
from memcore.registry import get_registry


def dataset(name, **options):
    entry = get_registry().get("dataset", name)
    return entry.load_factory()(structure(options, entry.load_config()), None)


def test_fashion_mnist_real_files():
    ds = dataset("fashion-mnist", split="test")
    assert len(ds) == 10000 and ds.images.dtype == torch.uint8
    assert ds.images.shape[1:] == (1, 28, 28) and ds.num_classes == 10
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    image, label = ds[0]
    assert image.min() >= -1 and image.max() <= 1 and 0 <= label < 10


def test_classes_limit_resolution_channels():
    ds = dataset("fashion-mnist", split="test", classes=[7, 1], limit=50, resolution=32, channels=3)
    assert len(ds) == 50 and ds.images.shape[1:] == (3, 32, 32)
    assert ds.class_names == ("sneaker", "trouser") and set(ds.labels.tolist()) <= {0, 1}
    full = dataset("fashion-mnist", split="test")
    kept = full.images[(full.labels == 7) | (full.labels == 1)][:50]
    assert ((ds.labels == 0) == (full.labels[(full.labels == 7) | (full.labels == 1)][:50] == 7)).all()
    assert torch.equal(ds.images[:, 0].float().mean((1, 2)) > 0,
                       torch.nn.functional.interpolate(kept.float(), size=32).mean((1, 2, 3)) > 0)


def test_fashion_mnist_missing_explains_install(tmp_path, monkeypatch):
    with pytest.raises(MemcoreError, match="no train-images-idx3-ubyte.gz"):
        dataset("fashion-mnist", path=str(tmp_path))
    import memcore_datasets.images as datasets
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr(datasets, "DEBIAN_FASHION", str(tmp_path))
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    monkeypatch.setenv("MEMCORE_CACHE", str(tmp_path))
    monkeypatch.delenv("MEMCORE_FASHION_MNIST", raising=False)
    with pytest.raises(MemcoreError, match="apt-get install dataset-fashion-mnist"):
        dataset("fashion-mnist")


def test_fashion_mnist_is_sized_from_headers_and_decoded_on_first_use(monkeypatch):
    import memcore_datasets.images as datasets
    decoded = []
    read_idx = datasets._read_idx
    monkeypatch.setattr(datasets, "_read_idx", lambda path: decoded.append(path.name) or
                        read_idx(path))
    options = dict(split="all", classes=[3, 5], limit=13999, resolution=16, channels=3)
    ds = dataset("fashion-mnist", **options)
    assert decoded == ["train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # 7,000 of each class in train + test; the limit drops the last sandal
    sized = (len(ds), ds.channels, ds.resolution, ds.labels.shape, ds.class_names)
    assert sized == (13999, 3, 16, (13999,), ("dress", "sandal"))
    images = ds.images
    assert decoded[2:] == ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"]
    assert images.shape == (13999, 3, 16, 16) and images.dtype == torch.uint8
    assert ds.images is images and len(decoded) == 4
    # the same images, in the same order, as decoding first and selecting after
    eager = datasets.finish(np.concatenate([read_idx(Path(datasets.DEBIAN_FASHION) / f)
                                            for f in decoded[2:]]),
                            ds.labels.new_tensor(np.concatenate(
                                [read_idx(Path(datasets.DEBIAN_FASHION) / f) for f in decoded[:2]])),
                            structure(options, get_registry().get("dataset", "fashion-mnist")
                                      .load_config()), datasets.FASHION_CLASSES, "")
    assert torch.equal(eager.images, images) and torch.equal(eager.labels, ds.labels)


def _fashion_files(folder, images: bytes, labels: bytes):
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"")  # marks the folder as Fashion-MNIST
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(labels)


@pytest.mark.parametrize("damage, expected", [
    ("cut", "truncated or damaged"),                 # the .gz cut short mid-stream
    ("short", "truncated or damaged"),               # a valid .gz of fewer bytes than its header
    ("labels", "files of different sets"),           # train labels beside test images
    ("garbage", "not a readable idx file"),
])
def test_damaged_fashion_files_are_refused_when_opened(tmp_path, damage, expected):
    import gzip
    real = Path("/usr/share/datasets/fashion-mnist")
    images = (real / "t10k-images-idx3-ubyte.gz").read_bytes()
    labels = (real / "t10k-labels-idx1-ubyte.gz").read_bytes()
    if damage == "cut":
        images = images[: len(images) // 2]
    elif damage == "short":
        images = gzip.compress(gzip.decompress(images)[:-784])
    elif damage == "labels":
        labels = (real / "train-labels-idx1-ubyte.gz").read_bytes()
    else:
        images = b"not gzip at all"
    _fashion_files(tmp_path / "fm", images, labels)
    with pytest.raises(MemcoreError, match=expected):
        dataset("fashion-mnist", split="test", path=str(tmp_path / "fm"))


def test_animal_mnist_balanced_split():
    train, test = dataset("animal-mnist"), dataset("animal-mnist", split="test")
    assert len(train) == 9000 and len(test) == 1000
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert train.class_names[0] == "bear" and train.class_names[-1] == "zebra"


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls / "deeper").mkdir(parents=True)
        for i, suffix in enumerate([".png", ".jpg", ".webp", ".bmp"]):
            arr = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
            folder = tmp_path / cls / ("deeper" if i == 3 else "")
            Image.fromarray(arr).save(folder / f"{i}{suffix}")
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_image_folder_labels_and_corrupt_files(tmp_path):
    root = _folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dataset("image-folder", path=str(root), labels=True, resolution=16)
    assert len(ds) == 8 and ds.images.shape[1:] == (3, 16, 16)
    assert ds.class_names == ("cats", "dogs") and torch.bincount(ds.labels).tolist() == [4, 4]
    messages = [str(w.message) for w in caught]
    assert any("skipped 1 unreadable file(s) of 9" in m and "broken.png" in m for m in messages)
    grey = dataset("image-folder", path=str(root), resolution=8, channels=1, crop="none")
    assert grey.images.shape[1:] == (1, 8, 8) and grey.num_classes == 0


def test_image_folder_empty_and_missing(tmp_path):
    with pytest.raises(MemcoreError, match="no images found"):
        dataset("image-folder", path=str(tmp_path))
    with pytest.raises(MemcoreError, match="no such folder"):
        dataset("image-folder", path=str(tmp_path / "nope"))


def test_cifar10_offline_error(monkeypatch, tmp_path):
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(MemcoreError, match="could not be downloaded"):
        dataset("cifar10", path=str(tmp_path))


def test_batch_stream_shards_and_resumes():
    ds = dataset("fashion-mnist", split="test", limit=100)
    ranks = [BatchStream(ds, 20, seed=3, rank=r, world=2) for r in range(2)]
    seen = []
    for _ in range(5):  # one epoch: 5 global batches of 20
        for s in ranks:
            seen.append(s.next()[0])
    assert torch.unique(torch.cat(seen).flatten(1), dim=0).shape[0] == \
        torch.unique(ds.images.flatten(1), dim=0).shape[0]
    one = BatchStream(ds, 20, seed=3)
    for _ in range(7):
        one.next()
    state = one.state_dict()
    expected = one.next()[0]
    again = BatchStream(ds, 20, seed=3)
    again.load_state_dict(state)
    assert state == {"epoch": 1, "batch": 2} and torch.equal(again.next()[0], expected)
