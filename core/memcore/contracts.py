"""Public name of :mod:`memcore.kit.contracts`: ``from memcore.contracts import check_block``
and ``memcore.contracts.check_block`` give the kit's module itself, not a copy."""
import sys

from .kit import contracts

sys.modules[__name__] = contracts
