"""memcore's contract checks on the base plugin's components."""
from memcore_kit.contracts import check_discriminator, check_generator, check_loss, factory_of


def test_dcgan_networks_meet_their_contracts():
    for classes in (0, 10):
        check_generator(factory_of("generator", "dcgan", {"z_dim": 8, "width": 8}, resolution=28,
                                   channels=1, num_classes=classes), resolution=28, channels=1)
        check_discriminator(factory_of("discriminator", "dcgan", {"width": 8}, resolution=28,
                                       channels=1, num_classes=classes),
                            resolution=28, channels=1, num_classes=classes)
