"""Registration only: the kit's commands; the contract checks (torch) load when `check` runs."""
import memcore

from . import check, scaffold


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_add_commands(commands):
    commands.add("new-plugin", "Create a pip-installable memcore-NAME plugin package that works "
                 "as generated.", scaffold.configure, scaffold.command)
    commands.add("check", "Run a component's contract checks, each printed with pass or fail.",
                 check.configure, "memcore_kit.check:command")
