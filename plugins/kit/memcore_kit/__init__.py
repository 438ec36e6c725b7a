"""The plugin author's kit, a plugin like any other: ``memcore new-plugin`` (scaffold), the
contract checks (contracts), ``memcore check`` (check), the pytest fixtures (testing, loaded by
the ``pytest11`` entry point) and the multi-process runner (distributed).

The kit stands on the runtime core and the core never imports it, so the core reads on its own.
"""
