"""The generated corpus of bad command-line arguments: every option of every subcommand that takes
a value (memcore's and the installed plugins' commands, ``viz`` ones included), given values of
the wrong type, zero, negative, huge (1e9, 10**30), NaN and infinite, and for path options a
folder, a file where a folder is needed, a read-only place and an unknown extension.

Cases come from the real parser (``memcore.cli.build_parser``) at collection time, so a plugin's
new command is covered by installing it. Each bad value runs ``memcore.cli.main`` in-process and
must end with exit 2 in seconds, a message naming the option and the value, no traceback and
nothing written; each value inside the option's range must parse. Then the resource bombs,
``--set`` values beyond Python's limits, sweep inputs, and all problems of a recipe in one round.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import time
from pathlib import Path

import attrs
import pytest
import tomli_w
from PIL import Image

from memcore import cliargs
from memcore.cli import build_parser, main
from memcore_kit.testing import tiny_recipe, train

# compare's arguments and inputs belong to its own rewrite (issue 27) and are tested with it
NOT_HERE = {"compare"}
SECONDS = 10   # a refusal comes from the parser or before anything heavy: never a long wait


# -- the options --------------------------------------------------------------------------------
@attrs.frozen
class Option:
    command: tuple          # ("sample",) or ("viz", "moca")
    flag: str               # "--n"
    action: argparse.Action
    positionals: tuple      # placeholders for the command's positional arguments

    def argv(self, value: str) -> list[str]:
        # --flag=value: "-inf" as a separate word would be read as an option, not as the value
        return [*self.command, *self.positionals, f"{self.flag}={value}"]

    @property
    def id(self) -> str:
        return f"{' '.join(self.command)} {self.flag}"


def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name not in NOT_HERE:
                    yield from _subcommands(sub, prefix + (name,))
            return
    if prefix:
        yield prefix, parser


def options() -> list[Option]:
    parser, _ = build_parser()
    out = []
    for command, sub in _subcommands(parser):
        positionals = tuple("x" for a in sub._actions if not a.option_strings and a.nargs != "?")
        out += [Option(command, a.option_strings[-1], a, positionals) for a in sub._actions
                if a.option_strings and a.type is not None]
    return out


OPTIONS = options()


def _integer_bad(lo: int, hi: int) -> list[str]:
    return ["abc", "", "1.5", "1e9" if hi >= 10**9 else str(10**9), str(lo - 1), "-5", str(hi + 1),
            str(10**30), "9" * 5000, "nan", "inf"]


def _float_bad(lo: float, hi: float, lo_open: bool) -> list[str]:
    bad = ["abc", "", "nan", "-nan", "inf", "-inf", "1e400", str(hi * 2 + 1), str(10**30)]
    bad += [repr(lo)] if lo_open else [repr(lo - 1)] if math.isfinite(lo) else []
    return bad


GENERIC_BAD = ["abc", "nan", "inf", "-1", str(10**30)]   # what no option of any type accepts


def bad_values(option: Option) -> list[str]:
    t = option.action.type
    if hasattr(t, "lo_open"):
        return _float_bad(*t.bounds, t.lo_open)
    if hasattr(t, "bounds"):
        return _integer_bad(*t.bounds)
    if hasattr(t, "extensions") or t in (cliargs.out_folder, cliargs.image_file):
        return []   # paths: the cases below, made in the test's folder
    return GENERIC_BAD


def valid_values(option: Option) -> list[str]:
    t = option.action.type
    if hasattr(t, "lo_open"):
        lo, hi = t.bounds
        return [repr(hi), repr(lo + 1 if t.lo_open else lo)]
    if hasattr(t, "bounds"):
        return [str(b) for b in t.bounds]
    return []


BAD = [(o, v) for o in OPTIONS for v in bad_values(o)]
VALID = [(o, v) for o in OPTIONS for v in valid_values(o)]


def run_main(argv, cwd: Path) -> tuple[int, str, float]:
    err = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue(), time.monotonic() - start


def refused(argv, cwd: Path, *names: str) -> str:
    before = sorted(p.name for p in cwd.iterdir())
    code, err, seconds = run_main(argv, cwd)
    assert code == 2, (argv[:6], err)
    assert "Traceback" not in err and "a bug" not in err, err
    for name in names:
        assert name in err, (name, err)
    assert sorted(p.name for p in cwd.iterdir()) == before, "something was written"
    assert seconds < SECONDS, (argv[:6], seconds)
    return err


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- every option, generated values -------------------------------------------------------------
@pytest.mark.parametrize("option,value", BAD, ids=[f"{o.id}={v[:12]}" for o, v in BAD])
def test_bad_value_is_refused(option, value, folder):
    shown = [repr(value)] if len(value) < 100 else []   # the message repeats the value
    refused(option.argv(value), folder, f"argument {option.flag}", *shown)


@pytest.mark.parametrize("option,value", VALID, ids=[f"{o.id}={v}" for o, v in VALID])
def test_value_in_range_parses(option, value):
    parser, _ = build_parser()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            parser.parse_args(option.argv(value))
        except SystemExit:
            pytest.fail(f"{option.id} {value}: refused: {err.getvalue()}")


def test_every_numeric_option_has_a_checked_type():
    """An option with a number as default (or an int/float type) goes through memcore.cliargs."""
    parser, _ = build_parser()
    unchecked = [f"{' '.join(c)} {a.option_strings[-1]}" for c, sub in _subcommands(parser)
                 for a in sub._actions if a.option_strings and
                 (a.type in (int, float) or (a.type is None and not a.choices and
                                             type(a.default) in (int, float)))]
    assert not unchecked, unchecked
    assert len(BAD) > 200 and {o.command[0] for o in OPTIONS} >= {"run", "sample", "eval", "sweep",
                                                                   "check", "viz"}


# -- path options -------------------------------------------------------------------------------
def _read_only(monkeypatch, place: Path) -> None:
    """``place`` refuses writes as a read-only folder would (the tests may run as root, whom
    chmod does not stop)."""
    real = os.access
    monkeypatch.setattr(cliargs.os, "access", lambda p, mode: False if Path(p).resolve() == place
                        and mode & os.W_OK else real(p, mode))


def path_cases(folder: Path, kind: str) -> dict[str, str]:
    (folder / "a-file.txt").write_text("not an image\n")
    (folder / "sub").mkdir()
    cases = {"a folder": str(folder / "sub"), "under a file": str(folder / "a-file.txt" / "o.png"),
             "read-only": str(folder / "ro" / "o.png"), "nul": "o\0.png"}
    if kind == "file":
        cases["unknown extension"] = str(folder / "out.foo")
        cases["no extension"] = str(folder / "out")
    if kind == "folder":
        del cases["a folder"]
        cases["a file"] = str(folder / "a-file.txt")
    if kind == "image":
        cases = {"a folder": str(folder / "sub"), "missing": str(folder / "none.png"),
                 "a text file": str(folder / "a-file.txt"), "empty": str(folder / "empty.png"),
                 "nul": "o\0.png"}
        (folder / "empty.png").write_bytes(b"")
    return cases


def _kind(option: Option) -> str | None:
    t = option.action.type
    return ("file" if hasattr(t, "extensions") else "folder" if t is cliargs.out_folder
            else "image" if t is cliargs.image_file else None)


PATHS = [o for o in OPTIONS if _kind(o)]


@pytest.mark.parametrize("option", PATHS, ids=[o.id for o in PATHS])
def test_bad_paths_are_refused(option, folder, monkeypatch):
    (folder / "ro").mkdir()
    _read_only(monkeypatch, folder / "ro")
    for name, value in path_cases(folder, _kind(option)).items():
        err = refused(option.argv(value), folder, f"argument {option.flag}")
        assert "expected" in err, (name, err)


@pytest.mark.parametrize("option", PATHS, ids=[o.id for o in PATHS])
def test_good_paths_parse(option, tmp_path):
    parser, _ = build_parser()
    kind = _kind(option)
    if kind == "image":
        Image.new("L", (8, 8)).save(tmp_path / "x.png")
        value = tmp_path / "x.png"
    else:
        value = tmp_path / "new" / ("out" + (option.action.type.extensions[0]
                                             if kind == "file" else ""))
    got = getattr(parser.parse_args(option.argv(str(value))), option.action.dest)
    assert Path(got[0] if isinstance(got, list) else got) == value
    assert not (tmp_path / "new").exists()   # checking a place creates nothing


# -- resource bombs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train(tiny_recipe(), tmp_path_factory.mktemp("run"), steps=2)


def test_sample_of_more_images_than_memory_names_the_size(tiny_run, folder):
    err = refused(["sample", tiny_run, "--n", "1000000000", "--out", folder / "s.png"], folder,
                  "--n 1000000000", "GiB", "memory")
    assert "1 x 28 x 28" in err


@pytest.mark.parametrize("argv,name", [
    (["eval", "RUN", "--num-samples", "1000000000"], "--num-samples"),
    (["eval", "RUN", "--repeats", "1000000000"], "--repeats"),
    (["check", "generator:dcgan", "--resolution", "100000", "--channels", "3"], "--resolution"),
    (["check", "block:self-attention", "--channels", "1000000"], "--channels"),
    (["sweep", "e.toml", "--cores", "1000"], "--cores"),
    (["run", "r.toml", "--nproc", "100000"], "--nproc"),
])
def test_bombs_on_the_command_line_are_refused(argv, name, folder):
    refused(argv, folder, f"argument {name}")


def test_check_of_a_block_at_an_absurd_side_is_refused(folder):
    refused(["check", "block:self-attention", "--set", "at=100000"], folder, "at = 100000")


def write(path: Path, recipe: dict) -> Path:
    path.write_text(tomli_w.dumps(recipe))
    return path


def test_grid_size_beyond_any_grid_is_refused(folder):
    write(folder / "r.toml", tiny_recipe())
    refused(["validate", "r.toml", "--set", "train.grid_size=10000000"], folder,
            "train.grid_size = 10000000", "[1, 4096]")


@pytest.mark.parametrize("seeds,variants", [(10**6, 1), (1, 10**5)])
def test_experiments_of_too_many_runs_are_refused_quickly(seeds, variants, folder):
    write(folder / "r.toml", tiny_recipe())
    (folder / "e.toml").write_text(
        'base = "r.toml"\n' + f"seeds = [{', '.join(map(str, range(seeds)))}]\n"
        + "".join(f'[[variants]]\nname = "v{i}"\n' for i in range(variants)))
    refused(["sweep", "e.toml", "--dry-run"], folder, f"{seeds * variants:,} runs",
            "at most 10,000")


# -- --set beyond Python's limits ---------------------------------------------------------------
@pytest.mark.parametrize("item,expected", [
    ("train.steps=" + "1" * 5000, "4300 digits"),
    ("train.steps=" + "[" * 3000 + "]" * 3000, "nested"),
    ("train.steps=" + "{a=" * 3000 + "1" + "}" * 3000, "nested"),
    ('run.dir="runs/a\\u0000b"', "NUL"),
    ("run.dir=runs/a\0b", "NUL"),
    ("train\0.steps=3", "NUL"),
    ("losses." + "9" * 5000 + ".weight=1", "losses"),
    (".".join(["a"] * 3000) + "=1", "at most 64"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_set_values_beyond_limits_are_refused(item, expected, command, folder):
    write(folder / "r.toml", tiny_recipe())
    refused([command, "r.toml", "--set", item], folder, expected)


def test_recipe_file_beyond_limits_is_refused(folder):
    (folder / "r.toml").write_text(tomli_w.dumps(tiny_recipe()) + "x = " + "7" * 5000 + "\n")
    refused(["validate", "r.toml"], folder, "not valid TOML", "4300 digits")


# -- sweep inputs -------------------------------------------------------------------------------
def experiment(folder: Path, root: str = "runs") -> Path:
    write(folder / "r.toml", tiny_recipe())
    (folder / "e.toml").write_text(f'base = "r.toml"\nroot = "{root}"\nseeds = [0]\nsteps = 2\n'
                                   '[[variants]]\nname = "a"\n')
    return folder / "e.toml"


@pytest.mark.parametrize("make,expected", [
    (lambda d: (d / "rootfile").write_text("x"), "rootfile is a file"),
    (lambda d: (d / "rootfile").mkdir() or (d / "rootfile" / "e").write_text("x"),
     "rootfile/e is a file"),
])
def test_sweep_root_that_is_a_file_is_refused(make, expected, folder):
    experiment(folder, "rootfile")
    make(folder)
    for dry in ([], ["--dry-run"]):
        refused(["sweep", "e.toml", *dry], folder, "root = 'rootfile'", expected)


def test_sweep_root_read_only_is_refused(folder, monkeypatch):
    experiment(folder, "ro")
    (folder / "ro").mkdir()
    _read_only(monkeypatch, folder / "ro")
    refused(["sweep", "e.toml"], folder, "root = 'ro'", "not writable")


def test_sweep_names_a_saved_recipe_that_is_not_utf8(folder):
    experiment(folder)
    run_dir = folder / "runs" / "e" / "a" / "seed-0"
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.resolved.toml").write_bytes(b"[train]\nsteps = 2 # caf\xe9\n")
    refused(["sweep", "e.toml", "--dry-run"], folder, "recipe.resolved.toml", "remove")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"done"'])
def test_sweep_counts_a_damaged_done_file_as_not_finished(content, folder):
    from memcore.recipe import dumps
    from memcore_experiments.sweep import plan
    path = experiment(folder)
    (run,) = plan(path)[2]
    run.dir.mkdir(parents=True)
    (run.dir / "recipe.resolved.toml").write_text(dumps(run.resolved))
    (run.dir / "sweep-done.json").write_bytes(content)
    code, err, _ = run_main(["sweep", "e.toml", "--dry-run"], folder)
    assert code == 0, err
    assert "warning:" in err and "sweep-done.json" in err and "not finished" in err, err
    assert "Traceback" not in err


# -- all problems in one round ------------------------------------------------------------------
def test_option_and_cross_option_problems_come_together(folder):
    recipe = tiny_recipe()
    recipe["train"].update(steps=-1, micro_batches=3)
    recipe["generator"]["blocks"] = [{"kind": "self-attention", "at": 3}]
    write(folder / "r.toml", recipe)
    for command in ("validate", "run"):
        err = refused([command, "r.toml"], folder, "3 problem(s)", "train.steps = -1",
                      "train.micro_batches = 3", "generator.blocks[0].at = 3")
        assert err.count("error:") == 1


def test_memorygan_top_k_and_an_option_error_come_together(folder):
    recipe = tiny_recipe(discriminator={"kind": "memorygan", "slots": 8, "top_k": 16})
    recipe["train"]["batch_size"] = 0
    write(folder / "r.toml", recipe)
    refused(["validate", "r.toml"], folder, "train.batch_size = 0",
            "discriminator.top_k = 16 must be <= discriminator.slots = 8")
