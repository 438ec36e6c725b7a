"""Registration only: the torch-heavy modules are imported when a recipe uses them."""
import memcore

_P = "memcore_base"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    add = registry.add
    add("generator", "dcgan", f"{_P}.dcgan:Generator", f"{_P}.dcgan:GeneratorOptions",
        help="DCGAN-style generator for 28-64 px with block slots at every stage.")
    add("discriminator", "dcgan", f"{_P}.dcgan:Discriminator", f"{_P}.dcgan:DiscriminatorOptions",
        help="DCGAN-style discriminator with block slots; projection head when labelled.")
    for name, cls, text in [
        ("hinge", "Hinge", "Hinge loss (D: relu(1-r)+relu(1+f); G: -f)."),
        ("non-saturating", "NonSaturating", "Logistic loss with the non-saturating G term."),
        ("saturating", "Saturating", "Original minimax: G minimises log(1 - D(G(z)))."),
        ("least-squares", "LeastSquares", "LSGAN loss (a=0, b=c=1)."),
        ("wgan", "Wasserstein", "Wasserstein critic loss (pair with gradient-penalty)."),
        ("gradient-penalty", "GradientPenalty", "WGAN-GP penalty on interpolates."),
        ("r1", "R1", "R1 penalty on reals, lazy by default (every 16 steps)."),
    ]:
        options = f"{_P}.losses:{cls}Options" if cls in ("GradientPenalty", "R1") \
            else "memcore:LossOptions"
        add("loss", name, f"{_P}.losses:{cls}", options, help=text)
    add("augment", "diffaugment", f"{_P}.diffaugment:DiffAugment", f"{_P}.diffaugment:DiffAugmentOptions",
        help="DiffAugment (color, translation, cutout), applied to reals and fakes.")
