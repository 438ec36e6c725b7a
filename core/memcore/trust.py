"""What memcore runs as code and what it only reads (docs/trust.md).

Code is what the user chose: installed plugins, the files of a ``--plugins-dir`` on the command
line or of ``$MEMCORE_PLUGINS_DIR`` in their own environment. Everything else is data, whoever
wrote it: recipes (``extends``, ``--set``), experiment files, run folders, checkpoints, weights.
Two kinds of data can ask for code, and both are decided here:

* a recipe's ``plugins.local`` files are imported only with the user's consent: the
  ``--trust-local-plugins`` flag of this invocation, a file inside the plugins folder, or a file
  inside a folder their settings file lists in ``trusted_plugin_dirs``;
* an experiment's ``after`` commands may only evaluate the run they follow (:func:`after_problems`).
"""
from __future__ import annotations

import os
import re
import shlex
from contextlib import contextmanager
from pathlib import Path

import tomli

from .errors import RecipeError

FLAG = "--trust-local-plugins"
SETTINGS_KEY = "trusted_plugin_dirs"
DOCS = "docs/trust.md"

# The consent given on this invocation's command line; set by memcore.cli.main.
_consent: dict = {"flag": False, "plugins_dir": None}
# memcore's own options and its evaluation commands, told by memcore.cli.build_parser (every
# command builds the parser first): this module stands below the command line, not on it.
_command_line: dict = {"options": None, "evaluation": None}


# -- consent ----------------------------------------------------------------------------------
def take_flag(argv) -> tuple[list[str], bool]:
    """``argv`` without ``--trust-local-plugins``, and whether it was there: like
    ``--plugins-dir``, the flag may stand anywhere on the command line."""
    argv = [str(a) for a in argv]
    return [a for a in argv if a != FLAG], FLAG in argv


@contextmanager
def granted(flag: bool, plugins_dir: str | None):
    """Inside the block, the consent of one invocation: the flag, and its plugins folder."""
    saved = dict(_consent)
    _consent.update(flag=flag, plugins_dir=plugins_dir)
    try:
        yield
    finally:
        _consent.update(saved)


def forwarded_flags() -> list[str]:
    """The consent a sweep hands to the ``memcore run`` it starts: the flag, if it was given."""
    return [FLAG] if _consent["flag"] else []


def settings_path() -> Path:
    """``$MEMCORE_CONFIG``, else ``$XDG_CONFIG_HOME/memcore/settings.toml`` (~/.config/...)."""
    if os.environ.get("MEMCORE_CONFIG"):
        return Path(os.environ["MEMCORE_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "memcore" / "settings.toml"


def trusted_dirs() -> list[Path]:
    """The folders the user's settings file trusts (none without a file); a damaged file is
    refused, naming the file and the key."""
    path = settings_path()
    try:
        data = tomli.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomli.TOMLDecodeError) as exc:
        raise RecipeError([f"cannot be read as a TOML settings file: {exc}"], str(path)) from None
    problems = [f"{key}: unknown key (valid keys: {SETTINGS_KEY})" for key in data
                if key != SETTINGS_KEY]
    dirs = data.get(SETTINGS_KEY, [])
    if not isinstance(dirs, list):
        problems.append(f"{SETTINGS_KEY} = {dirs!r}: expected a list of absolute folder paths, "
                        f"e.g. {SETTINGS_KEY} = [\"/home/me/gan-plugins\"]")
        dirs = []
    folders = []
    for i, folder in enumerate(dirs):
        if not isinstance(folder, str) or not Path(folder).expanduser().is_absolute():
            problems.append(f"{SETTINGS_KEY}[{i}] = {folder!r}: expected an absolute folder path")
        else:
            folders.append(Path(folder).expanduser().resolve())
    if problems:
        raise RecipeError(problems, str(path))
    return folders


def refusals(paths, where: str) -> list[str]:
    """One message for each of ``paths`` the user has not consented to import: none with the
    flag; else a file counts as consented when it lies (links resolved) inside the plugins
    folder or a trusted folder."""
    if _consent["flag"]:
        return []
    folders = [Path(_consent["plugins_dir"]).resolve()] if _consent["plugins_dir"] else []
    refused, settings = [], None
    for i, path in enumerate(paths):
        if not isinstance(path, str):  # not a path: the recipe's type check names it
            continue
        real = Path(path).expanduser().resolve()
        if any(real.is_relative_to(folder) for folder in folders):
            continue
        if settings is None:  # read only when needed: a damaged file stops only what needs it
            settings = trusted_dirs()
            folders += settings
            if any(real.is_relative_to(folder) for folder in settings):
                continue
        shown = repr(path) + (f" (the file {real})" if str(real) != path else "")
        refused.append(f"{where}[{i}] = {shown}: memcore imports the plugin files a recipe names "
                       f"only with your consent: add {FLAG} to the command, or list the file's "
                       f"folder in {SETTINGS_KEY} in your settings file {settings_path()} "
                       f"(see {DOCS})")
    return refused


# -- after commands ---------------------------------------------------------------------------
_BRACES = re.compile(r"\{[^{}]*\}|[{}]")


def know_command_line(options, evaluation) -> None:
    """memcore's global options (``--plugins-dir``, ...) and the commands that evaluate a run
    (``commands.add(..., evaluates_run=True)``), from the parser the command line built."""
    _command_line.update(options=sorted(set(options)), evaluation=sorted(evaluation))


def knows_command_line() -> bool:
    return _command_line["options"] is not None


def after_problems(where: str, command: str) -> list[str]:
    """What is wrong with an experiment's ``after`` command, each naming ``where`` (``after[0]``):
    it must be an evaluation subcommand with no global option, ``{run}`` its only placeholder and
    every path argument inside the run's folder (checked once more per run by
    :func:`after_outside`, with links resolved). Needs :func:`know_command_line` first."""
    if _command_line["options"] is None:
        raise RuntimeError("after commands are checked against memcore's command line: build "
                           "it first (memcore.cli.build_parser)")
    said = f"{where} = {command!r}"
    try:
        tokens = shlex.split(command)
    except ValueError as exc:
        return [f"{said}: cannot be split into arguments ({exc})"]
    if not tokens:
        return [f"{said}: empty; expected an evaluation command, e.g. \"eval {{run}}\""]
    problems = []
    allowed = _command_line["evaluation"]
    if tokens[0] not in allowed:
        problems.append(f"{said}: '{tokens[0]}' is not an evaluation command; an after command "
                        f"runs one of {', '.join(allowed)} on the trained run")
    if "{run}" not in command:
        problems.append(f"{said}: the command must name the run as {{run}}")
    wrong = sorted({b for b in _BRACES.findall(command) if b != "{run}"})
    if wrong:
        problems.append(f"{said}: {', '.join(wrong)}: {{run}} is the only placeholder")
    global_options = _command_line["options"]
    for token in tokens:
        name = token.partition("=")[0]
        # argparse also takes an unambiguous prefix (--plugins for --plugins-dir)
        if name in global_options or (name.startswith("--") and len(name) > 3 and any(
                o.startswith(name) for o in global_options if o.startswith("--"))):
            problems.append(f"{said}: '{token}' is an option of memcore itself (one of "
                            f"{', '.join(global_options)}), not allowed in an after command")
    for token in filter(_names_a_path, _values(tokens)):
        if not token.startswith("{run}"):
            problems.append(f"{said}: '{token}' is a path outside the run's folder; an after "
                            "command may only name paths inside it, as {run}/...")
        elif not Path(os.path.normpath(token.replace("{run}", "/run", 1))).is_relative_to("/run"):
            problems.append(f"{said}: '{token}' leads outside the run's folder {{run}}")
    return problems


def after_outside(command: str, run_dir: Path) -> list[str]:
    """The path arguments of an (already checked) after command that lead outside ``run_dir``
    once links there are followed."""
    root = Path(run_dir).resolve()
    problems = []
    for token in filter(_names_a_path, _values(shlex.split(command))):
        real = Path(token.replace("{run}", str(run_dir))).expanduser().resolve()
        if not real.is_relative_to(root):
            problems.append(f"after command {command!r}: '{token}' leads outside the run's folder "
                            f"{run_dir} (to {real}, through a link)")
    return problems


def _values(tokens: list[str]) -> list[str]:
    """Each argument, or for ``--opt=value`` and ``key=value`` its value."""
    return [t.partition("=")[2] if "=" in t else t for t in tokens[1:]]


def _names_a_path(token: str) -> bool:
    return ("{run}" in token or os.path.isabs(token) or "/" in token or os.sep in token
            or ".." in token or token.startswith("~"))
