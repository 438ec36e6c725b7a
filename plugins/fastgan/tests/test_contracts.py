"""memcore's contract checks on the FastGAN networks."""
from memcore_kit.contracts import check_discriminator, check_generator, factory_of


def test_fastgan_networks_meet_their_contracts():
    check_generator(factory_of("generator", "fastgan", {"z_dim": 8, "width": 4, "sle_span": 4},
                               resolution=32, channels=3), resolution=32, channels=3)
    check_discriminator(factory_of("discriminator", "fastgan", {"width": 4, "sle_span": 4,
                                                                "decoder_width": 8},
                                   resolution=32, channels=3), resolution=32, channels=3)
