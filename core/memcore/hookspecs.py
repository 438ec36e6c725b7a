"""Every hook a memcore plugin can implement.

A plugin is a module named by an entry point in the ``memcore`` group::

    [project.entry-points.memcore]
    myplugin = "memcore_myplugin.plugin"

The module defines functions decorated with ``@memcore.hookimpl`` whose names are the hook names
below. pluggy checks the argument names against these specs, and memcore refuses a plugin that
implements a hook not listed here (usually a typo) with a message naming the plugin and the hook.

Hooks are called for every loaded plugin, one plugin at a time, so an exception is attributed to
the plugin that raised it and the other plugins keep working.

Training-time behaviour (memory writes, auxiliary losses, phase callbacks) is not a pluggy hook: it
belongs to the components a recipe names, see ``docs/protocols.md``. A plugin that is installed but
not used by a recipe therefore never runs during training; ``memcore_run_finished`` runs after it.
"""
from __future__ import annotations

import pluggy

PROJECT = "memcore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def memcore_register_components(registry):
    """Register components with ``registry.add(kind, name, factory, config, help=...)``.

    Called once per plugin at start-up. Keep it cheap: pass ``factory`` (and ``config``) as
    ``"module:attribute"`` strings so heavy modules are imported only when a recipe uses them.
    ``kind`` is one of :data:`memcore.registry.KINDS`.
    """


@hookspec
def memcore_add_commands(commands):
    """Add sub-commands to the ``memcore`` command line.

    ``commands.add(name, help, configure, handler)``: ``configure(parser)`` adds arguments to an
    ``argparse`` parser, ``handler(args) -> int`` runs the command and returns its exit status.
    Called at every start-up: keep ``configure`` in a light module and pass ``handler`` as a
    ``"module:attr"`` string when its module imports torch, so it is imported only when it runs.
    ``commands.add(..., evaluates_run=True)`` declares an evaluation command (its first argument
    is a run, it writes only inside that run): an experiment's ``after`` commands may run it
    (``eval``, ``sample`` and every ``viz`` are such commands; docs/trust.md).
    ``commands.add_viz(name, help, configure, handler)`` adds ``memcore viz NAME``.
    """


@hookspec
def memcore_run_finished(run_dir, notes):
    """A training run ended (finished, stopped or failed): write what is
    derived from its files into ``run_dir`` (the experiments plugin writes ``report.md`` with the
    loss and metric curves). Called on the main process only, after the log is closed; ``notes``
    are lines that describe the run (versions, devices, dataset, best metric). An ``OSError`` is
    ignored (the run's own files are written), anything else is a bug in the plugin.
    """


@hookspec
def memcore_eval_options(parser):
    """Add options to ``memcore eval`` (an ``argparse`` parser), read by
    :func:`memcore_eval_variants`."""


@hookspec
def memcore_eval_variants(args, run):
    """Evaluate a run several ways: return ``[(label, make_context), ...]`` or ``None``.

    ``run`` is a :class:`memcore.LoadedRun`; ``make_context(repeat)`` returns a context manager
    that is active while the samples of that repeat are generated (e.g. forward hooks adding noise
    to a block's input). ``memcore eval`` computes every metric for every variant and repeat
    (``--repeats``) and reports mean ± std per variant. Return ``None`` when your options are unset.
    """


@hookspec
def memcore_api_version():
    """Return the memcore API version this plugin was written for, e.g. ``"1"``.

    A plugin whose major version differs from :data:`memcore.API_VERSION` is refused with a
    message naming both. Plugins that do not implement the hook are assumed compatible.
    """
