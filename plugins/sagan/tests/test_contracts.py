"""memcore's contract checks on the self-attention block and the SAGAN networks."""
from memcore_kit.contracts import check_block, check_discriminator, check_generator, factory_of


def test_self_attention_meets_the_block_contract():
    for options in ({}, {"out_projection": True, "pool_keys": True, "spectral_norm": True}):
        check_block(factory_of("block", "self-attention", options, resolution=8, channels=16),
                    channels=16, resolution=8)


def test_sagan_networks_meet_their_contracts():
    check_generator(factory_of("generator", "sagan", {"z_dim": 8, "width": 8}, resolution=32,
                               channels=3), resolution=32, channels=3)
    check_discriminator(factory_of("discriminator", "sagan", {"width": 8}, resolution=32,
                                   channels=3), resolution=32, channels=3)
