"""Two gloo processes give the same numbers as one process on the same samples, each rank
extracting only its share of the images."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("dist_fidelity.py")


# About 1 launch in 12 with a cold cache, a rank aborts while the processes exit (C++
# "terminate called without an active exception" after barrier + destroy_process_group; not
# reproducible on demand, not in the computation). Such a launch is retried once, cache cleared.
EXIT_ABORT = "terminate called without an active exception"


def _run(tmp_path, nproc):
    out = tmp_path / f"out-{nproc}.json"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--standalone"] if nproc > 1 else [sys.executable]
    for attempt in range(2 if nproc > 1 else 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "MEMCORE_CACHE": str(tmp_path / f"cache-{nproc}-{attempt}")}
        done = subprocess.run([*launcher, str(SCRIPT), str(out)], env=env, capture_output=True,
                              text=True, timeout=300)
        if done.returncode == 0 or EXIT_ABORT not in done.stderr:
            break
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.distributed
def test_two_processes_equal_one(tmp_path):
    one, two = _run(tmp_path, 1), _run(tmp_path, 2)
    # fake 61 + real 47 rows: one process extracts all, two split them 31+24 / 30+23
    assert one["rows_per_rank"] == [108] and two["rows_per_rank"] == [55, 53]
    for metric, values in one["results"].items():
        for name, value in values.items():
            assert two["results"][metric][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
