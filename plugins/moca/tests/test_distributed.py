import os
import subprocess
import sys
from pathlib import Path


def test_memory_identical_on_two_processes(tmp_path):
    script = Path(__file__).with_name("dist_memory.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(script)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("identical") == 2
