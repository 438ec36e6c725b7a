"""Extractor weights and feature caches are read without running code (issue #17, point 0).

torch-fidelity's Inception constructor and efficientnet-lite's from_pretrained unpickle a path
with code execution; memcore loads the tensors itself. Each test plants a pickle that would create
a marker file and checks the refusal and the marker's absence, in-process and through the CLI.
"""
from __future__ import annotations

import pytest

import memcore
from memcore.cli import main
from memcore_kit.testing import plant_code_pickle, tiny_recipe, train
from memcore_fidelity import extractors, reference
from memcore_fidelity.options import InceptionOptions


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_inception_weights_from_the_recipe(tmp_path, code_marker, fmt):
    bad = plant_code_pickle(tmp_path / "inception.pth", code_marker, fmt)
    extractor = extractors.InceptionV3Compat(InceptionOptions(weights=str(bad)))
    with pytest.raises(memcore.MemcoreError, match="refused"):
        extractor.network()


def test_inception_weights_from_the_environment(tmp_path, code_marker, monkeypatch):
    bad = plant_code_pickle(tmp_path / "inception.pth", code_marker)
    monkeypatch.setenv("MEMCORE_INCEPTION_WEIGHTS", str(bad))
    with pytest.raises(memcore.MemcoreError, match="refused"):
        extractors.InceptionV3Compat(InceptionOptions()).network()


def test_inception_reads_a_weights_only_file(tmp_path, monkeypatch):
    """A plain state dict is the network's weights; nothing is fetched from the internet."""
    import torch
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception

    with monkeypatch.context() as patch:  # a randomly initialised network for its state dict
        patch.setattr(fidelity_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict",
                      lambda self, state: None)
        state = fidelity_inception.FeatureExtractorInceptionV3("x", ["2048"]).state_dict()
    torch.save(state, tmp_path / "inception.pth")

    def no_fetch(*args, **kwargs):
        raise AssertionError("the weights were to be fetched from the internet")
    monkeypatch.setattr(fidelity_inception, "load_state_dict_from_url", no_fetch)
    extractor = extractors.InceptionV3Compat(InceptionOptions(weights=str(tmp_path / "inception.pth")))
    features = extractor.extract(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    assert features["features"].shape == (2, 2048)
    assert fidelity_inception.load_state_dict_from_url is no_fetch  # our patch was undone


def test_efficientnet_and_fashion_weights(tmp_path, code_marker, monkeypatch):
    bad = plant_code_pickle(tmp_path / "weights.pth", code_marker)
    for cls in (extractors.EfficientNetLite0, extractors.FashionClassifier):
        monkeypatch.setattr(cls, "weights_path", lambda self: bad)
        with pytest.raises(memcore.MemcoreError, match="refused"):
            cls(None).network()


def test_reference_cache_is_recomputed_not_unpickled(tmp_path, code_marker):
    bad = plant_code_pickle(tmp_path / "cache.pt", code_marker)
    with pytest.warns(UserWarning, match="refused"):
        assert reference._load(bad, {"k": 1}) is None


def test_eval_with_planted_inception_weights(tmp_path, code_marker, monkeypatch, capsys):
    """End to end: MEMCORE_INCEPTION_WEIGHTS pointing at a planted file, then `memcore eval`."""
    run = train(tiny_recipe(), tmp_path)
    monkeypatch.setenv("MEMCORE_INCEPTION_WEIGHTS",
                       str(plant_code_pickle(tmp_path / "w.pth", code_marker)))
    capsys.readouterr()
    code = main(["eval", str(run), "--metrics", "fid@inception-v3-compat", "--num-samples", "8"])
    assert code != 0 and "refused" in capsys.readouterr().err
