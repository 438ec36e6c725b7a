"""`memcore run --nproc 2` starts two processes through torchrun."""
import subprocess
import sys

import pytest

from helpers import tiny_recipe, write_recipe


@pytest.mark.slow
@pytest.mark.distributed
def test_nproc_convenience(tmp_path):
    file = write_recipe(tmp_path / "n.toml", tiny_recipe())
    proc = subprocess.run([sys.executable, "-m", "memcore", "run", str(file), "--nproc", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 process(es)" in proc.stdout
    assert (tmp_path / "runs" / "0001-n" / "checkpoints" / "step-0000004.pt").exists()
