"""``memcore new-plugin NAME --kind KIND``: a pip-installable plugin package that works as generated.

The package holds one example component of the kind, registered by ``"module:attr"`` strings, a
recipe that uses it with the base plugin's ``dcgan`` backbones, the ``hinge`` loss and the
``fashion-mnist`` dataset, and tests built on :mod:`memcore_kit.contracts` and :mod:`memcore_kit.testing`::

    memcore-NAME/
      pyproject.toml            entry point [project.entry-points.memcore] NAME = "memcore_NAME.plugin"
      README.md
      memcore_NAME/plugin.py    registration only (cheap to import)
      memcore_NAME/<kind>.py    the component
      recipes/NAME.toml
      tests/test_NAME.py

A ``memory`` plugin is a block holding a :class:`memcore.Memory` (a key-value memory read by
attention), inserted with ``[[generator.blocks]]``, since memories reach a recipe through blocks.
The files are ``string.Template`` files in ``templates/`` (package data): the shared ones at the
top, ``<kind>/component.py.in`` and ``<kind>/tests.py.in`` per kind.
"""
from __future__ import annotations

import re
from pathlib import Path
from string import Template

import attrs

from memcore import __version__
from memcore.cliargs import out_folder
from memcore.errors import MemcoreError
from memcore.registry import API_VERSION

SCAFFOLD_KINDS = ("memory", "block", "generator", "discriminator", "loss", "metric", "dataset")
TEMPLATES = Path(__file__).parent / "templates"
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_NAME = 100   # memcore-NAME and the test file's name must stay folder and file names


@attrs.frozen
class Example:
    """The example component of a kind: how it is registered and described."""

    registered_as: str   # the registry kind ("block" for a memory: memories live in blocks)
    factory: str         # attribute of the component module
    options: str         # attribute of the component module, or "module:attr" of memcore
    help: str
    summary: str
    details: str         # README text; {package} is the package name


EXAMPLES = {
    "memory": Example(
        "block", "MemoryBlock", "MemoryBlockOptions",
        "A key-value memory read by attention, written FIFO after D.",
        "a key-value memory read by attention, as a block for any backbone.",
        "`{package}/memory.py`: `KeyValueMemory`, a `memcore.Memory` whose state (keys, values, "
        "write head) lives in buffers; `read` is attention over the slots, `write` replaces the "
        "oldest slots with the rows staged during the step, gathered from every process. "
        "`MemoryBlock` puts it into a backbone (`[[generator.blocks]]` or "
        "`[[discriminator.blocks]]`, `at` = a stage resolution) as x + gamma * "
        "out(read(query(x))), with gamma starting at 0."),
    "block": Example(
        "block", "ChannelGate", "ChannelGateOptions", "Channel gate (squeeze-and-excitation).",
        "a channel gate block for any backbone.",
        "`{package}/block.py`: `ChannelGate`, x * sigmoid(mlp(mean(x))), for "
        "`[[generator.blocks]]` or `[[discriminator.blocks]]`."),
    "generator": Example(
        "generator", "Generator", "GeneratorOptions",
        "Small convolutional generator with block slots.",
        "a small convolutional generator with block slots.",
        "`{package}/generator.py`: `Generator`, upsampling convolutions from a linear stem, with "
        "a block slot after every stage."),
    "discriminator": Example(
        "discriminator", "Discriminator", "DiscriminatorOptions",
        "Small spectrally normalised discriminator with block slots.",
        "a small spectrally normalised discriminator with block slots.",
        "`{package}/discriminator.py`: `Discriminator`, strided convolutions and a linear head "
        "on summed features, with a block slot after every stage."),
    "loss": Example(
        "loss", "RelativisticAverage", "memcore:LossOptions",
        "Relativistic average GAN loss (logistic link).", "the relativistic average GAN loss.",
        "`{package}/loss.py`: `RelativisticAverage`, a `memcore.Loss` for the D and G phases."),
    "metric": Example(
        "metric", "MeanImageDistance", "MeanImageOptions",
        "L1 distance of the mean generated and mean real image.",
        "a cheap metric comparing mean images.",
        "`{package}/metric.py`: `MeanImageDistance`, a `memcore.Metric` computed from this "
        "process's share of EMA samples, gathered over processes."),
    "dataset": Example(
        "dataset", "Shapes", "ShapesOptions",
        "Procedural discs and squares, 28 px grey, 2 classes.",
        "a procedural dataset of discs and squares.",
        "`{package}/dataset.py`: `Shapes`, an in-memory `memcore.ImageDataset` of uint8 images "
        "and int64 labels."),
}


def _registration(kind: str, name: str) -> str:
    """The ``registry.add(...)`` call of plugin.py, by ``"module:attr"`` strings."""
    e = EXAMPLES[kind]
    options = f'"{e.options}"' if ":" in e.options else f'f"{{_P}}.{kind}:{e.options}"'
    return (f'    registry.add("{e.registered_as}", "{name}", f"{{_P}}.{kind}:{e.factory}",\n'
            f'                 {options},\n                 help="{e.help}")\n')


def _recipe_values(kind: str, name: str) -> dict:
    """What the recipe template needs: the example in its place, base components elsewhere."""
    extra = ""
    if kind in ("memory", "block"):
        extra = f'\n[[generator.blocks]]\nkind = "{name}"\nat = 14  # 28 px images: stages 7, 14, 28\n'
    if kind == "metric":
        extra = f'\n[[metrics]]\nkind = "{name}"\nnum_samples = 512\n'
    return dict(
        data=f'kind = "{name if kind == "dataset" else "fashion-mnist"}"',
        generator=f'kind = "{name if kind == "generator" else "dcgan"}"\nz_dim = 64\nwidth = 16',
        discriminator=f'kind = "{name if kind == "discriminator" else "dcgan"}"\nwidth = 16',
        loss=name if kind == "loss" else "hinge", extra=extra)


def _render(template: str, values: dict) -> str:
    return Template((TEMPLATES / template).read_text()).substitute(values)


def generate(name: str, kind: str = "memory", directory: str | Path = ".") -> Path:
    """Write ``memcore-NAME`` into ``directory`` and return its path."""
    if not _NAME.match(name or "") or len(name) > MAX_NAME:
        raise MemcoreError(f"plugin name {name!r}: use lower-case letters, digits and single "
                           f"hyphens, starting with a letter, at most {MAX_NAME} characters "
                           "(e.g. 'kv-memory')")
    if kind not in SCAFFOLD_KINDS:
        raise MemcoreError(f"--kind {kind!r}: expected one of {', '.join(SCAFFOLD_KINDS)}")
    package = "memcore_" + name.replace("-", "_")
    root = Path(directory) / f"memcore-{name}"
    if root.exists():
        raise MemcoreError(f"{root} already exists; choose another name or --dir")
    e = EXAMPLES[kind]
    values = dict(name=name, package=package, dist=f"memcore-{name}", kind=kind,
                  api=API_VERSION, memcore_version=__version__,
                  component=f"{e.registered_as}:{name}", summary=e.summary,
                  details=e.details.format(package=package),
                  registration=_registration(kind, name), **_recipe_values(kind, name))
    files = {
        "pyproject.toml": _render("pyproject.toml.in", values),
        "README.md": _render("README.md.in", values),
        f"{package}/__init__.py": f'"""memcore-{name}: {e.summary}"""\n',
        f"{package}/plugin.py": _render("plugin.py.in", values),
        f"{package}/{kind}.py": _render(f"{kind}/component.py.in", values),
        f"recipes/{name}.toml": _render("recipe.toml.in", values),
        f"tests/test_{package[len('memcore_'):]}.py": _render(f"{kind}/tests.py.in", values),
    }
    for relative, text in files.items():
        path = root / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as exc:
            raise MemcoreError(f"--dir {directory}: cannot write {path}: "
                               f"{exc.strerror or exc}") from None
    return root


def configure(parser) -> None:
    parser.add_argument("name", help="Plugin name: the package is memcore-NAME, the component NAME.")
    parser.add_argument("--kind", choices=SCAFFOLD_KINDS, default="memory",
                        help="Kind of the example component (default: memory, as a block).")
    parser.add_argument("--dir", default=".", type=out_folder,
                        help="Folder to create memcore-NAME in.")


def command(args) -> int:
    from memcore.registry import get_registry
    root = generate(args.name, args.kind, args.dir)
    kind = EXAMPLES[args.kind].registered_as
    taken = get_registry().entries.get((kind, args.name))
    if taken is not None:
        print(f"note: {kind} '{args.name}' is already registered by plugin '{taken.plugin}'; "
              "installing both makes memcore refuse the second, so consider another name")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        print(f"  {path}")
    print(f"\nnext: cd {root} && pip install -e . && pytest && memcore run recipes/{args.name}.toml")
    return 0
