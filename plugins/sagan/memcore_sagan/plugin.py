"""Registration only: the torch-heavy modules are imported when a recipe or command uses them."""
import memcore

_P = "memcore_sagan"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    add = registry.add
    add("block", "self-attention", f"{_P}.attention:SelfAttention",
        f"{_P}.attention:SelfAttentionOptions",
        help="SAGAN self-attention (gamma=0 residual); BigGAN variant via options.")
    add("generator", "sagan", f"{_P}.sagan:Generator", f"{_P}.sagan:GeneratorOptions",
        help="SAGAN generator (SN, BN/conditional BN, deconv) with block slots; sides that "
        "halve twice to 4-8 px (16, 20, 28, 32, 64, 128, ...).")
    add("discriminator", "sagan", f"{_P}.sagan:Discriminator", f"{_P}.sagan:DiscriminatorOptions",
        help="SAGAN discriminator (SN, LeakyReLU 0.1) with block slots; projection when labelled.")
    add("dataset", "stanford-dogs", f"{_P}.dogs:stanford_dogs", f"{_P}.dogs:StanfordDogsOptions",
        help="Stanford Dogs cropped to the dog boxes (Images/, Annotation/ VOC XML), 64 px.")
    add("dataset", "twin-shapes", f"{_P}.twins:twin_shapes", f"{_P}.twins:TwinShapesOptions",
        help="Two shapes, left and right, equal in shape and colour: long-range consistency.")
    add("metric", "twin-match", f"{_P}.twins:TwinMatch", f"{_P}.twins:TwinMatchOptions",
        help="Share of samples whose two shapes match in shape and colour (twin-shapes checker).")


VIZ_HELP = "Overlay where each self-attention layer looks for chosen query points of generated images."


def viz_args(p) -> None:
    """``memcore viz attention``'s arguments (here, so start-up does not import ``viz``)."""
    from memcore.cliargs import IMAGE_EXTENSIONS, count, out_file, seed64
    p.add_argument("run", help="Run directory or checkpoint file.")
    p.add_argument("--step", type=count(0), help="Checkpoint step (default: the latest).")
    p.add_argument("--n", type=count(1, 64), default=2, help="Generated images (rows).")
    p.add_argument("--points", nargs="+", default=["0.3,0.3", "0.5,0.7"], metavar="Y,X",
                   help="Query points as fractions of the image side (row,column), e.g. 0.25,0.5.")
    p.add_argument("--seed", type=seed64, default=0)
    p.add_argument("--nets", choices=["G", "D", "both"], default="both")
    p.add_argument("--no-ema", action="store_true", help="Use the trained G, not the EMA G.")
    p.add_argument("--out", type=out_file(*IMAGE_EXTENSIONS), default="attention.png")


@memcore.hookimpl
def memcore_add_commands(commands):
    commands.add_viz("attention", VIZ_HELP, viz_args, f"{_P}.viz:handler")
