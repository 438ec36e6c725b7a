"""Registration only: the torch-heavy modules are imported when a recipe uses them."""
import memcore

_P = "memcore_moca"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    add = registry.add
    add("block", "moca", f"{_P}.moca:MocaBlock", f"{_P}.moca:MocaOptions",
        help="MoCA: prototype-memory concept attention + self-attention (paths = \"sa\" for SA only).")


@memcore.hookimpl
def memcore_add_commands(commands):
    from . import commands as cmd
    commands.add_viz("moca", cmd.VIZ_HELP, cmd.viz_args, cmd.viz)


@memcore.hookimpl
def memcore_eval_options(parser):
    from .commands import FEATURE_NOISE_HELP, parse_levels
    parser.add_argument("--feature-noise", metavar="LEVELS", type=parse_levels,
                        help=FEATURE_NOISE_HELP)


@memcore.hookimpl
def memcore_eval_variants(args, run):
    if not getattr(args, "feature_noise", None):
        return None
    from .commands import feature_noise_variants
    return feature_noise_variants(run.G, args.feature_noise)
