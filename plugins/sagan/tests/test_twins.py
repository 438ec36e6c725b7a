"""The twin-shapes dataset and its checker (metric twin-match): real images meet the constraint,
images whose halves come from different images meet it by chance (1 in 16), and every way of
breaking one attribute is seen; the long-range experiment file trains on both."""
import json
import math
from pathlib import Path

import pytest
import torch

import memcore
from memcore_experiments.sweep import plan
from memcore_kit.testing import train
from memcore_sagan.twins import COLOURS, PALETTE, SHAPES, check_pairs, draw, side_of

PLUGIN = Path(__file__).parents[1]
PAIRS = len(SHAPES) * len(COLOURS)


def build(**options):
    return memcore.build_component("dataset", {"kind": "twin-shapes", **options})


def within_chance(share: float, p: float, n: int) -> bool:
    """Inside a 4-sigma binomial band around p."""
    return abs(share - p) <= 4 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("resolution", [32, 64])
def test_dataset_is_a_fixed_draw_of_the_seed_split_and_size(resolution):
    a = build(resolution=resolution, count=200)
    assert a.images.shape == (200, 3, resolution, resolution) and a.images.dtype == torch.uint8
    assert (a.channels, a.resolution, a.num_classes, a.labels) == (3, resolution, 0, None)
    assert torch.equal(a.images, build(resolution=resolution, count=200).images)
    assert torch.equal(build(resolution=resolution, count=200, limit=50).images, a.images[:50])
    for other in ({"seed": 1}, {"split": "test"}):
        assert not torch.equal(build(resolution=resolution, count=200, **other).images, a.images)


def test_every_pair_is_drawn_about_equally_and_lies_in_its_half():
    images, pairs, boxes = draw(4000, 32, 0)
    counts = torch.bincount(pairs, minlength=PAIRS)
    assert len(counts) == PAIRS and all(within_chance(c / 4000, 1 / PAIRS, 4000) for c in counts)
    side, half = side_of(32), 16
    assert (boxes[:, 0, 1] + side <= half - 1).all() and (boxes[:, 1, 1] >= half + 1).all()
    assert (boxes[..., 0] >= 1).all() and (boxes[..., 0] + side <= 31).all()


@pytest.mark.parametrize("resolution, seed, noise", [(32, 0, 8.0), (32, 3, 0.0), (64, 1, 8.0)])
def test_checker_passes_every_real_image(resolution, seed, noise):
    images, pairs, _ = draw(300 if resolution == 32 else 100, resolution, seed, noise=noise)
    flags = check_pairs(images)
    assert flags.all(), f"{(~flags.all(1)).sum()} real images failed, pairs {pairs[~flags.all(1)]}"


def test_halves_from_different_images_match_by_chance():
    images, pairs, _ = draw(2000, 32, 2)
    order = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    mixed = torch.cat([images[..., :16], images[order][..., 16:]], dim=-1)
    share = check_pairs(mixed).float().mean(0)
    expected = (pairs == pairs[order]).float().mean()      # the pairs that agree by accident
    assert share[0] == 1 and abs(share[3] - expected) < 1e-9
    assert within_chance(float(share[3]), 1 / PAIRS, 2000)
    assert within_chance(float(share[1]), 1 / len(SHAPES), 2000)
    assert within_chance(float(share[2]), 1 / len(COLOURS), 2000)


@pytest.mark.parametrize("change", ["colour", "shape"])
def test_one_attribute_changed_on_the_right_is_caught(change):
    """Every pair, redrawn with the right shape's colour (or shape) replaced by each other one."""
    images, pairs, _ = draw(400, 32, 4, noise=0.0)
    for pair in range(PAIRS):
        one = images[pairs == pair][:1].clone()
        for other in range(len(COLOURS) if change == "colour" else len(SHAPES)):
            right = one[..., 16:]
            mask = right.amax(1, keepdim=True) > 99
            if change == "colour":
                if other == pair % len(COLOURS):
                    continue
                colour = torch.tensor(PALETTE[COLOURS[other]], dtype=torch.uint8).view(1, 3, 1, 1)
                edited = torch.where(mask, colour, right)
            else:
                if other == pair // len(COLOURS):
                    continue
                twin = images[pairs == other * len(COLOURS) + pair % len(COLOURS)][:1, ..., 16:]
                edited = twin
            valid, same_shape, same_colour, both = check_pairs(torch.cat([one[..., :16], edited], -1))[0]
            assert valid and not both
            assert (same_shape, same_colour) == ((True, False) if change == "colour" else (False, True))


def test_checker_rejects_noise_blanks_and_smears():
    noise = torch.randint(0, 256, (200, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    blank = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    images, _, _ = draw(50, 32, 0)
    smear = images.clone()
    smear[:, 0, 4:28, 1:15] = 255           # one red blob filling most of the left half
    for name, batch in (("noise", noise), ("blank", blank), ("smear", smear)):
        assert not check_pairs(batch)[:, 0].any(), name


def test_metric_scores_real_images_as_met_and_names_its_chance(tmp_path):
    images, _, _ = draw(300, 32, 5)
    out = memcore.score_images("twin-match", images, images)
    assert out["twin_match"] == out["twin_valid"] == 1.0
    assert out["twin_samples"] == "300" and out["twin_chance"] == f"twin_valid/{PAIRS}"
    with pytest.raises(memcore.MemcoreError, match="min_iou"):
        memcore.build_component("metric", {"kind": "twin-match", "min_iou": 0.0})
    with pytest.raises(memcore.MemcoreError, match="3 channels, 32 or 64 px"):
        memcore.build_component("metric", {"kind": "twin-match"},
                                memcore.BuildContext(resolution=28, channels=1, role="metrics[0]"))
    with pytest.raises(memcore.MemcoreError, match="background"):
        build(background=100)


def test_long_range_experiment_trains_the_four_study_variants_on_twin_shapes(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exp, _, planned = plan(PLUGIN / "experiments" / "long-range-mini.toml", portable=True)
    assert [v.name for v in exp.variants] == ["full", "none", "none-in-G", "none-in-D"]
    assert exp.baseline == "full" and len(exp.seeds) >= 3
    for run in planned:
        assert run.resolved["data"]["kind"] == "twin-shapes"
        assert [m["kind"] for m in run.resolved["metrics"]] == ["twin-match", "fid"]
    run = train(PLUGIN / "recipes" / "study32.toml", tmp_path, overrides=(
        "data.kind=twin-shapes", "losses=[{kind='hinge'}]", "generator.width=8",
        "discriminator.width=8", "metrics=[{kind='twin-match', num_samples=16}]"))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["metric"] == "twin-match" and 0 <= lines[-1]["values"]["twin_match"] <= 1
