"""memcore's contract checks on the moca block (which holds a memcore.Memory)."""
from memcore_kit.contracts import check_block, factory_of


def test_moca_block_meets_the_block_and_memory_contracts():
    check_block(factory_of("block", "moca", {"cells": 2, "prototypes": 8, "warmup": 1, "dim": 4},
                           resolution=8, channels=8), channels=8, resolution=8)


def test_sa_only_block_meets_the_block_contract():
    check_block(factory_of("block", "moca", {"paths": "sa", "dim": 4}, resolution=8, channels=8),
                channels=8, resolution=8)
