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
        help="SAGAN generator (SN, BN/conditional BN, deconv) for 28-128 px with block slots.")
    add("discriminator", "sagan", f"{_P}.sagan:Discriminator", f"{_P}.sagan:DiscriminatorOptions",
        help="SAGAN discriminator (SN, LeakyReLU 0.1) with block slots; projection when labelled.")
    add("dataset", "stanford-dogs", f"{_P}.dogs:stanford_dogs", f"{_P}.dogs:StanfordDogsOptions",
        help="Stanford Dogs cropped to the dog boxes (Images/, Annotation/ VOC XML), 64 px.")


@memcore.hookimpl
def memcore_add_commands(commands):
    from . import viz   # matplotlib loads inside the handler
    commands.add_viz("attention", viz.HELP, viz.configure, viz.handler)
