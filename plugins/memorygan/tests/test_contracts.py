"""memcore's contract checks on the memoryGAN discriminator (which holds the DMN memory) and the
memory-conditional generator."""
from memcore_kit.contracts import check_discriminator, factory_of


def test_memorygan_discriminator_meets_the_contract():
    options = {"key_dim": 16, "slots": 32, "top_k": 4, "width": 8}
    check_discriminator(factory_of("discriminator", "memorygan", options, resolution=28, channels=1),
                        resolution=28, channels=1)
