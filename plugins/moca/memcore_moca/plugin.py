"""Registration only: the torch-heavy modules are imported when a recipe uses them."""
import memcore

_P = "memcore_moca"


@memcore.hookimpl
def memcore_api_version():
    return memcore.API_VERSION


@memcore.hookimpl
def memcore_register_components(registry):
    add = registry.add
    add("block", "moca", f"{_P}.moca:MocaBlock", f"{_P}.moca:MocaOptions",
        help="MoCA: prototype-memory concept attention + self-attention (paths = \"sa\" for SA only).")


@memcore.hookimpl
def memcore_add_commands(commands):
    from . import commands as cmd
    commands.add("moca-robustness", cmd.ROBUSTNESS_HELP, cmd.robustness_args, cmd.robustness)
    commands.add_viz("moca", cmd.VIZ_HELP, cmd.viz_args, cmd.viz)
