"""No file memcore reads can run code: malicious pickles planted on every loading path are refused.

Each planted file, when unpickled by a code-running loader, would create a marker file. The tests
check the refusal (a MemcoreError naming the file) and that the marker never appears. A source scan
keeps new code from reintroducing a code-running loader.
"""
from __future__ import annotations

import ast
import gzip
import pickle
from pathlib import Path

import pytest
import torch

import memcore
from memcore import checkpoint
from memcore.safeload import load_numpy_pickle
from memcore_kit.testing import plant_code_pickle as plant

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_load_tensors_refuses_code(tmp_path, code_marker, fmt):
    bad = plant(tmp_path / "bad.pt", code_marker, fmt)
    with pytest.raises(memcore.MemcoreError, match="refused") as info:
        memcore.load_tensors(bad, what="extractor weights")
    assert str(bad) in str(info.value) and "extractor weights" in str(info.value)


def test_load_tensors_reads_tensors_and_names_missing_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3)}, good)
    assert torch.equal(memcore.load_tensors(good)["w"], torch.arange(3))
    with pytest.raises(memcore.MemcoreError, match="no such file"):
        memcore.load_tensors(tmp_path / "absent.pt", what="weights")
    with pytest.raises(memcore.MemcoreError, match="is a folder"):
        memcore.load_tensors(tmp_path, what="weights")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_checkpoints_refuse_code(tmp_path, code_marker, fmt):
    """--resume, train.init_from, sample and eval all read checkpoints through checkpoint.load."""
    bad = plant(tmp_path / "run" / "checkpoints" / "step-0000002.pt", code_marker, fmt)
    with pytest.raises(memcore.MemcoreError, match="refused"):
        checkpoint.load(bad)
    with pytest.raises(memcore.MemcoreError, match="refused"):
        memcore.load_run(tmp_path / "run")


def test_numpy_pickles_admit_arrays_only(tmp_path, code_marker):
    import numpy as np
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert (load_numpy_pickle(pickle.dumps(array), what="data", path="x") == array).all()
    bad = plant(tmp_path / "data.gz", code_marker, "gzip")
    with pytest.raises(memcore.MemcoreError, match="refused"):
        load_numpy_pickle(gzip.open(bad).read(), what="animal-mnist data file", path=bad)


def test_animal_mnist_reads_through_the_numpy_only_unpickler(tmp_path, code_marker, monkeypatch):
    pytest.importorskip("animal_mnist")
    from memcore_datasets.images import _numpy_pickle
    bad = plant(tmp_path / "animal_data_version_3.gz", code_marker, "gzip")
    with pytest.raises(memcore.MemcoreError, match="refused"):
        _numpy_pickle(bad, "animal-mnist data file")


# -- the source scan --------------------------------------------------------------------------
# Calls that unpickle with code execution unless told otherwise. A line may be exempted only by
# a `# trusted-pickle:` comment (on it or just above) saying why the file cannot come from a user.
_CODE_RUNNING = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
                 ("torch", "jit.load"), ("dill", "load"), ("joblib", "load")}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _offences(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        bad = False
        if name == "torch.load":
            flag = keywords.get("weights_only")
            bad = not (isinstance(flag, ast.Constant) and flag.value is True)
        elif name.endswith("np.load") or name == "numpy.load":
            flag = keywords.get("allow_pickle")
            bad = isinstance(flag, ast.Constant) and flag.value is True or flag is not None and \
                not isinstance(flag, ast.Constant)
        else:
            module, _, attr = name.partition(".")
            bad = (module, attr) in _CODE_RUNNING
        context = lines[max(node.lineno - 2, 0):node.lineno]  # the call's line and the one above
        if bad and not any("# trusted-pickle:" in line for line in context):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}(...)")
    return found


def test_no_code_running_loader_in_the_source():
    files = [p for folder in ("core", "plugins", "benchmarks", "tests")
             for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts]
    assert len(files) > 50
    offences = [o for f in files for o in _offences(f)]
    assert offences == [], "load these with memcore.load_tensors / load_numpy_pickle:\n" + \
        "\n".join(offences)


def test_the_scan_catches_what_it_is_for(tmp_path, monkeypatch):
    sample = ROOT / "tests" / "_scan_sample.py"
    sample.write_text("import pickle, torch, numpy as np\n"
                      "torch.load('a')\ntorch.load('a', weights_only=False)\n"
                      "pickle.load(open('a', 'rb'))\nnp.load('a', allow_pickle=True)\n"
                      "torch.load('a', weights_only=True)\nnp.load('a')\n")
    try:
        assert [o.rsplit(":", 2)[1] for o in _offences(sample)] == ["2", "3", "4", "5"]
    finally:
        sample.unlink()
