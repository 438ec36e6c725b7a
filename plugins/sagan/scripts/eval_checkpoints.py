"""FID of every kept checkpoint of finished runs that were trained without [[metrics]].

Each `memcore eval CHECKPOINT` writes eval-step-N.json into the run directory, where
`memcore study --plot-only` finds it.

    OMP_NUM_THREADS=1 python plugins/sagan/scripts/eval_checkpoints.py RUN_DIR...
"""
import sys
from pathlib import Path

from memcore.cli import main

for run in map(Path, sys.argv[1:]):
    for checkpoint in sorted((run / "checkpoints").glob("step-*.pt")):
        assert main(["eval", str(checkpoint), "--metrics", "fid", "--num-samples", "1000",
                     "--set", "metrics.0.extractor=fashion-classifier"]) == 0
