"""memcore's contract checks on the painter generators."""
from memcore_kit.contracts import check_generator, factory_of


def test_fpa_meets_the_generator_contract():
    check_generator(factory_of("generator", "fpa", {"steps": 6, "hidden": 16, "z_dim": 8, "input_dim": 16},
                               resolution=12, channels=1), resolution=12, channels=1)
