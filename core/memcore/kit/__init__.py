"""The plugin author's kit: ``memcore new-plugin`` (scaffold), the contract checks (contracts),
``memcore check`` (check), the pytest fixtures (testing) and the multi-process runner
(distributed).

The kit stands on the runtime core and the core never imports it, so the core reads on its own.
The public names are ``memcore.contracts`` and ``memcore.testing`` (the pytest11 entry point).
"""
