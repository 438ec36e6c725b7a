"""Registration only: the torch-heavy modules are imported when a recipe or command uses them."""
import memcore

_P = "memcore_fpainter"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("generator", "fpa", f"{_P}.fpa:FPA", f"{_P}.fpa:FPAOptions",
                 help="Fast Weight Painter: an LSTM paints T rank-one delta-rule updates per channel.")
    registry.add("generator", "fpa-unet", f"{_P}.unet:FPAUNet", f"{_P}.unet:FPAUNetOptions",
                 help="FPA (as G.painter, loads stage-1 'fpa' weights) refined by a U-Net (G.unet).")
    registry.add("discriminator", "lightgan", f"{_P}.lightgan:LightGAN", f"{_P}.lightgan:LightGANOptions",
                 help="LightGAN D (lightweight-gan): residual down-blocks, 32x32 head, decoders.")
    registry.add("loss", "lightgan-aux", f"{_P}.lightgan:LightGANAux", "memcore:LossOptions",
                 help="LightGAN D's 32x32-head hinge and reconstruction terms (pair with hinge).")
    registry.add("loss", "lightgan-gp", f"{_P}.lightgan:LightGANPenalty",
                 f"{_P}.lightgan:LightGANPenaltyOptions",
                 help="Two-sided gradient penalty on reals, every 4th step in that step's D "
                      "update (lightweight-gan fork).")
    registry.add("loss", "fpa-pre-unet", f"{_P}.losses:PreUNetHinge", "memcore:LossOptions",
                 help="Hinge term that also shows D the FPA canvas before the U-Net (fpa-unet only).")


@memcore.hookimpl
def memcore_add_commands(commands):
    from . import viz  # argparse set-up only; torch is imported by the handler
    commands.add_viz("painting", viz.HELP, viz.configure, viz.handle)
