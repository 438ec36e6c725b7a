"""The CI memory M passes memcore's memory contracts under both addressings (paper and VQ)."""
import pytest
import torch

from memcore_kit.contracts import check_memory
from memcore_mfh.memory import CIMemory


@pytest.mark.parametrize("addressing", ["gumbel", "nearest"])
def test_ci_memory_contracts(addressing):
    def make():  # the contracts seed torch before each call
        return CIMemory(slots=8, width=6, query_dim=6, hidden=16, addressing=addressing, window=16)

    check_memory(make, lambda g: (torch.randn(4, 6, generator=g),), seed=0)
