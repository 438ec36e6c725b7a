"""Extractors, BatchNorm folding, the cache key, preflight and option errors."""
import warnings

import pytest
import torch
from torch import nn

import memcore
import memcore_kit.testing
from memcore.cli import main
from memcore_fidelity import Extractor, ExtractorOptions, extractors, reference
from memcore_fidelity.extractors import INCEPTION_FILE, fold_batchnorm
from memcore_fidelity.images import ImageSession, build_metric, score_images
from memcore_fidelity.metrics import default_kid_subset


def test_components_are_registered():
    reg = memcore.get_registry()
    assert {"fid", "kid", "isc", "prc"} <= set(reg.names("metric"))
    assert {"inception-v3-compat", "efficientnet-lite0", "fashion-classifier"} <= \
        set(reg.names("extractor"))


def test_third_party_extractor_registers_the_same_way(register_plugin, fashion):
    class Pixels(Extractor):
        name, resize, preprocessing = "pixels", "none", "x / 255"

        def weights_path(self):
            return extractors.FASHION_WEIGHTS  # any file: the hash goes into the protocol

        def build(self, weights):
            return _PixelNet()

    register_plugin("third", memcore_register_components=memcore.hookimpl(
        lambda registry: registry.add("extractor", "pixels", Pixels, ExtractorOptions)))
    out = score_images("fid", fashion["train"][:50], fashion["test"][:50], extractor="pixels")
    assert out["extractor"] == "pixels" and out["fid"] > 0


class _PixelNet(nn.Module):
    def forward(self, x):
        flat = x.float().flatten(1)[:, :32] / 255
        return flat, None


def test_fold_batchnorm_keeps_outputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1),
                        nn.BatchNorm2d(4))
    for m in net.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(); m.running_var.uniform_(0.5, 2); m.weight.data.normal_()
    net.eval()
    x = torch.randn(2, 3, 9, 9)
    expected = net(x)
    fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, dims", [("fashion-classifier", (64, 10)),
                                        ("efficientnet-lite0", (1280, 1000))])
def test_extractor_shapes_grey_and_rgb(name, dims, fashion):
    metric = build_metric("fid", extractor=name)
    grey = fashion["test"][:3]
    out_grey = metric.extractor.extract(grey)
    out_rgb = metric.extractor.extract(grey.expand(-1, 3, -1, -1).contiguous())
    assert out_grey["features"].shape == (3, dims[0]) and out_grey["logits"].shape == (3, dims[1])
    torch.testing.assert_close(out_grey["features"], out_rgb["features"])
    assert len(metric.extractor.weights_sha256()) == 64


def test_speed_options_do_not_change_features(fashion):
    fast = build_metric("fid", extractor="fashion-classifier").extractor
    plain = build_metric("fid", extractor={"kind": "fashion-classifier", "channels_last": False,
                                           "fold_batchnorm": False, "batch_size": 7}).extractor
    x = fashion["test"][:20]
    torch.testing.assert_close(fast.extract(x)["features"], plain.extract(x)["features"],
                               atol=1e-4, rtol=1e-4)


def test_fashion_classifier_weights_are_trained(fashion):
    """The shipped weights classify the test split (the README states 90.4% on all 10,000)."""
    entry = memcore.get_registry().get("dataset", "fashion-mnist")
    test = entry.load_factory()(entry.load_config()(split="test", limit=500),
                                memcore.BuildContext(resolution=0, channels=0))
    ext = build_metric("isc", extractor="fashion-classifier").extractor
    predicted = ext.extract(test.images)["logits"].argmax(1)
    assert (predicted == test.labels).float().mean() > 0.85


def test_inception_missing_fails_in_preflight_naming_the_file():
    metric = build_metric("fid", role="metrics[2]")
    with pytest.raises(memcore.MemcoreError) as err:
        metric.preflight()
    text = str(err.value)
    assert text.startswith("metrics[2].extractor:") and INCEPTION_FILE in text
    assert "MEMCORE_INCEPTION_WEIGHTS" in text and "https://" in text


def test_inception_weights_from_env_and_recipe_key(tmp_path, monkeypatch):
    fake = tmp_path / "not-inception.pth"
    fake.write_bytes(b"123")
    monkeypatch.setenv("MEMCORE_INCEPTION_WEIGHTS", str(fake))
    ext = build_metric("fid").extractor
    assert ext.weights_path() == fake
    with pytest.warns(UserWarning, match="not the standard FID Inception file"):
        ext.preflight()
    explicit = build_metric("fid", extractor={"kind": "inception-v3-compat",
                                              "weights": str(tmp_path / "absent.pth")}).extractor
    with pytest.raises(memcore.MemcoreError, match="absent.pth"):
        explicit.preflight()  # an explicit path is never silently replaced by another file


def test_training_stops_before_step_one_without_inception(tmp_path, monkeypatch, capsys):
    import tomli_w
    monkeypatch.chdir(tmp_path)
    recipe = memcore_kit.testing.tiny_recipe(metrics=[{"kind": "fid", "num_samples": 16}])
    (tmp_path / "r.toml").write_text(tomli_w.dumps(recipe))
    assert main(["run", "r.toml"]) != 0
    assert INCEPTION_FILE in capsys.readouterr().err
    assert not list(tmp_path.glob("runs/*/checkpoints/step-*.pt"))


def test_bad_extractor_name_is_a_recipe_error(tmp_path, capsys):
    import tomli_w
    recipe = memcore_kit.testing.tiny_recipe(metrics=[{"kind": "fid", "extractor": "fashion-clasifier"}])
    (tmp_path / "r.toml").write_text(tomli_w.dumps(recipe))
    assert main(["validate", str(tmp_path / "r.toml")]) != 0
    err = capsys.readouterr().err
    assert "metrics" in err and "fashion-classifier" in err  # the key path and a suggestion


def test_isc_needs_logits(register_plugin):
    class NoLogits(extractors.FashionClassifier):
        has_logits = False
    register_plugin("nologits", memcore_register_components=memcore.hookimpl(
        lambda registry: registry.add("extractor", "no-logits", NoLogits, ExtractorOptions)))
    with pytest.raises(memcore.MemcoreError, match="needs class logits"):
        build_metric("isc", extractor="no-logits").preflight()


def _ref(images, split="test"):
    return reference.Reference(images, "fashion-mnist", {"split": split, "limit": None}, split)


def test_cache_key_covers_weights_and_inputs(fashion):
    proto = {"extractor": "fashion-classifier", "resize": "r", "preprocessing": "p"}
    base = reference.reference_key(_ref(fashion["test"]), proto, "a" * 64)[1]
    assert base == reference.reference_key(_ref(fashion["test"]), proto, "a" * 64)[1]
    assert base != reference.reference_key(_ref(fashion["test"]), proto, "b" * 64)[1]
    assert base != reference.reference_key(_ref(fashion["test"][:100]), proto, "a" * 64)[1]
    assert base != reference.reference_key(_ref(fashion["test"], "train"), proto, "a" * 64)[1]
    assert base != reference.reference_key(_ref(fashion["train"]), proto, "a" * 64)[1]
    assert base != reference.reference_key(_ref(fashion["test"]),
                                           {**proto, "resize": "other"}, "a" * 64)[1]


def test_reference_features_are_cached_on_disk(fashion, tmp_path, monkeypatch):
    ext = build_metric("fid", extractor="fashion-classifier").extractor
    ref = _ref(fashion["test"][:50])
    first, digest = reference.reference_features(ref, ext, "cpu", tmp_path / "c")
    files = list((tmp_path / "c").glob("*.pt"))
    assert len(files) == 1 and digest[:16] in files[0].name
    reference._MEMORY.clear()
    monkeypatch.setattr(ext, "extract", lambda *a, **k: pytest.fail("extracted again"))
    again, _ = reference.reference_features(ref, ext, "cpu", tmp_path / "c")
    torch.testing.assert_close(again["features"], first["features"], rtol=0, atol=0)


def test_cache_dir_option_and_environment(fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMCORE_CACHE", str(tmp_path / "env"))
    assert reference.cache_root(None) == tmp_path / "env" / "fidelity"
    assert reference.cache_root(str(tmp_path / "opt")) == tmp_path / "opt"
    reference._MEMORY.clear()
    score_images("fid", fashion["train"][:20], fashion["test"][:20], extractor="fashion-classifier")
    assert list((tmp_path / "env" / "fidelity").glob("images-train-28px-fashion-classifier-20-*.pt"))


def test_kid_subset_adapts_with_a_warning(fashion):
    with pytest.warns(UserWarning, match=r"metrics\[0\].kid_subset_size = 1000"):
        out = score_images("kid", fashion["train"][:40], fashion["test"][:30],
                           extractor="fashion-classifier", kid_subsets=5, kid_subset_size=1000)
    assert out["kid_subset_size"] == "30"


@pytest.mark.parametrize("samples, subset", [(2, 2), (19, 2), (30, 3), (200, 20), (1000, 100),
                                             (10_000, 1000), (50_000, 1000)])
def test_kid_default_subset_is_a_tenth_of_the_samples(samples, subset):
    assert default_kid_subset(samples) == subset


def test_kid_default_subsets_differ_so_kid_std_is_their_spread(fashion):
    """Subsets of all the samples are the same set every time (kid_std ~0, what --num-samples
    1000 gave with the old default of 1000); the default tenth gives a real spread."""
    images = dict(fake=fashion["train"][:200], real=fashion["test"][:200])
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the default is never reduced
        tenth = score_images("kid", **images, extractor="fashion-classifier", kid_subsets=20)
    whole = score_images("kid", **images, extractor="fashion-classifier", kid_subsets=20,
                         kid_subset_size=200)
    assert tenth["kid_subset_size"] == "20" and whole["kid_subset_size"] == "200"
    assert whole["kid_std"] < 1e-6 and tenth["kid_std"] > 1e-4


def test_reference_count_capped_with_a_warning(fashion):
    metric = build_metric("fid", extractor="fashion-classifier", num_samples=20, num_real=500)
    with pytest.warns(UserWarning, match="500 reference images asked"):
        out = metric.compute(ImageSession(fashion["train"][:20], fashion["test"][:40]))
    assert out["real_samples"] == "40" and out["fake_samples"] == "20"


def test_result_records_the_protocol(fashion):
    out = score_images("fid", fashion["train"][:30], fashion["test"][:30],
                       extractor="fashion-classifier")
    import torch_fidelity
    assert out["extractor"] == "fashion-classifier"
    assert out["weights_sha256"] == extractors.sha256_of(extractors.FASHION_WEIGHTS)[:12]
    assert out["resize"] and out["preprocessing"]
    assert out["torch_fidelity"] == torch_fidelity.__version__ and out["torch"] == torch.__version__
    assert (out["fake_samples"], out["real_samples"]) == ("30", "30")
    assert all(isinstance(v, str) for k, v in out.items() if k != "fid")
