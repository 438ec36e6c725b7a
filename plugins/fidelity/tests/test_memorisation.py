"""The memorisation metric: hand-computed values, the chunked search against a brute-force one,
copies / held-out images / noise in both spaces, its options and errors, and a run that logs it."""
import json

import pytest
import torch

import memcore
from memcore_kit.testing import tiny_recipe, train
from memcore_fidelity import memorisation as mem


def score(fake, real, **options):
    return memcore.score_images("memorisation", fake, real, **options)


def test_values_by_hand():
    """Train (0, 0) and (1, 0): each one's nearest other is 1 away. Fake (0.2, 0) is 0.2 from
    (0, 0): ratio 0.2, memorised; fake (0, 1) is 1 from (0, 0): ratio 1, not (strictly less)."""
    as_images = lambda rows: torch.tensor(rows, dtype=torch.uint8).view(-1, 1, 1, 2)  # noqa: E731
    out = score(as_images([[51, 0], [0, 255]]), as_images([[0, 0], [255, 0]]))
    assert out["memorised"] == 0.5
    assert out["nn_distance"] == pytest.approx(0.6)
    assert out["nn_ratio"] == pytest.approx(0.6)
    assert out["train_nn_distance"] == pytest.approx(1.0)
    assert (out["extractor"], out["fake_samples"], out["train_images"]) == ("pixels", "2", "2")


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_chunked_search_equals_brute_force(chunk, monkeypatch):
    """Random rows, plus a duplicated training row (its nearest other is 0 away) and an exact
    copy of it among the fakes (memorised, ratio 0)."""
    monkeypatch.setattr(mem, "CHUNK", chunk)
    gen = torch.Generator().manual_seed(chunk)
    fake, real = torch.randn(23, 5, generator=gen), torch.randn(11, 5, generator=gen)
    real[3], fake[5] = real[7], real[7]
    full = torch.cdist(fake.double(), real.double())
    among = torch.cdist(real.double(), real.double()).fill_diagonal_(float("inf")).min(1).values
    nearest = full.min(1).values
    ratio = torch.tensor([0.0 if d == 0 else d / among[j] for d, j in zip(nearest, full.argmin(1))],
                         dtype=torch.float64)
    out = mem.memorisation(fake, real)
    assert ratio[5] == 0 and among[3] == among[7] == 0
    assert out["memorised"] == pytest.approx(float((ratio < 1).double().mean()))
    assert out["nn_distance"] == pytest.approx(float(nearest.mean()))
    assert out["nn_ratio"] == pytest.approx(float(ratio.sort().values[11]))   # the 12th of 23
    assert out["train_nn_distance"] == pytest.approx(float(among.mean()))


@pytest.mark.parametrize("extractor", [None, "fashion-classifier"])
def test_copies_are_memorised_held_out_images_partly_and_noise_never(fashion, extractor):
    options = {"extractor": extractor} if extractor else {}
    real = fashion["train"][:50]
    copies = score(real[torch.arange(120) % 50], real, **options)
    held_out = score(fashion["test"][:120], real, **options)
    noise = score(fashion["noise"][:120], real, **options)
    assert copies["memorised"] == 1.0 and copies["nn_distance"] < 1e-5
    assert 0 < held_out["memorised"] < 1
    # a classifier's space maps some noise near clothes; pixels never
    assert noise["memorised"] < held_out["memorised"] and (extractor or noise["memorised"] == 0)
    assert copies["nn_distance"] < held_out["nn_distance"] < noise["nn_distance"]
    assert copies["extractor"] == (extractor or "pixels")


def test_options_and_errors(fashion):
    real = fashion["train"][:30]
    assert score(real[:10], real, num_train=7)["train_images"] == "7"
    with pytest.raises(memcore.MemcoreError, match="at least 2 training images"):
        score(real[:10], real[:1])
    with pytest.raises(memcore.MemcoreError, match="num_train"):
        score(real[:10], real, num_train=0)
    with pytest.raises(memcore.MemcoreError, match="fashion-clasifier"):
        score(real[:10], real, extractor="fashion-clasifier")


def test_a_run_logs_it_in_pixels(tmp_path):
    recipe = tiny_recipe(metrics=[{"kind": "memorisation", "num_samples": 16}])
    run = train(recipe, tmp_path)
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["metric"] == "memorisation" and 0 <= line["values"]["memorised"] <= 1
    logged = "".join((run / "log.jsonl").read_text().splitlines())
    assert "metric/memorised@pixels" in logged
