"""The ``memcore`` command line. User mistakes print one clear message and exit non-zero
(2 for an invalid recipe) without a traceback; a traceback means a bug."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import attrs

from . import __version__, trust
from .cliargs import (IMAGE_EXTENSIONS, MAX_EVAL_SAMPLES, count, image_file, out_file, processes,
                      seed64)
from .errors import MemcoreError
from .registry import deferred


class Commands:
    """Handed to ``memcore_add_commands``: ``add(name, help, configure, handler)``; ``handler`` may
    be a ``"module:attr"`` string, imported only when the command runs. ``evaluates_run=True``
    declares a command that reads a finished run (its first argument) and writes only into it,
    as ``eval`` does: an experiment's ``after`` commands may run it (docs/trust.md)."""

    def __init__(self, subparsers):
        self.subparsers = subparsers
        self.handlers = {}
        self._viz = None
        self.plugin = "memcore"     # the plugin adding commands now (named in import errors)
        self.evaluation = set()     # the commands an experiment's `after` may run

    def add(self, name, help, configure, handler, *, evaluates_run=False):
        if name in self.handlers:
            raise MemcoreError(f"command '{name}' is defined twice")
        if evaluates_run:
            self.evaluation.add(name)
        parser = self.subparsers.add_parser(name, help=help, description=help)
        configure(parser)
        self.handlers[name] = deferred(handler, f"command '{name}' handler", self.plugin)
        return parser

    def add_viz(self, name, help, configure, handler):
        """A ``memcore viz NAME ...`` visualisation (several plugins share the ``viz`` command)."""
        if self._viz is None:
            viz = self.subparsers.add_parser("viz", help="Visualisations from plugins.")
            self._viz = viz.add_subparsers(dest="viz_command", required=True)
            self.handlers["viz"] = lambda args: self.handlers[("viz", args.viz_command)](args)
            self.evaluation.add("viz")
        if ("viz", name) in self.handlers:
            raise MemcoreError(f"visualisation '{name}' is defined twice")
        parser = self._viz.add_parser(name, help=help, description=help)
        configure(parser)
        self.handlers[("viz", name)] = deferred(handler, f"command 'viz {name}' handler", self.plugin)
        return parser


# -- run / validate ---------------------------------------------------------------------------
def cmd_validate(args) -> int:
    from .preflight import checked_recipe
    from .recipe import dumps, load_recipe
    if not args.recipe:
        raise MemcoreError("give a recipe file")
    _, resolved, _ = checked_recipe(lambda: load_recipe(args.recipe, args.set), args.recipe,
                                    portable=args.portable)
    print(dumps(resolved), end="")
    print(f"# {args.recipe}: valid", file=sys.stderr)
    return 0


def _relaunch(args) -> int:
    import subprocess
    argv = [a for a in sys.argv[1:]]
    i = argv.index("--nproc")
    del argv[i:i + 2]
    cmd = [sys.executable, "-m", "memcore.launch", "--standalone",
           f"--nproc_per_node={args.nproc}", "-m", "memcore"] + argv
    return _wait_passing_on_sigterm(subprocess.Popen(cmd))


def _wait_passing_on_sigterm(proc) -> int:
    """Wait for the launcher until it ends, whatever signals arrive meanwhile. A SIGTERM sent
    to this process alone is passed on (the launcher passes it to the workers); Ctrl-C reached
    them all already through the terminal. An interrupted run exits 128 + the signal."""
    import signal
    signum = None
    while True:
        try:
            code = proc.wait()
            return 128 + signum if signum and code else code
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            if signum == signal.SIGTERM:
                proc.send_signal(signum)


def cmd_run(args) -> int:
    from .runs import train
    if args.nproc and args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return _relaunch(args)
    if not args.recipe and not args.resume:
        raise MemcoreError("give a recipe file, or --resume RUN_DIR")
    if args.resume and args.overwrite:
        raise MemcoreError("--resume continues a run and --overwrite replaces one: give one of them")
    train(args.recipe, args.set, resume=args.resume, dry_run=args.dry_run, overwrite=args.overwrite)
    return 0


# -- plugins / list / show --------------------------------------------------------------------
def cmd_plugins(args) -> int:
    from .registry import get_registry
    reg = get_registry()
    rows = [{"name": p.name, "dist": p.dist, "version": p.version, "module": p.module,
             "status": p.status, "error": p.error, "components": p.components}
            for p in sorted(reg.plugins.values(), key=lambda p: p.name)]
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            status = r["status"] if r["status"] != "failed" else f"FAILED: {r['error']}"
            print(f"{r['name']:<14} {r['version'] or '-':<10} {status}")
            if r["components"] and r["status"] == "ok":
                print(f"{'':<14} {', '.join(r['components'])}")
    if args.check and failed:
        print(f"error: {len(failed)} plugin(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args) -> int:
    from .registry import KINDS, get_registry, unknown_kind
    reg = get_registry()
    if args.kind and args.kind not in KINDS:
        raise MemcoreError(unknown_kind(args.kind))
    for kind in [args.kind] if args.kind else KINDS:
        unavailable = reg.unavailable(kind)
        names = sorted(set(reg.names(kind)) | set(unavailable))
        if not names:
            if args.kind:  # asked for: say so rather than print nothing
                print(f"{kind}: none (no installed plugin registers one; `memcore plugins` "
                      "lists the plugins)")
            continue
        print(f"{kind}:")
        for name in names:
            if name in unavailable:
                print(f"  {name:<24} UNAVAILABLE: {unavailable[name]}")
            else:
                e = reg.entries[(kind, name)]
                print(f"  {name:<24} {e.help}  [{e.plugin}]")
    unknown = [p for p in reg.failed() if not p.components]
    if unknown:
        print("plugins that failed before registering anything (`memcore plugins` for details):")
        for p in unknown:
            print(f"  {p.name:<24} {p.error}")
    return 0


def describe_options(cls) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for every option of a config class."""
    rows = []
    for f in attrs.fields(cls):
        if f.default is attrs.NOTHING:
            default = "(required)"
        else:
            value = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
            default = repr(value)
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rows.append((f.name, str(t).replace("typing.", ""), default, f.metadata.get("help", "")))
    return rows


def cmd_show(args) -> int:
    from .config import defaults_of
    from .registry import KINDS, get_registry, unknown_kind
    kind, sep, name = args.component.partition(":")
    if not sep:
        raise MemcoreError(f"expected KIND:NAME, e.g. generator:dcgan (got {args.component!r})")
    if kind not in KINDS:
        raise MemcoreError(unknown_kind(kind))
    entry = get_registry().get(kind, name)
    cls = entry.load_config()
    print(f"{kind}:{name} — {entry.help} (plugin '{entry.plugin}')\n")
    for opt, t, default, help_text in describe_options(cls):
        print(f"  {opt:<18} {t:<24} default {default}\n      {help_text}")
    if kind in ("generator", "discriminator"):
        print(block_slots_text(kind, name))
    section, array = {"generator": ("generator", False), "discriminator": ("discriminator", False),
                      "dataset": ("data", False), "augment": ("augment", False),
                      "loss": ("losses", True), "metric": ("metrics", True),
                      "block": ("generator.blocks", True)}.get(kind, (f"{kind}", False))
    # required keys first, as a placeholder to replace (a block's `at`: a slot of the quickstart's
    # generator, so pasting works)
    required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
    table = {"kind": name, **{key: f"<{key}>" for key in required}, **defaults_of(cls)}
    if kind == "block":
        table["at"] = example_block_position()
    print("\n# TOML\n" + marked_required(toml_table(section, table, array), required), end="")
    return 0


def marked_required(snippet: str, required: list[str]) -> str:
    """The snippet with ``# required`` after each required key of its first table (a pasted
    snippet without them is refused; a placeholder such as ``path = "<path>"`` is to be replaced)."""
    lines = snippet.split("\n")
    for i, line in enumerate(lines):
        if i and line.startswith("["):  # a sub-table: required keys are top-level options
            break
        if line.partition(" = ")[0] in required:
            lines[i] = f"{line}  # required"
    return "\n".join(lines)


def block_slots_text(kind: str, name: str) -> str:
    """Where blocks can go, per data shape: ``at`` values with the channels a block sees there."""
    from .preflight import offered_slots
    found = offered_slots(kind, name)
    if not found:
        return f"\n  block slots: none ({kind} '{name}' takes no [[{kind}.blocks]])"
    lines = [f"\n  block slots ([[{kind}.blocks]] at = resolution; channels there), default options:"]
    for (resolution, channels), slots in found.items():
        shown = ", ".join(f"{at} ({c} ch)" for at, c in slots.items())
        lines.append(f"    {resolution} px x {channels} data: {shown}")
    return "\n".join(lines)


def example_block_position() -> int:
    """A block position that validates in the quickstart recipe (dcgan on 28 px Fashion-MNIST)."""
    from .preflight import offered_slots
    slots = offered_slots("generator", "dcgan").get((28, 1), {14: 0})
    return sorted(slots)[len(slots) // 2]


def toml_table(path: str, table: dict, array: bool = False) -> str:
    """``[path]`` (or ``[[path]]``) with its scalar keys, then its sub-tables as ``[path.key]``."""
    import tomli_w
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    out = (f"[[{path}]]\n" if array else f"[{path}]\n") + tomli_w.dumps(scalars)
    for key, sub in table.items():
        if isinstance(sub, dict):
            out += "\n" + toml_table(f"{path}.{key}", sub)
    return out


# -- sample / eval ----------------------------------------------------------------------------
def load_generator(run: str, use_ema: bool = True, which: str = "latest"):
    """(G, recipe, state) of a run; see :func:`memcore.load_run` for everything else."""
    from .runs import load_run
    loaded = load_run(run, which, use_ema)
    return loaded.G, loaded.recipe, loaded.state


def cmd_sample(args) -> int:
    from .images import load_image, save_grid
    from .trainer import sample_images
    from .cliargs import fits_in_memory
    G, _, state = load_generator(args.run, not args.no_ema, args.checkpoint)
    info = state["dataset"]
    pixels = info["channels"] * info["resolution"] ** 2
    fits_in_memory(f"--n {args.n}", f"{args.n:,} images of {info['channels']} x "
                   f"{info['resolution']} x {info['resolution']}",
                   args.n * pixels * (4 + 1))   # float32 images, then their uint8 grid
    condition = {}
    if args.exemplar:
        condition["exemplar"] = torch_cat([load_image(Path(p), info["resolution"], info["channels"])
                                           for p in args.exemplar])
    images = sample_images(G, args.n, args.seed, "cpu", condition=condition)
    out = save_grid(images, Path(args.out))
    print(f"{args.n} samples from step {state['step']} ({'G' if args.no_ema else 'EMA G'}) -> {out}")
    return 0


def _eval_variants(args, loaded) -> list:
    """The plugins' ways to evaluate the run (memcore_eval_variants), or the run as it is."""
    import contextlib
    from .registry import get_registry
    variants = []
    for impl in get_registry().pm.hook.memcore_eval_variants.get_hookimpls():
        found = impl.function(args=args, run=loaded)
        if found:
            variants += list(found)
    return variants or [("", lambda repeat: contextlib.nullcontext())]


def _summarise(outs: list[dict]) -> dict:
    """One metric's results over repeats: numbers as the mean (plus ``<key>_repeats`` and
    ``<key>_std_repeats`` when repeated), protocol strings from the first."""
    import statistics
    first = dict(outs[0])
    if len(outs) == 1:
        return first
    for key, value in outs[0].items():
        if isinstance(value, (int, float)):
            values = [o[key] for o in outs]
            first[key] = statistics.fmean(values)
            first[f"{key}_std_repeats"] = statistics.stdev(values)
            first[f"{key}_repeats"] = values
    return first


def _metric_table(text: str) -> dict:
    """``fid`` or ``fid@fashion-classifier`` (metric name, optionally its extractor)."""
    name, _, extractor = text.partition("@")
    return {"kind": name, "extractor": extractor} if extractor else {"kind": name}


def cmd_eval(args) -> int:
    from .build import build_dataset, build_metrics
    from .evaluation import MetricSession
    from . import checkpoint
    from .recipe import apply_overrides, recipe_from_dict
    from .runs import load_run
    loaded = load_run(args.run, args.checkpoint)
    G, state = loaded.G, loaded.state
    raw = checkpoint.embedded_recipe(state, loaded.path)
    if args.metrics:
        raw["metrics"] = [_metric_table(m.strip()) for m in args.metrics.split(",") if m.strip()]
    if args.num_samples:
        for m in raw.get("metrics", []):
            m["num_samples"] = args.num_samples
    recipe, _ = recipe_from_dict(apply_overrides(raw, args.set), "eval")
    if not recipe.metrics:
        raise MemcoreError("no metrics: the run's recipe has no [[metrics]]; pass --metrics fid,kid")
    dataset = build_dataset(recipe)
    metrics = build_metrics(recipe, dataset)
    for m in metrics:
        m.preflight()
    device = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    G.to(device)
    results = []
    for label, make_context in _eval_variants(args, loaded):
        per_repeat = []
        for repeat in range(args.repeats):
            session = MetricSession(G, dataset, device, loaded.run_dir, state["step"], recipe,
                                    seed=repeat)
            with make_context(repeat):
                per_repeat.append([m.compute(session) for m in metrics])
        for i, spec in enumerate(recipe.metrics):
            outs = [r[i] for r in per_repeat]
            results.append({"metric": spec.kind, "step": state["step"],
                            **({"variant": label} if label else {}), **_summarise(outs)})
            print(json.dumps(results[-1]))
    target = loaded.run_dir / f"eval-step-{state['step']:07d}.json"
    from . import safewrite
    safewrite.write_text(target, json.dumps(results, indent=2), inside=loaded.run_dir)
    print(f"-> {target}")
    return 0


# -- entry ------------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(prog="memcore", description="Memory and attention in GANs.")
    parser.add_argument("--version", action="store_true", help="Print versions and plugins.")
    parser.add_argument("--plugins-dir", metavar="DIR", default=os.environ.get("MEMCORE_PLUGINS_DIR"),
                        help="Load every *.py file in DIR as a plugin (research code not worth a "
                        "package yet); also $MEMCORE_PLUGINS_DIR.")
    parser.add_argument("--trust-local-plugins", action="store_true",
                        help="Import the plugin files a recipe lists in [plugins] local (a "
                        "recipe, run or checkpoint is data: without this flag, or their folder "
                        "in trusted_plugin_dirs of your settings, memcore refuses them; "
                        "docs/trust.md). Accepted anywhere on the command line.")
    sub = parser.add_subparsers(dest="command")
    commands = Commands(sub)

    def recipe_args(p):
        p.add_argument("recipe", nargs="?", help="Recipe TOML file.")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="Override a recipe key, e.g. --set train.steps=100 (repeatable).")

    def run_args(p):
        recipe_args(p)
        p.add_argument("--dry-run", action="store_true", help="Validate and print the resolved recipe.")
        p.add_argument("--resume", metavar="RUN_DIR", help="Continue a run from its last checkpoint.")
        p.add_argument("--overwrite", action="store_true", help="Replace the earlier run a fixed "
                       "run.dir holds (default: refuse it).")
        p.add_argument("--nproc", type=processes, default=0,
                       help="Start N processes with torchrun.")
    commands.add("run", "Train from a recipe.", run_args, cmd_run)
    def validate_args(p):
        recipe_args(p)
        p.add_argument("--portable", action="store_true", help="For a recipe meant for another "
                       "machine: look at no file here (dataset, extractor weights, init_from); "
                       "networks and block positions, which need the data's shape, go unchecked.")
    commands.add("validate", "Check everything a run would check before step 1, and print the "
                 "recipe resolved.", validate_args, cmd_validate)
    def plugins_args(p):
        p.add_argument("--json", action="store_true")
        p.add_argument("--check", action="store_true",
                       help="Exit with status 1 when any plugin failed to load (for CI).")
    commands.add("plugins", "List plugins with versions and status.", plugins_args, cmd_plugins)
    commands.add("list", "List registered components.",
                 lambda p: p.add_argument("kind", nargs="?"), cmd_list)
    commands.add("show", "Show a component's options and a TOML snippet.",
                 lambda p: p.add_argument("component", metavar="KIND:NAME"), cmd_show)

    def sample_args(p):
        p.add_argument("run", help="Run directory or checkpoint file.")
        p.add_argument("--n", type=count(), default=64, help="Images in the grid.")
        p.add_argument("--seed", type=seed64, default=0)
        p.add_argument("--out", type=out_file(*IMAGE_EXTENSIONS), default="samples.png")
        p.add_argument("--no-ema", action="store_true", help="Use the trained G, not the EMA G.")
        p.add_argument("--checkpoint", choices=["latest", "best"], default="latest")
        p.add_argument("--exemplar", action="append", metavar="IMAGE", type=image_file,
                       help="Condition on this image (generators that support exemplars).")
    commands.add("sample", "Write a grid of samples from a run.", sample_args, cmd_sample,
                 evaluates_run=True)

    from .registry import get_registry
    reg = get_registry()

    def eval_args(p):
        p.add_argument("run", help="Run directory or checkpoint file.")
        p.add_argument("--metrics", help="Comma-separated metrics, each NAME or NAME@EXTRACTOR "
                       "(default: the recipe's).")
        p.add_argument("--num-samples", type=count(1, MAX_EVAL_SAMPLES, "generated images; "
                       "FID's protocol uses 50,000"))
        p.add_argument("--checkpoint", choices=["latest", "best"], default="latest")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="Override the run's recipe for this evaluation, e.g. "
                       "--set metrics.0.extractor=efficientnet-lite0.")
        p.add_argument("--repeats", type=count(1, 100), default=1,
                       help="Evaluate with this many sample seeds; report mean and std.")
        for impl in reg.pm.hook.memcore_eval_options.get_hookimpls():
            try:
                impl.function(parser=p)
            except Exception as exc:  # one plugin's options must not break eval
                print(f"warning: plugin '{impl.plugin_name}' could not add eval options: {exc}",
                      file=sys.stderr)
    commands.add("eval", "Compute metrics on a finished run; writes JSON into the run.",
                 eval_args, cmd_eval, evaluates_run=True)

    for impl in reg.pm.hook.memcore_add_commands.get_hookimpls():
        commands.plugin = impl.plugin_name
        try:
            impl.function(commands=commands)
        except Exception as exc:  # a plugin's broken command must not break the others
            print(f"warning: plugin '{impl.plugin_name}' could not add commands: {exc}", file=sys.stderr)
    _tell_trust(parser, commands)
    return parser, commands


def _tell_trust(parser, commands) -> None:
    """What an experiment's after commands are checked against (memcore.trust)."""
    trust.know_command_line([o for a in parser._actions for o in a.option_strings],
                            commands.evaluation)


def torch_cat(tensors):
    import torch
    return torch.cat(tensors)


def version_text() -> str:
    from .registry import get_registry
    lines = [f"memcore {__version__} from {Path(__file__).parent}", "registered plugins:"]
    for p in sorted(get_registry().plugins.values(), key=lambda p: p.name):
        lines.append(f"  {p.name} {p.version or '-'} at {p.module} [{p.status}]")
    return "\n".join(lines)


def load_plugins_dir(folder: str | None, given_as: str = "--plugins-dir") -> None:
    """``--plugins-dir``: every ``*.py`` file of the folder, registered as ``local:<stem>`` and
    isolated like an installed plugin: a broken file is named on stderr and by ``memcore
    plugins`` and ``list`` (strict mode refuses it), and the rest keeps working. ``given_as``:
    how the user gave the folder, for messages."""
    from .registry import get_registry
    if not folder:
        return
    if not Path(folder).is_dir():
        raise MemcoreError(f"{given_as} {folder}: no such folder")
    registry = get_registry()
    for path in sorted(Path(folder).glob("*.py")):
        if f"local:{path.stem}" not in registry.plugins:
            info = registry.load_file(path, f"local:{path.stem}")
            if info.status == "failed":
                print(f"warning: {given_as} {folder}: {path} (plugin '{info.name}') "
                      f"{info.error}; skipped", file=sys.stderr)


def _plugins_dir_arg(argv) -> tuple[str | None, str]:
    """The --plugins-dir value, read before the parser is built (plugins add commands to it),
    and how it was given (the option, or the environment variable)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg == "--plugins-dir" and i + 1 < len(argv):
            return argv[i + 1], "--plugins-dir"
        if arg.startswith("--plugins-dir="):
            return arg.partition("=")[2], "--plugins-dir"
    return os.environ.get("MEMCORE_PLUGINS_DIR"), "$MEMCORE_PLUGINS_DIR ="


def _interrupt_on_sigterm():
    """SIGTERM ends memcore like Ctrl-C (cleanly, exit 143) instead of killing it mid-write;
    returns the handler to put back (None where signals cannot be set: not the main thread)."""
    import signal

    def raise_interrupted(signum, frame):
        from .errors import Interrupted
        raise Interrupted(signum)
    try:
        return signal.signal(signal.SIGTERM, raise_interrupted)
    except ValueError:
        return None


def main(argv=None) -> int:
    argv, trusted = trust.take_flag(sys.argv[1:] if argv is None else argv)
    plugins_dir, given_as = _plugins_dir_arg(argv)
    with trust.granted(trusted, plugins_dir):
        return _main(argv, plugins_dir, given_as)


def _main(argv, plugins_dir, given_as) -> int:
    import signal
    previous_sigterm = _interrupt_on_sigterm()
    try:
        load_plugins_dir(plugins_dir, given_as)
        parser, commands = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # argparse's refusal (2) or --help (0): a status, as below
            return stop.code
        if args.version:
            print(version_text())
            return 0
        if not args.command:
            parser.print_help()
            return 2
        return int(commands.handlers[args.command](args) or 0)
    except MemcoreError as exc:
        if not (exc.every_rank and os.environ.get("RANK", "0") != "0"):
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as memcore.errors.Interrupted
        print(f"interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return getattr(exc, "exit_code", 128 + signal.SIGINT)
    except Exception as exc:  # a bug: one paragraph naming whose code it is, not a traceback
        if os.environ.get("MEMCORE_DEBUG") == "1":
            raise
        from .preflight import describe_crash
        print(f"error: {describe_crash(exc)}", file=sys.stderr)
        return 1
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
