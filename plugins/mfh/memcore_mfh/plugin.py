"""Registration only: the torch-heavy modules are imported when a recipe or command uses them."""
import memcore

_P = "memcore_mfh"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    add = registry.add
    add("generator", "mfh", f"{_P}.networks:Generator", f"{_P}.networks:GeneratorOptions",
        help="MFH: E_cr/E_ci encoders, CI memory with a Gumbel-softmax addresser, AdaIN generator.")
    add("discriminator", "mfh", f"{_P}.networks:Discriminator", f"{_P}.networks:DiscriminatorOptions",
        help="MFH projection discriminator (spectral norm) with a classifier head.")
    add("loss", "mfh-adversarial", f"{_P}.losses:Adversarial", f"{_P}.losses:AdversarialOptions",
        help="MFH eq. 7: conditional logistic GAN loss plus classifier cross-entropy.")
    add("loss", "mfh-reconstruction", f"{_P}.losses:Reconstruction", "memcore:LossOptions",
        help="MFH eq. 8: L1 reconstruction of x from (f_cr(x), f_ci(x)).")
    add("loss", "mfh-diversity", f"{_P}.losses:Diversity", f"{_P}.losses:DiversityOptions",
        help="MFH eq. 9: alpha - |G(f_cr, m_a) - G(f_cr, m_b)|_1 (Algorithm 1).")
    add("loss", "mfh-balance", f"{_P}.losses:Balance", f"{_P}.losses:BalanceOptions",
        help="MFH eq. 10: KL(pi || uniform) over memory slots.")
    add("loss", "mfh-cr-category", f"{_P}.losses:CRCategory", "memcore:LossOptions",
        help="MFH sec. 3.1: E_cr supervised by the category label (needs generator.cr_head).")
    add("dataset", "font-glyphs", f"{_P}.fonts:font_glyphs", f"{_P}.fonts:FontGlyphOptions",
        help="132 characters (a class each) rendered from 115 fonts of Debian font packages (an "
             "instance each), with a published 102 base / 30 novel class split.")


@memcore.hookimpl
def memcore_add_commands(commands):
    from . import tools
    commands.add_viz("mfh", "MFH figures: the same CI slot across novel categories (Fig. 5) and "
                     "interpolation between two slots (Fig. 10).", tools.configure_viz,
                     tools.cmd_viz)
    commands.add("mfh-eval", "MFH one-shot evaluation on the held-out novel classes: per-class "
                  "FID/KID, diversity, ProtoNet N-way 1-shot with and without generated images.",
                  tools.configure_eval, tools.cmd_eval, evaluates_run=True)
