import pytest
import torch

import memcore


@pytest.fixture(autouse=True)
def offline_and_private(tmp_path, monkeypatch):
    """No test may download (weights or data) or write outside tmp: caches and torch hub go there."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setenv("MEMCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("MEMCORE_INCEPTION_WEIGHTS", raising=False)
    torch.hub.set_dir(str(tmp_path / "torch-home" / "hub"))


def _fashion(split):
    entry = memcore.get_registry().get("dataset", "fashion-mnist")
    options = entry.load_config()(split=split)
    return entry.load_factory()(options, memcore.BuildContext(resolution=0, channels=0)).images


@pytest.fixture(scope="session")
def fashion():
    """200 train and 200 test Fashion-MNIST images (uint8, N x 1 x 28 x 28) and 200 noise images."""
    gen = torch.Generator().manual_seed(0)
    train, test = _fashion("train"), _fashion("test")
    pick = lambda x: x[torch.randperm(len(x), generator=gen)[:200]]  # noqa: E731
    noise = torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8, generator=gen)
    return {"train": pick(train), "test": pick(test), "noise": noise}
