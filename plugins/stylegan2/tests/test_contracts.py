"""memcore's contract checks on the StyleGAN2 networks."""
from memcore_kit.contracts import check_discriminator, check_generator, factory_of

SMALL = {"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 16, "mapping_layers": 2}


def test_stylegan2_networks_meet_their_contracts():
    check_generator(factory_of("generator", "stylegan2", SMALL, resolution=16, channels=3),
                    resolution=16, channels=3, bounded=False)  # no output activation, as stylegan2
    check_discriminator(factory_of("discriminator", "stylegan2",
                                   {"channel_base": 256, "channel_max": 16}, resolution=16,
                                   channels=3), resolution=16, channels=3)
