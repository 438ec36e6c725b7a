"""``memcore check KIND:NAME [--recipe R] [--nproc 2]``: a registered component's contract checks
from the command line, each contract printed with pass or fail, without writing a test.

Options come from ``--set key=value`` (the component's own recipe options) or from the
component's table in ``--recipe``; sizes from ``--resolution``/``--channels`` (for a block: the
stage it follows) or, with a recipe, from its dataset. ``--nproc 2`` adds the distributed
contract (``gathered-writes-identical``) for the memories of a block, generator or discriminator.
"""
from __future__ import annotations

import sys

from memcore.cliargs import count, processes
from memcore.errors import MemcoreError

CHECKED = ("block", "generator", "discriminator", "loss", "dataset", "metric")
MAX_SIDE, MAX_CHANNELS = 256, 1024   # a contract check runs on the CPU in seconds at these sizes


def configure(parser) -> None:
    parser.add_argument("component", metavar="KIND:NAME", help="e.g. block:self-attention")
    parser.add_argument("--recipe", help="Take the component's options (and the image size) "
                        "from this recipe.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="An option of the component, e.g. --set slots=8 (repeatable).")
    parser.add_argument("--resolution", type=count(1, MAX_SIDE), help="Image side (block: of "
                        "its stage); default 8 for a block, else 28 or the recipe's dataset.")
    parser.add_argument("--channels", type=count(1, MAX_CHANNELS), help="Image channels (block: "
                        "feature channels); default 16 for a block, else 1 or the recipe's "
                        "dataset.")
    parser.add_argument("--nproc", type=processes, default=0,
                        help="Also run the distributed contract on this many CPU processes.")


def _options(kind: str, name: str, args) -> tuple[dict, list]:
    """The component's options and (for a backbone) its blocks, from --recipe and --set."""
    from memcore.recipe import load_recipe, parse_override
    table, blocks = {}, []
    if args.recipe:
        _, resolved = load_recipe(args.recipe)
        table = _recipe_table(kind, name, resolved, args.recipe)
        blocks = table.pop("blocks", []) or []
    for item in args.set:
        path, value = parse_override(item)
        table[".".join(map(str, path))] = value
    table.pop("kind", None)
    return table, blocks


def _recipe_table(kind: str, name: str, resolved: dict, source: str) -> dict:
    if kind in ("generator", "discriminator", "dataset"):
        candidates = [resolved.get("data" if kind == "dataset" else kind) or {}]
    elif kind == "block":
        candidates = [b for role in ("generator", "discriminator")
                      for b in (resolved.get(role) or {}).get("blocks") or []]
    else:
        candidates = resolved.get("losses" if kind == "loss" else "metrics") or []
    table = next((dict(t) for t in candidates if t.get("kind") == name), None)
    if table is None:
        raise MemcoreError(f"--recipe {source}: no {kind} '{name}' in this recipe")
    return table


def _sizes(kind: str, args, options: dict) -> dict:
    if kind == "block":
        resolution = args.resolution or options.get("at") or 8
        if not (type(resolution) is int and 1 <= resolution <= MAX_SIDE):
            raise MemcoreError(f"at = {resolution!r}: expected a stage side in [1, {MAX_SIDE}] "
                               "for the check (or give --resolution)")
        return {"resolution": resolution, "channels": args.channels or 16}
    if args.recipe and kind in ("generator", "discriminator") and not (args.resolution
                                                                      and args.channels):
        from memcore.build import build_dataset
        from memcore.recipe import load_recipe
        data = build_dataset(load_recipe(args.recipe)[0])
        return {"resolution": args.resolution or data.resolution,
                "channels": args.channels or data.channels, "num_classes": data.num_classes}
    return {"resolution": args.resolution or 28, "channels": args.channels or 1}


def _run(kind: str, name: str, options: dict, blocks: list, sizes: dict) -> None:
    from . import contracts
    factory = contracts.factory_of(kind, name, options, blocks=blocks, **sizes)
    if kind == "block":
        contracts.check_block(factory, channels=sizes["channels"], resolution=sizes["resolution"])
    elif kind == "generator":
        contracts.check_generator(factory, resolution=sizes["resolution"],
                                  channels=sizes["channels"])
    elif kind == "discriminator":
        contracts.check_discriminator(factory, **sizes)
    elif kind == "loss":
        contracts.check_loss(factory)
    elif kind == "dataset":
        contracts.check_dataset(factory)
    else:
        contracts.check_metric(factory)


def command(args) -> int:
    from memcore.registry import get_registry
    from . import contracts
    kind, sep, name = args.component.partition(":")
    if not sep or kind not in CHECKED:
        raise MemcoreError(f"memcore check {args.component!r}: expected KIND:NAME with KIND one of "
                           f"{', '.join(CHECKED)} (a memory is checked through the block that "
                           "holds it)")
    entry = get_registry().get(kind, name)
    options, blocks = _options(kind, name, args)
    sizes = _sizes(kind, args, options)
    shown = ", ".join(f"{k} {v}" for k, v in sizes.items())
    print(f"{kind}:{name} (plugin '{entry.plugin}'), {shown}")
    results: dict[str, bool] = {}  # contract -> held (a loss's are checked once per phase)

    def report(checked_kind, contract, problem):
        if problem is None and contract in results:
            return
        results[contract] = problem is None
        print(f"  {'pass' if problem is None else 'FAIL'}  {contract}"
              + (f": {problem}" if problem else ""))
        sys.stdout.flush()

    with contracts.observing(report):
        try:
            _run(kind, name, options, blocks, sizes)
            if args.nproc > 1 and kind in ("block", "generator", "discriminator"):
                contracts.check_distributed(kind, name, options, nproc=args.nproc, blocks=blocks,
                                            resolution=sizes["resolution"],
                                            channels=sizes["channels"])
        except contracts.ContractViolation:
            pass  # reported above; later contracts depend on the broken one
        except RuntimeError as exc:  # the allocator's refusal (torch.OutOfMemoryError is one)
            if "allocate" not in str(exc):
                raise
            raise MemcoreError(f"{kind}:{name} at {shown}: more memory than this machine has "
                               f"({str(exc).splitlines()[0]}); give a smaller --resolution or "
                               "--channels") from None
    if not all(results.values()):
        print(f"{kind}:{name}: a contract is broken (the checks stop at the first broken one)")
        return 1
    print(f"{kind}:{name}: all {len(results)} contracts hold")
    return 0
