"""memcore's experiment tools, a plugin like any other: ``memcore sweep`` (every variant x seed of
an experiment file, :mod:`.sweep`), ``memcore compare`` (variants over seeds, :mod:`.compare`) and
the report of each run (``report.md`` with its curves, :mod:`.report`)."""
