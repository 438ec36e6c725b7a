"""Registration only: the torch-heavy modules are imported when a recipe uses them."""
import memcore

_P = "memcore_memorygan"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("discriminator", "memorygan", f"{_P}.networks:DMN", f"{_P}.networks:DMNOptions",
                 help="memoryGAN DMN: inference network + vMF-mixture memory (top-k read, EM write).")
    registry.add("generator", "memorygan", f"{_P}.networks:MCGN", f"{_P}.networks:MCGNOptions",
                 help="memoryGAN MCGN: c ~ p(c|v=1) from D's memory, G([K_c, z]); wraps any G.")
    registry.add("loss", "memorygan", f"{_P}.losses:MemoryGANLoss", f"{_P}.losses:MemoryGANLossOptions",
                 help="memoryGAN eq. 7-8 (saturating or non-saturating G) + lambda*I_hat; stages writes.")
    registry.add("generator", "memorygan-resnet", f"{_P}.resnet:ResNetGenerator",
                 f"{_P}.resnet:ResNetGeneratorOptions",
                 help="memoryGAN's CIFAR-10 ResNet G (32 px, layer norm, ELU); wrap it with "
                 "[generator.inner] kind = \"memorygan-resnet\".")
    registry.add("augment", "brightness-contrast", f"{_P}.augment:BrightnessContrast",
                 f"{_P}.augment:BrightnessContrastOptions",
                 help="memoryGAN's CIFAR-10 augmentation: random brightness and contrast, real "
                 "images only.")
    registry.add("dataset", "affine-mnist", f"{_P}.affine:affine_mnist",
                 f"{_P}.affine:AffineMnistOptions",
                 help="memoryGAN's affine-MNIST: digits rotated by up to +-20 degrees and placed "
                 "at random in 40 x 40 (MNIST idx files, or opencv-doc's digits offline).")
    registry.add("dataset", "stacked-fashion", f"{_P}.stacked:stacked_fashion",
                 f"{_P}.stacked:StackedOptions",
                 help="Three Fashion-MNIST images in the R, G, B channels: 1,000 known modes "
                 "(as StackedMNIST).")
    registry.add("metric", "stacked-modes", f"{_P}.stacked:StackedModes",
                 f"{_P}.stacked:StackedModesOptions",
                 help="Modes covered and KL of the mode histogram, each channel read by a "
                 "classifier (default: the fashion-classifier).")
    registry.add("metric", "latent-paths", f"{_P}.stacked:LatentPaths",
                 f"{_P}.stacked:LatentPathsOptions",
                 help="Share of low-confidence (between-cluster) samples along straight latent "
                 "paths (memoryGAN Fig. 1; keys snapped to memory slots).")


def viz_args(parser) -> None:
    """``memcore viz memorygan``'s arguments (here, so start-up does not import ``viz``)."""
    from memcore.cliargs import count, out_folder, seed64
    parser.add_argument("run", help="Run directory of a memoryGAN run.")
    parser.add_argument("--out", type=out_folder,
                        help="Output folder (default: RUN/viz-memorygan).")
    parser.add_argument("--images", type=count(1, 100_000), default=512,
                        help="Held-out images for the likelihood.")
    parser.add_argument("--rows", type=count(1, 64), default=6,
                        help="Images shown in posteriors.png.")
    parser.add_argument("--grid", type=count(2, 64), default=8,
                        help="Side of the interpolation grids.")
    parser.add_argument("--dcgan", help="A -Memory (DCGAN) run for the z-interpolation grid.")
    parser.add_argument("--seed", type=seed64, default=0)


@memcore.hookimpl
def memcore_add_commands(commands):
    commands.add_viz("memorygan", "memoryGAN figures from a run: prior, posteriors, likelihood, "
                     "interpolations.", viz_args, f"{_P}.viz:run")
