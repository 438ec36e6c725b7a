"""The outside tester's corpus: every subcommand given bad input as an attacker or a careless user
would, each case run as a separate ``memcore`` process in its own folder: forked from the test
process, which has imported torch already (milliseconds a case instead of seconds), or with
``MEMCORE_CORPUS_EXEC=1`` a fresh interpreter each, as a user starts it.

Each case gets a fresh copy of one tiny trained run (trained once per module), a folder
``outside/`` holding a victim file, and the plugin file ``evil.py`` planted in the current folder,
in the run and outside; importing it leaves ``evil.imported`` beside it. Every case must:

- end with the expected exit status (2 for bad input; 0 where the input is actually fine) within
  ``TIMEOUT`` seconds (no hang, no exit 1 "a bug in memcore");
- on exit 2, print an ``error:`` line and no traceback, and leave every file as it was;
- never import a planted plugin, and never write outside its folder (``outside/`` unchanged).

The cheap, representative cases run by default; the rest of the matrix is marked slow.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import attrs
import pytest
import tomli_w

from helpers import tiny_recipe

TIMEOUT = 60
EVIL = 'from pathlib import Path\nPath(__file__).with_suffix(".imported").write_text("ran")\n'
MEMCORE = [sys.executable, "-c", "import sys; from memcore.cli import main; sys.exit(main())"]


# -- the trained run, and each case's folder --------------------------------------------------
def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MEMCORE_PLUGINS_DIR", "MEMCORE_DEBUG", "MEMCORE_CONFIG")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), OMP_NUM_THREADS="1")
    return env


def memcore(argv, cwd: Path, home: Path, timeout: float = TIMEOUT):
    """``memcore ARGV`` as a separate process: a real one for training, else forked from this one,
    which has torch and memcore imported already (a case then costs milliseconds, not the
    seconds of importing torch, on a machine the whole team shares)."""
    if FORKED:
        return _forked(argv, cwd, home, timeout)
    return subprocess.run([*MEMCORE, *map(str, argv)], cwd=cwd, env=_env(home), timeout=timeout,
                          capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL)


FORKED = os.environ.get("MEMCORE_CORPUS_EXEC") != "1"   # =1: every case a fresh interpreter
if FORKED:
    import memcore.runs as _preloaded  # noqa: F401  (torch and the model code, imported once for all cases)


def _forked(argv, cwd: Path, home: Path, timeout: float):
    out, err = cwd.parent / ".stdout", cwd.parent / ".stderr"
    pid = os.fork()
    if pid == 0:   # the child: memcore's own entry point, as the installed script runs it
        code = 1
        try:
            # the parent's OpenMP thread pool does not survive fork(): a child that opens a
            # parallel region with it waits forever for threads that are gone (GNU libgomp)
            import torch
            torch.set_num_threads(1)
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(_env(home))
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT, 0o644), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT, 0o644), 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            from memcore.cli import main
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 1)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(argv, timeout)
        time.sleep(0.02)
    text = [p.read_text(errors="replace") for p in (out, err)]
    out.unlink(), err.unlink()
    return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), *text)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("trained")
    recipe = tiny_recipe()
    recipe["run"] = {"dir": str(base / "run")}
    recipe["train"].update(steps=2, checkpoint_every=2, sample_every=2, log_every=1, grid_size=4)
    recipe["data"]["limit"] = 64
    (base / "recipe.toml").write_text(tomli_w.dumps(recipe))
    done = subprocess.run([*MEMCORE, "run", base / "recipe.toml"], cwd=base, env=_env(base),
                          timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return base / "run"


@attrs.frozen
class Space:
    root: Path      # the case's tmp_path: nothing may change above `work`
    work: Path      # the current folder
    run: Path       # a copy of the trained run, inside `work`
    outside: Path   # holds victim.txt and evil.py: must stay as it is

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoints" / "step-0000002.pt"

    def fill(self, text: str) -> str:
        return (text.replace("@RUN@", str(self.run)).replace("@WORK@", str(self.work))
                .replace("@OUT@", str(self.outside)))


@pytest.fixture
def space(tmp_path, trained) -> Space:
    work, outside = tmp_path / "work", tmp_path / "outside"
    outside.mkdir()
    shutil.copytree(trained, work / "run", symlinks=True)
    (outside / "victim.txt").write_text("victim\n")
    for folder in (work, work / "run", outside):
        (folder / "evil.py").write_text(EVIL)
    (tmp_path / "home").mkdir()
    return Space(tmp_path, work, work / "run", outside)


def snapshot(root: Path) -> dict:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            # a folder's own times change when a probe file comes and goes: only entries count
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns) \
                if not stat.S_ISDIR(st.st_mode) else (st.st_mode,)
    return out


# -- the cases --------------------------------------------------------------------------------
@attrs.frozen
class Case:
    id: str
    argv: tuple
    setup: Callable | None = None    # setup(space): damages the run, writes input files
    ok: tuple = (2,)                 # the exit statuses that are right
    slow: bool = False


CASES: list[Case] = []


def case(id, *argv, setup=None, ok=(2,), slow=False):
    CASES.append(Case(id, tuple(argv), setup, ok, slow))


def write(rel: str, data):
    """setup: write ``data`` (text, bytes, or a dict as TOML) at ``rel`` under the work folder."""
    def setup(s: Space):
        path = s.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, dict):
            path.write_text(s.fill(tomli_w.dumps(data)))
        elif isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(s.fill(data))
    return setup


def both(*setups):
    def setup(s: Space):
        for one in setups:
            one(s)
    return setup


# bad paths: each name -> setup making it at work/<name> (the argument then names that path)
def _fifo(p: Path):
    os.mkfifo(p)


def _loop(p: Path):
    p.symlink_to(p.name)


def _huge(p: Path):
    with open(p, "wb") as f:
        f.truncate(3 * 2**30)   # sparse: 3 GiB of zero bytes the reader would load


BAD_PATHS = {
    "missing": None,
    "empty": lambda p: p.write_bytes(b""),
    "folder": lambda p: p.mkdir(),
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "non-utf8": lambda p: p.write_bytes(b"name = \"\xff\xfe\"\n"),
    "symlink-loop": _loop,
    "dangling-link": lambda p: p.symlink_to("nowhere"),
    "fifo": _fifo,
    "huge": _huge,
}
FAST_PATHS = {"missing", "binary", "fifo"}


def bad_path(kind: str, name: str):
    def setup(s: Space):
        make = BAD_PATHS[kind]
        if make:
            make(s.work / name)
    return setup


# every path argument, as (id, argv with NAME standing for the bad path, expected statuses)
PATH_ARGUMENTS = [
    ("run RECIPE", ["run", "NAME"]),
    ("run --dry-run RECIPE", ["run", "NAME", "--dry-run"]),
    ("run --resume", ["run", "--resume", "NAME"]),
    ("validate", ["validate", "NAME"]),
    ("sample RUN", ["sample", "NAME", "--out", "o.png"]),
    ("sample --exemplar", ["sample", "@RUN@", "--exemplar", "NAME", "--out", "o.png"]),
    ("eval RUN", ["eval", "NAME"]),
    ("viz moca RUN", ["viz", "moca", "NAME"]),
    ("viz attention RUN", ["viz", "attention", "NAME"]),
    ("viz painting RUN", ["viz", "painting", "NAME"]),
    ("viz memorygan RUN", ["viz", "memorygan", "NAME"]),
    ("viz mfh RUN", ["viz", "mfh", "NAME"]),
    ("mfh-eval RUN", ["mfh-eval", "NAME"]),
    ("check --recipe", ["check", "block:self-attention", "--recipe", "NAME"]),
    ("sweep", ["sweep", "NAME", "--dry-run"]),
    ("compare RUN", ["compare", "NAME"]),
    ("--plugins-dir", ["--plugins-dir", "NAME", "list"]),
]
for arg_id, argv in PATH_ARGUMENTS:
    for kind in BAD_PATHS:
        name = f"bad-{kind}.toml" if kind != "folder" else "bad-folder"
        # an empty folder of runs is nothing to compare, an empty plugins folder nothing to load
        fine = (kind == "folder" and arg_id == "--plugins-dir")
        case(f"path {arg_id} {kind}", *[name if a == "NAME" else a for a in argv],
             setup=bad_path(kind, name), ok=(0,) if fine else (2,),
             slow=kind not in FAST_PATHS and arg_id not in ("sample RUN", "sweep"))

# outputs: an --out that is not a place to write
for cmd in (["sample", "@RUN@"], ["viz", "attention", "@RUN@"], ["viz", "moca", "@RUN@"],
            ["compare", "@RUN@"]):
    for what, out in [("folder", "@WORK@"), ("nul-free unknown suffix", "o.xyz"),
                      ("under a file", "@OUT@/victim.txt/o.png"),
                      ("dev-null", "/dev/null"), ("read-only", "/proc/o.png")]:
        case(f"out {' '.join(cmd[:2])} {what}", *cmd, "--out", out,
             slow=cmd[0] != "sample" and what != "under a file")


# -- damaged run folders ----------------------------------------------------------------------
def _damage(fn):
    def setup(s: Space):
        fn(s)
    return setup


def _evil_pickle(s: Space):
    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(s.outside / 'evil.imported')!r}, 'w').write('ran')",))
    s.ckpt.write_bytes(pickle.dumps({"format": 1, "x": Evil()}))


def _recipe_local(paths):
    def setup(s: Space):
        import torch
        state = torch.load(s.ckpt, weights_only=True)
        state["recipe"] += "\n[plugins]\nlocal = " + repr([s.fill(p) for p in paths]) + "\n"
        torch.save(state, s.ckpt)
    return setup


def _resolved(text: str | bytes | None):
    def setup(s: Space):
        path = s.run / "recipe.resolved.toml"
        if text is None:
            path.unlink()
        elif isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(path.read_text() + s.fill(text))
    return setup


def _replace(rel: str, data):
    def setup(s: Space):
        path = s.run / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        if data == "folder":
            path.mkdir()
        elif isinstance(data, bytes):
            path.write_bytes(data)
        elif data is not None:
            path.write_text(data)
    return setup


def _truncate(n):
    def setup(s: Space):
        s.ckpt.write_bytes(s.ckpt.read_bytes()[:n])
    return setup


DAMAGES = {
    "no checkpoints": lambda s: shutil.rmtree(s.run / "checkpoints"),
    "checkpoints a file": _replace("checkpoints", b"x"),
    "zero-byte checkpoint": _truncate(0),
    "truncated checkpoint": _truncate(2000),
    "garbage checkpoint": _replace("checkpoints/step-0000002.pt", os.urandom(5000)),
    "checkpoint a folder": _replace("checkpoints/step-0000002.pt", "folder"),
    "pickle checkpoint": _evil_pickle,
    "checkpoint with plugins.local (absolute)": _recipe_local(["@OUT@/evil.py"]),
    "checkpoint with plugins.local (relative)": _recipe_local(["evil.py"]),
    "checkpoint with plugins.local (run-relative)": _recipe_local(["@RUN@/evil.py"]),
    "resolved recipe missing": _resolved(None),
    "resolved recipe garbage": _resolved(b"\x00\x01garbage = = ["),
    "resolved recipe non-utf8": _resolved(b"[run]\nname = \"\xff\"\n"),
    "resolved recipe plugins.local": _resolved('\n[plugins]\nlocal = ["@OUT@/evil.py"]\n'),
    "resolved recipe unknown component": _resolved('\n[[metrics]]\nkind = "no-such-metric"\n'),
    "log binary": _replace("log.jsonl", os.urandom(3000)),
    "log nan": _replace("log.jsonl", '{"step": 1, "loss_G": NaN}\n{"step": NaN}\n'),
    "log not objects": _replace("log.jsonl", '[1,2]\n"x"\n3\nnull\n'),
    "log string step": _replace("log.jsonl", '{"step": "two", "loss_G": 1.0}\n'),
    "log a folder": _replace("log.jsonl", "folder"),
    "log huge number": _replace("log.jsonl", '{"step": 1e999, "loss_G": 1e999}\n'),
    "log deep nesting": _replace("log.jsonl", '{"step": ' + "[" * 100000 + "]" * 100000 + "}\n"),
    "plugins.json garbage": _replace("plugins.json", b"\xff{"),
    "plugins.json a folder": _replace("plugins.json", "folder"),
    "experiment.json corrupt": lambda s: (s.work / "experiment.json").write_text("{[}"),
}
# what a reading command must do with a damaged run: refuse (2), or work where the damage does
# not touch what it reads (0)
READS = {"sample": ["sample", "@RUN@", "--n", "4", "--out", "o.png"],
         "viz attention": ["viz", "attention", "@RUN@", "--out", "@WORK@/att.png"],
         "eval": ["eval", "@RUN@", "--metrics", "no-such-metric"],
         "compare": ["compare", "@WORK@"],
         "resume": ["run", "--resume", "@RUN@", "--dry-run"]}
_CHECKPOINT_FINE = {"resolved recipe missing", "resolved recipe garbage", "resolved recipe non-utf8",
                    "resolved recipe plugins.local", "resolved recipe unknown component",
                    "log binary", "log nan", "log not objects", "log string step", "log a folder",
                    "log huge number", "log deep nesting", "plugins.json garbage",
                    "plugins.json a folder", "experiment.json corrupt"}
for damage, setup in DAMAGES.items():
    for reader, argv in READS.items():
        if reader == "compare":
            ok = (0, 2)   # a damaged run may be skipped with a warning
        elif reader == "resume":   # --dry-run checks the recipe; the checkpoint is read later
            ok = (2,) if damage.startswith("resolved recipe") else (0, 2)
        elif reader == "eval":
            ok = (2,)
        else:
            ok = (0,) if damage in _CHECKPOINT_FINE else (2,)
        if reader == "viz attention" and ok == (0,):
            ok = (2,)   # a dcgan run has no attention layer: refused, whatever else
        case(f"run-folder {reader} {damage}", *argv, setup=_damage(setup), ok=ok,
             slow=not (reader == "sample" or reader == "compare" and "log" in damage))

# a link planted in the run folder is never written through
for link, argv, ok in [
        ("samples/latest.png", ["run", "--resume", "@RUN@", "--set", "train.steps=4"], (0, 2)),
        ("log.jsonl", ["run", "--resume", "@RUN@", "--set", "train.steps=4"], (2,)),
        ("eval-step-0000002.json", ["eval", "@RUN@", "--metrics", "no-such-metric"], (2,))]:
    def plant(s: Space, link=link):
        (s.run / link).unlink(missing_ok=True)
        (s.run / link).symlink_to(s.outside / "victim.txt")
    case(f"planted link {link} {argv[0]}", *argv, setup=plant, ok=ok, slow=True)


# -- experiment files -------------------------------------------------------------------------
BASE = tiny_recipe()
BASE["train"].update(steps=1, checkpoint_every=1, sample_every=1, grid_size=4)
BASE["data"]["limit"] = 64


def experiment(**keys):
    exp = {"base": "base.toml", "seeds": [0], "variants": [{"name": "a"}], **keys}
    return both(write("base.toml", BASE), write("exp.toml", {k: v for k, v in exp.items()
                                                               if v is not None}))


def sweep_case(id, ok=(2,), slow=False, file="exp.toml", extra=(), **keys):
    case(f"sweep {id}", "sweep", file, "--dry-run", *extra, setup=experiment(**keys), ok=ok,
         slow=slow)


sweep_case("fine", ok=(0,))
case("sweep garbage toml", "sweep", "exp.toml", "--dry-run", setup=write("exp.toml", "a = = ["))
case("sweep empty file", "sweep", "exp.toml", "--dry-run", setup=both(
    write("base.toml", BASE), write("exp.toml", "")))
for key, values in {
        "name": [1, "", ".", "..", "a/b", "a\0b", "x" * 300, ["a"]],
        "seeds": ["x", [1.5], [-1], [10**30], [0, 0], [], {}, [True]],
        "steps": ["x", -1, 0, 10**18, 1.5, True],
        "base": [1, "missing.toml", "/dev/null", "@OUT@/evil.py", "exp.toml"],
        "root": [1, "@OUT@/victim.txt", "", "/proc/memcore"],
        "overrides": [1, {"plugins.local": ["@OUT@/evil.py"]},
                      {"plugins": {"local": ["evil.py"]}}, {"a..b": 1}, {"": 1},
                      {"train.steps": "9" * 5000}, {"run.dir": "@OUT@"}],
        "baseline": [1, "nope"],
        "after": ["eval {run}", [1], [""], ["--plugins-dir @OUT@ eval {run} --metrics x"],
                  ["eval {run} --plugins-dir=@OUT@"], ["eval {run} --plug=@OUT@"],
                  ["eval {run} --trust-local-plugins"], ["run {run}"], ["sweep {run}"],
                  ["new-plugin x --dir {run}/../.."], ["eval {run}/../.."],
                  ["sample {run} --out @OUT@/x.png"], ["sample {run} --out /tmp/x.png"],
                  ['eval "{run}'], ["eval {run} {seed}"], ["eval {run} --set run.dir={run}/../.."],
                  ["eval"], ["eval {run}\0"]],
        "variants": [1, [1], [{"name": 1}], [{"name": "a", "recipe": 1}],
                     [{"name": "a", "recipe": "@OUT@/evil.py"}],
                     [{"name": "a", "recipe": "/dev/zero"}], [{"name": ".."}],
                     [{"name": "a"}, {"name": "a"}], [{"name": "a", "after": ["run {run}"]}],
                     [{"name": "a", "overrides": {"plugins.local": ["@OUT@/evil.py"]}}]],
        "grid": [1, {"train.lr": 1}, {"train.seed": [1, 2]}, {"train.batch_size": []},
                 {"a..b": [1]}, {"train.batch_size": [2.5]},
                 {"data.limit": list(range(100, 100 + 20000))}],
        "extra_key": [1]}.items():
    for i, value in enumerate(values):
        fast = i < 2 or key == "after"
        # the sweep sets run.dir itself; an empty root is the current folder; a dry run does
        # not create the root
        fine = value in ("", {"run.dir": "@OUT@"}, "/proc/memcore")
        sweep_case(f"{key}={str(value)[:40]!r}", slow=not fast, ok=(0, 2) if fine else (2,),
                   **{key: value})
sweep_case("seeds 10^6", seeds=list(range(10**6)), slow=True)
sweep_case("variants 10^5", variants=[{"name": f"v{i}"} for i in range(10**5)], slow=True)
case("sweep file ...toml", "sweep", "...toml", "--dry-run", setup=both(
    write("base.toml", BASE), write("...toml", {"base": "base.toml"})))
case("sweep root a file (real)", "sweep", "exp.toml", setup=experiment(root="@OUT@/victim.txt"))
case("sweep root read-only (real)", "sweep", "exp.toml", setup=experiment(root="/proc/memcore"))
case("sweep name 300 chars (real)", "sweep", "exp.toml", setup=experiment(name="x" * 300))
for flag, value in [("--cores", "0"), ("--cores", "1000"), ("--nproc", "-2"),
                    ("--status-every", "nan"), ("--jobs", "0")]:
    case(f"sweep {flag} {value}", "sweep", "exp.toml", f"{flag}={value}", setup=experiment())


# -- --set forms ------------------------------------------------------------------------------
SETS = {"no equals": "train.steps", "empty key": "=1", "empty value": "train.steps=",
        "a..b": "train..steps=1", "leading dot": ".train=1", "index huge": "losses.999999999999.kind=x",
        "bracket index": "losses[999999999999].kind=x", "unicode key": "tränn.stëps=1",
        "5000 digits": "train.steps=" + "9" * 5000, "long value": "run.name=" + "x" * 100_000,
        "deep nesting": "train.steps=" + "[" * 3000 + "]" * 3000,
        "deep table": "train.steps=" + "{a=" * 500 + "1" + "}" * 500,
        "plugins.local": "plugins.local=['@OUT@/evil.py']",
        "plugins table": "plugins={local=['evil.py']}",
        "grid bomb": "train.grid_size=10000000", "grid bomb 1e9": "train.grid_size=1000000000",
        "batch bomb": "train.batch_size=1000000000", "run.dir outside": "run.dir=@OUT@",
        "unknown key": "nope.x=1", "nan": "train.steps=nan", "inf lr": "optim.G.lr=inf"}
for id, value in SETS.items():
    for where, argv in [("validate", ["validate", "r.toml"]), ("run --dry-run", ["run", "r.toml",
                                                                                 "--dry-run"]),
                        ("eval", ["eval", "@RUN@"]), ("check", ["check", "loss:hinge"])]:
        ok = (2,)
        if id == "run.dir outside" and where != "eval":
            ok = (0, 2)   # the user's own choice on their own command line
        case(f"set {where} {id}", *argv, "--set", value, setup=write("r.toml", BASE), ok=ok,
             slow=where != "validate")


# -- the other commands -----------------------------------------------------------------------
case("list fine", "list", ok=(0,))
case("list unknown kind", "list", "nope")
case("plugins fine", "plugins", ok=(0,))
case("show fine", "show", "generator:dcgan", ok=(0,))
for bad in ["nope", "generator:", ":x", "generator:nope", "nope:dcgan", "x" * 5000, "\udcff"]:
    case(f"show {bad[:20]!r}", "show", bad)
for bad in ["nope:x", "block:nope", "generator:dcgan --resolution 100000 --channels 100000",
            "block:self-attention --resolution 100000 --channels 100000",
            "block:self-attention --resolution 0", "block:self-attention --set slots=abc",
            "block:self-attention --set nope=1", "loss:hinge --nproc 100000"]:
    case(f"check {bad[:40]}", "check", *bad.split(), slow="100000" not in bad)
for bad in ["../x", "", "a/b", "x" * 300, "..", "-x", "Bad Name"]:
    case(f"new-plugin {bad[:20]!r}", "new-plugin", bad, "--dir", "@WORK@/p")
for bad in ["@OUT@/victim.txt", "/proc/x", "@WORK@/evil.py"]:
    case(f"new-plugin --dir {bad}", "new-plugin", "okname", "--dir", bad)
for bad in [["--n", "0"], ["--n", "1000000000"], ["--seed", str(2**64)], ["--n", "nan"],
            ["--exemplar", "@OUT@/victim.txt"], ["--checkpoint", "best"]]:
    ok = (0,) if bad[-1] == "best" else (2,)
    case(f"sample {' '.join(bad)[:30]}", "sample", "@RUN@", *bad, "--out", "o.png", ok=ok)
for bad in [["--num-samples", "0"], ["--num-samples", "1000000000"], ["--repeats", "1000000000"],
            ["--metrics", ""], ["--metrics", ",,,"], ["--metrics", "fid@nope"],
            ["--metrics", "x" * 10000]]:
    case(f"eval {' '.join(bad)[:30]}", "eval", "@RUN@", *bad)
case("mfh-eval not an mfh run", "mfh-eval", "@RUN@")
case("compare same run twice", "compare", "@RUN@", "@RUN@", "--json", ok=(0, 2))
case("compare --smooth 0", "compare", "@RUN@", "--smooth", "0")
case("compare --smooth -1", "compare", "@RUN@", "--smooth", "-1")
case("compare --smooth huge", "compare", "@RUN@", "--smooth", "9" * 5000)
case("compare --baseline nope", "compare", "@RUN@", "--baseline", "nope")
case("compare --out fine", "compare", "@RUN@", "--out", "@WORK@/report.md", ok=(0,))
case("compare --out json without --json", "compare", "@RUN@", "--out", "@WORK@/r.json")
case("compare --metric nope", "compare", "@RUN@", "--metric", "nope", ok=(0, 2))
case("run --resume --overwrite", "run", "--resume", "@RUN@", "--overwrite")
case("run recipe with plugins.local", "run", "r.toml", "--dry-run",
     setup=write("r.toml", {**BASE, "plugins": {"local": ["@OUT@/evil.py"]}}))
case("validate recipe extends /dev/zero", "validate", "r.toml",
     setup=write("r.toml", {**BASE, "extends": "/dev/zero"}), slow=True)
case("validate recipe extends fifo", "validate", "r.toml",
     setup=both(bad_path("fifo", "f.toml"), write("r.toml", {**BASE, "extends": "f.toml"})))
case("validate /dev/zero", "validate", "/dev/zero", slow=True)
case("validate /dev/null", "validate", "/dev/null")


# -- the test ---------------------------------------------------------------------------------
def _param(c: Case):
    return pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else [])


ERROR_LINE = re.compile(r"^(memcore[^:]*: )?error: ", re.M)


@pytest.mark.parametrize("c", [_param(c) for c in CASES])
def test_bad_input(c: Case, space: Space):
    if c.setup:
        c.setup(space)
    outside = snapshot(space.outside)
    before = snapshot(space.root)
    try:
        done = memcore([space.fill(a) for a in c.argv], space.work, space.root / "home")
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung: no end within {TIMEOUT} s")
    err = done.stderr
    imported = sorted(str(p) for p in space.root.rglob("*.imported"))
    assert not imported, f"a planted plugin ran: {imported}"
    assert snapshot(space.outside) == outside, "something was written outside"
    assert "Traceback" not in err and "a bug there" not in err, err[-3000:]
    assert done.returncode in c.ok, (done.returncode, err[-3000:])
    if done.returncode == 2:
        assert ERROR_LINE.search(err), err[-3000:]
        after = snapshot(space.root)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert not changed, f"a refusal wrote: {changed[:10]}"


def test_corpus_size():
    assert len(CASES) > 500 and sum(not c.slow for c in CASES) < 230, (
        len(CASES), sum(not c.slow for c in CASES))
