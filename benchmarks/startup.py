"""Start-up cost of the command line against ``python -c "import torch"``.

    OMP_NUM_THREADS=1 python benchmarks/startup.py [--repeats 5] [--json OUT.json]

Every case runs in a fresh process; the rounds interleave the cases (torch first in each round) so
machine noise hits them alike. The CPU time of a process (user + system, from ``wait4``) is what
is compared, its peak resident set is reported beside it. Prints a Markdown table with the median
of the rounds per case and its ratio to importing torch; also whether each command imported torch
at all (a flag the ``memcore`` process prints when ``MEMCORE_STARTUP_PROBE`` is set: see ``PROBE``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs the command line in-process, then reports whether torch was imported (stderr, last line).
PROBE = ("import sys; from memcore.cli import main; rc = main(sys.argv[1:]); "
         "print('torch-imported', 'torch' in sys.modules, file=sys.stderr); sys.exit(rc)")

CASES = {
    "python -c \"import torch\"": ["-c", "import torch"],
    "memcore --version": ["-c", PROBE, "--version"],
    "memcore plugins": ["-c", PROBE, "plugins"],
    "memcore list": ["-c", PROBE, "list"],
    "memcore show generator:dcgan": ["-c", PROBE, "show", "generator:dcgan"],
    "memcore validate recipes/quickstart.toml": ["-c", PROBE, "validate", "recipes/quickstart.toml"],
}


def run_once(args: list[str]) -> tuple[float, float, bool | None]:
    """(CPU seconds, peak RSS MiB, imported torch) of one ``python ARGS`` process."""
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"python {' '.join(args[:1])} ... {args[2:]} failed:\n{stderr}")
    flag = stderr.strip().splitlines()[-1] if "torch-imported" in stderr else None
    imported = None if flag is None else flag.endswith("True")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, imported


def measure(repeats: int) -> dict[str, dict]:
    samples = {name: [] for name in CASES}
    for _ in range(repeats):
        for name, args in CASES.items():
            samples[name].append(run_once(args))
    return {name: {"cpu_s": [s[0] for s in runs], "peak_rss_mib": [s[1] for s in runs],
                   "imports_torch": runs[0][2] if runs[0][2] is not None else True}
            for name, runs in samples.items()}


def table(results: dict[str, dict]) -> str:
    base = statistics.median(results[next(iter(CASES))]["cpu_s"])
    rows = ["| command | CPU time (median) | × import torch | peak RSS | imports torch |",
            "|---|---|---|---|---|"]
    for name, r in results.items():
        cpu = statistics.median(r["cpu_s"])
        rows.append(f"| `{name}` | {cpu:.2f} s | {cpu / base:.2f}× | "
                    f"{statistics.median(r['peak_rss_mib']):.0f} MiB | "
                    f"{'yes' if r['imports_torch'] else 'no'} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="Rounds (each runs every case once).")
    ap.add_argument("--json", type=Path, help="Also write every sample here.")
    args = ap.parse_args()
    results = measure(args.repeats)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
