"""stacked-fashion (1,000 known modes), the stacked-modes coverage metric and the latent-paths
interpolation metric; the coverage experiment file resolving and a memoryGAN run logging both."""
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import memcore
from memcore_experiments.sweep import plan
from memcore_kit.testing import train
from memcore_memorygan.stacked import coverage, draw, mode_index

PLUGIN = Path(__file__).parents[1]


def build(**options):
    return memcore.build_component("dataset", {"kind": "stacked-fashion", **options})


def test_draw_puts_three_labelled_images_in_the_channels():
    """Source image i is constant 20 * label_i: each channel's value gives its label back."""
    labels = torch.arange(50) % 10
    source = (labels * 20).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    images, modes = draw(source, labels, 500, seed=3, stream=0)
    assert images.shape == (500, 3, 4, 4)
    per_channel = (images[:, :, 0, 0] // 20).long()
    assert torch.equal(modes, per_channel[:, 0] * 100 + per_channel[:, 1] * 10 + per_channel[:, 2])
    assert torch.equal(draw(source, labels, 500, 3, 0)[0], images)
    assert not torch.equal(draw(source, labels, 500, 3, 1)[0], images)
    assert not torch.equal(draw(source, labels, 500, 4, 0)[0], images)


def test_dataset_options():
    a = build(count=300, labels=True)
    assert a.images.shape == (300, 3, 28, 28) and (a.channels, a.resolution) == (3, 28)
    assert a.num_classes == 1000 and a.labels.max() < 1000
    assert torch.equal(build(count=300, limit=40).images, a.images[:40])
    assert build(count=300).labels is None and build(count=300).num_classes == 0
    assert not torch.equal(build(count=300, split="test").images, a.images)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_mode_index_and_coverage_by_hand(channels):
    total = 10 ** channels
    digits = torch.tensor([[(m // 10 ** (channels - 1 - k)) % 10 for k in range(channels)]
                           for m in range(total)])
    assert torch.equal(mode_index(digits), torch.arange(total))
    assert coverage(torch.arange(total).repeat(3), channels) == {"modes": total, "kl": 0.0}
    one = coverage(torch.full((40,), 7), channels)
    assert one["modes"] == 1 and one["kl"] == pytest.approx(math.log(total))
    two = coverage(torch.tensor([1, 2] * 10), channels)
    assert two["modes"] == 2 and two["kl"] == pytest.approx(math.log(total / 2))


def test_stacked_modes_on_real_and_collapsed_images():
    real = build(count=1500, labels=True)
    out = memcore.score_images("stacked-modes", real.images, real.images)
    expected = 1000 * (1 - math.exp(-1.5))          # modes hit by 1,500 uniform draws: ~777
    assert abs(out["modes"] - expected) < 60 and out["low_confidence"] < 0.2
    collapsed = memcore.score_images("stacked-modes", real.images[:1].expand(300, -1, -1, -1),
                                     real.images)
    assert collapsed["modes"] == 1 and collapsed["kl"] == pytest.approx(math.log(1000))
    assert collapsed["low_confidence"] in (0.0, 1.0)
    with pytest.raises(memcore.MemcoreError, match="confidence"):
        memcore.build_component("metric", {"kind": "stacked-modes", "confidence": 1.5})


class TwoImages(nn.Module):
    """Latents z = -3 or 3 (1-d); z -> real image A for z < 0, B for z > 0: a hard switch
    (``blend = False``) or a cross-fade over -1 < z < 1 (``blend = True``), which puts
    between-class images on the paths from one to the other (half the paths)."""

    def __init__(self, a, b, blend):
        super().__init__()
        self.a, self.b, self.blend, self.z_dim = a.float() / 127.5 - 1, b.float() / 127.5 - 1, blend, 1

    def sample_latent(self, n, generator, device, **condition):
        return {"z": torch.randint(2, (n, 1), generator=generator) * 6.0 - 3}

    def forward(self, z):
        w = ((z + 1) / 2).clamp(0, 1) if self.blend else (z > 0).float()
        return (1 - w.view(-1, 1, 1, 1)) * self.a + w.view(-1, 1, 1, 1) * self.b


def paths(G, **options):
    metric = memcore.build_component("metric", {"kind": "latent-paths", **options})
    return metric.compute(memcore.MetricSession(G, None, "cpu", None, 0))


def test_latent_paths_see_cross_fades_between_classes_and_no_hard_switch():
    """For every pair of Fashion-MNIST classes (the first image of each): a hard switch looks
    the same inside the paths as at their ends; a cross-fade is less confident inside, for most
    pairs (the classifier stays sure of some blends) and clearly on average."""
    fashion = memcore.build_component("dataset", {"kind": "fashion-mnist", "limit": 200})
    first = [fashion.images[fashion.labels == k][:1] for k in range(10)]
    drops = []
    for i, j in itertools.combinations(range(10), 2):
        switch = paths(TwoImages(first[i], first[j], False), num_samples=8)
        fade = paths(TwoImages(first[i], first[j], True), num_samples=8)
        assert switch["between"] == switch["ends"] == fade["ends"] and switch["excess"] == 0.0
        assert switch["confidence_between"] == pytest.approx(switch["confidence_ends"])
        drops.append(fade["confidence_ends"] - fade["confidence_between"])
    drops = torch.tensor(drops)
    # a quarter of the inner points lie in the fade, on half the paths: a diluted drop
    assert (drops > 0).float().mean() > 0.8 and drops.mean() > 0.01
    strict = paths(TwoImages(first[0], first[1], True), num_samples=8, confidence=1.0)
    assert strict["between"] == strict["ends"] == 1.0      # every probability is below 1
    assert (strict["paths"], strict["points"]) == ("8", "8")


def test_latent_paths_refuse_discrete_latents():
    class Labelled(TwoImages):
        def sample_latent(self, n, generator, device, **condition):
            return {"z": torch.randn(n, 1, generator=generator), "c": torch.zeros(n, dtype=torch.long)}
    image = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(memcore.MemcoreError, match="'c' is torch.int64"):
        paths(Labelled(image, image, True), num_samples=2)


def test_coverage_experiment_and_a_memorygan_run_logging_both(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exp, _, planned = plan(PLUGIN / "experiments" / "coverage-mini.toml", portable=True)
    assert [v.name for v in exp.variants] == ["full", "no-EM", "no-memory"]
    assert exp.baseline == "full" and len(exp.seeds) >= 3
    for run in planned:
        assert run.resolved["data"]["kind"] == "stacked-fashion"
        assert [m["kind"] for m in run.resolved["metrics"]] == ["stacked-modes", "latent-paths"]
    metrics = ("metrics=[{kind='stacked-modes', num_samples=32}, {kind='latent-paths', "
               "num_samples=4, points=2}]")
    for recipe, small in (("fashion-memorygan", ("generator.fc_width=32", "discriminator.slots=64",
                                                  "discriminator.top_k=8")),
                          ("fashion-no-memory", ())):
        run = train(PLUGIN / "recipes" / f"{recipe}.toml", tmp_path / recipe, overrides=(
            "data={kind='stacked-fashion', count=128}", "generator.width=8",
            "discriminator.width=8", metrics, *small))
        lines = {x["metric"]: x["values"]
                 for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
        assert 1 <= lines["stacked-modes"]["modes"] <= 32
        assert 0 <= lines["latent-paths"]["between"] <= 1
