"""Registration only: the commands' arguments; sweep, compare and matplotlib are imported when a
command runs or a run ends."""
from pathlib import Path

import memcore
from memcore.cliargs import CORES, count, finite_float, processes


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_add_commands(commands):
    commands.add("sweep", "Train every variant x seed of an experiment file (resumable).",
                 sweep_args, cmd_sweep)
    commands.add("compare", "Compare runs: metrics over seeds with intervals and tests, figures.",
                 compare_args, cmd_compare)


@memcore.hookimpl
def memcore_run_finished(run_dir, notes):
    from .report import write_report
    write_report(run_dir, Path(run_dir).name, notes)


def cmd_sweep(args) -> int:
    from .sweep import sweep
    return sweep(Path(args.experiment), jobs=args.jobs, nproc=args.nproc, cores=args.cores,
                 dry_run=args.dry_run, portable=args.portable, status_every=args.status_every,
                 plugins_dir=args.plugins_dir)


def sweep_args(p):
    p.add_argument("experiment", metavar="EXPERIMENT", help="Experiment TOML file "
                   "(docs/experiments.md).")
    p.add_argument("--jobs", type=count(1, CORES), default=1, help="Runs at once, as "
                   "separate processes; the cores are divided between them.")
    p.add_argument("--nproc", type=processes, default=0, help="Processes per run (torchrun), "
                   "as for memcore run --nproc.")
    p.add_argument("--cores", type=count(1, CORES, "this machine's cores"),
                   help="Cores to divide (default: those this process may use).")
    p.add_argument("--dry-run", action="store_true", help="Validate and list what would run.")
    p.add_argument("--portable", action="store_true", help="With --dry-run: validate without "
                   "this machine's datasets and weights (an experiment meant for another one).")
    p.add_argument("--status-every", type=finite_float(0, 86400, lo_open=True), default=60.0,
                   metavar="SECONDS",
                   help="Seconds between progress lines of the running runs.")


def cmd_compare(args) -> int:
    from .compare import compare
    return compare(args.runs, metric=args.metric, out=args.out, as_json=args.json,
                   baseline=args.baseline, smooth=args.smooth)


def compare_args(p):
    p.add_argument("runs", nargs="+", metavar="DIR|RUN", help="Run folders, or folders holding "
                   "runs (a sweep's <root>/<experiment>).")
    p.add_argument("--metric", action="append", metavar="NAME", help="Only this metric (fid, or "
                   "fid@fashion-classifier; repeatable).")
    p.add_argument("--baseline", metavar="VARIANT", help="Variant the others are tested against "
                   "(default: the experiment's, else the first).")
    p.add_argument("--out", metavar="FILE", help="Write the report here (.md; .json with "
                   "--json) and the figures next to it (FILE-stem-*.png); default: print the "
                   "report, no figures.")
    p.add_argument("--json", action="store_true", help="The report as JSON instead of Markdown.")
    p.add_argument("--smooth", type=int, default=10, metavar="N",
                   help="Moving average over N log lines for the loss figure.")
