"""Registration only: the torch-heavy modules are imported when a recipe uses them."""
import memcore

_P = "memcore_fastgan"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    add = registry.add
    add("generator", "fastgan", f"{_P}.networks:Generator", f"{_P}.networks:GeneratorOptions",
        help="FastGAN generator (SLE, GLU, spectral norm, noise injection), 32-1024 px, block slots.")
    add("discriminator", "fastgan", f"{_P}.networks:Discriminator",
        f"{_P}.networks:DiscriminatorOptions",
        help="FastGAN discriminator: big + small paths, reconstruction decoders, block slots.")
    add("loss", "fastgan", f"{_P}.losses:FastganLoss", f"{_P}.losses:FastganLossOptions",
        help="Random-margin hinge + L1/L2 reconstruction of reals by D's decoders.")
