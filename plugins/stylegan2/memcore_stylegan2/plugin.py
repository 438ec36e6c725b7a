"""Registration only: the torch-heavy modules are imported when a recipe uses them."""
import memcore

_P = "memcore_stylegan2"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    add = registry.add
    add("generator", "stylegan2", f"{_P}.networks:Generator", f"{_P}.networks:GeneratorOptions",
        help="StyleGAN2 skip generator (mapping, modulated convs, noise), 8-1024 px, block slots.")
    add("discriminator", "stylegan2", f"{_P}.networks:Discriminator",
        f"{_P}.networks:DiscriminatorOptions",
        help="StyleGAN2 residual discriminator with minibatch stddev, block slots.")
    add("loss", "path-length", f"{_P}.losses:PathLength", f"{_P}.losses:PathLengthOptions",
        help="StyleGAN2 path-length regularisation, lazy every 4 steps; running mean saved.")
    add("loss", "ada-stats", f"{_P}.losses:AdaStats", "memcore:LossOptions",
        help="Feeds sign(D(real)) of every D pass to the 'ada' augmentation (adds no loss).")
    add("augment", "ada", f"{_P}.ada:ADA", f"{_P}.ada:ADAOptions",
        help="Adaptive discriminator augmentation: blit, geometric, colour; p saved in checkpoints.")
