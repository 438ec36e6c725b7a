"""Public name of :mod:`memcore.kit.testing` (the pytest plugin named by the ``pytest11`` entry
point): ``memcore.testing`` is the kit's module itself, so its fixtures register once."""
import sys

from .kit import testing

sys.modules[__name__] = testing
