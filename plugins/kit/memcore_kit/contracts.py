"""Contract checks: does a component keep the promises of its protocol (``docs/protocols.md``)?

Each ``check_<kind>`` builds the component, exercises one promise at a time and raises an
``AssertionError`` whose message names the promise that broke::

    memory contract 'state-in-buffers' broken: plain tensor attribute 'keys' (...)

A component is given as a zero-argument factory (called after ``torch.manual_seed(seed)``, so two
calls must give identical components) or as a module, which is copied for every fresh instance.
:func:`factory_of` turns a registered component name plus recipe options into such a factory::

    from memcore_kit.contracts import check_block, factory_of
    check_block(factory_of("block", "kv-memory", {"at": 8}, channels=16, resolution=8))

The memory checks drive the core's own staging and commit (``Memory.stage`` / ``commit``), exactly
as the trainer does, so they test the plugin and not a re-implementation of the core.
"""
from __future__ import annotations

import contextvars
import copy
import random
from contextlib import contextmanager
from typing import Any, Callable, Mapping

import attrs
import numpy as np
import torch
from torch import nn

from memcore import dist
from memcore.memory import Memory, SYNC_POLICIES, WRITE_POINTS
from memcore.protocols import BuildContext, Generator, Models, logits_of

__all__ = ["ContractViolation", "check_memory", "check_memory_distributed", "check_distributed",
           "check_block", "check_generator", "check_discriminator", "check_loss",
           "check_dataset", "check_metric", "factory_of", "observing"]


class ContractViolation(AssertionError):
    """A component broke a promise of its protocol; the message names the contract."""


class _Broken(Exception):
    pass


def _require(ok, detail: str) -> None:
    if not ok:
        raise _Broken(detail)


# Called as observer(kind, name, None) when a contract holds, (kind, name, message) when it
# breaks: `memcore check` prints each contract as it is decided.
_observer: contextvars.ContextVar[Callable | None] = contextvars.ContextVar(
    "memcore_contract_observer", default=None)


@contextmanager
def observing(observer: Callable[[str, str, str | None], None]):
    """Report every contract decided inside the block to ``observer``."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


@contextmanager
def _contract(kind: str, name: str):
    """Every failure inside, expected or not, is reported as a broken ``name`` contract."""
    try:
        yield
    except ContractViolation:
        raise
    except Exception as exc:
        detail = str(exc) if isinstance(exc, _Broken) else f"{type(exc).__name__}: {exc}"
        violation = ContractViolation(f"{kind} contract '{name}' broken: {detail}")
        if _observer.get() is not None:
            _observer.get()(kind, name, detail)
        raise violation from (None if isinstance(exc, _Broken) else exc)
    if _observer.get() is not None:
        _observer.get()(kind, name, None)


# -- building -------------------------------------------------------------------------------
def factory_of(kind: str, name: str, options: Mapping | None = None, *, resolution: int = 8,
               channels: int = 8, num_classes: int = 0, blocks=(), seed: int = 0) -> Callable:
    """A zero-argument factory for the registered ``kind:name`` with these recipe options.

    ``blocks`` are ``[[<kind>.blocks]]`` tables for a backbone. For a block, ``resolution`` and
    ``channels`` are those of the stage it follows (``options["at"]`` defaults to ``resolution``).
    """
    from memcore.config import slot, structure
    from memcore.registry import get_registry
    raw = {"kind": name, **(options or {})}
    if kind == "block":
        raw.setdefault("at", resolution)
    if blocks:
        raw["blocks"] = list(blocks)
    spec = structure(raw, slot(kind, blocks=bool(blocks)), f"{kind}:{name}")
    ctx = BuildContext(resolution=resolution, channels=channels, num_classes=num_classes,
                       role=kind, blocks=tuple(getattr(spec, "blocks", ()) or ()), seed=seed)

    def build():
        return get_registry().get(kind, name).load_factory()(spec.options, attrs.evolve(ctx))
    build.__qualname__ = f"factory_of({kind}:{name})"
    return build


def _maker(component) -> Callable[[int], Any]:
    """``make(seed)`` -> a fresh instance, from a factory or by copying a pristine module."""
    if isinstance(component, nn.Module):
        pristine = copy.deepcopy(component)
        return lambda seed: copy.deepcopy(pristine)

    def make(seed):
        torch.manual_seed(seed)
        return component()
    return make


def _args(inputs, seed: int, rank: int = 0) -> tuple:
    """Example arguments: ``inputs(generator)``, or given tensors (perturbed per rank)."""
    if callable(inputs):
        out = inputs(torch.Generator().manual_seed(seed + 7919 * rank))
    else:
        out = inputs
    out = out if isinstance(out, tuple) else (out,)
    if rank and not callable(inputs):
        gen = torch.Generator().manual_seed(rank)
        out = tuple(a + 0.5 * torch.randn(a.shape, generator=gen).to(a)
                    if a.is_floating_point() else a for a in out)
    return out


def _with_grad(args: tuple) -> tuple:
    return tuple(a.detach().clone().requires_grad_(True) if a.is_floating_point() else a
                 for a in args)


def _as(args: tuple, dtype) -> tuple:
    return tuple(a.to(dtype) if a.is_floating_point() else a for a in args)


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    return []


# -- state ----------------------------------------------------------------------------------
def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: Mapping, after: Mapping, ignore=("write_count",)) -> list[str]:
    return [k for k in after if k.rpartition(".")[2] not in ignore
            and (k not in before or before[k].shape != after[k].shape
                 or not torch.equal(before[k], after[k]))]


def _differences(a: Mapping, b: Mapping) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in a or k not in b or a[k].shape != b[k].shape
            or a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]


def _holds_tensor(value, registered: set[int]) -> bool:
    """A tensor that is not one of the module's own parameters or buffers (PyTorch modules such as
    LSTM keep lists of references to their parameters; those are not separate state)."""
    if isinstance(value, torch.Tensor):
        return id(value) not in registered
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v, registered) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v, registered) for v in value.values())
    return False


_RNG_TYPES = (torch.Generator, random.Random, np.random.Generator, np.random.RandomState)


def _state_in_buffers(module: nn.Module) -> None:
    """No tensor in a plain attribute (it would miss checkpoints, device moves and the EMA copy),
    no random number generator kept as an attribute (its state is in no checkpoint, and one seeded
    per process makes the ranks diverge), and every buffer persistent (in ``state_dict``)."""
    for path, sub in module.named_modules():
        registered = {id(t) for t in list(sub.parameters()) + list(sub.buffers())}
        for key, value in vars(sub).items():
            if key in ("_parameters", "_buffers", "_modules") or \
                    (key == "_staged" and isinstance(sub, Memory)):
                continue
            where = f"'{path + '.' if path else ''}{key}' ({type(sub).__name__})"
            _require(not _holds_tensor(value, registered),
                     f"plain tensor attribute {where}; keep state in register_buffer so "
                     "checkpoints, device moves and the EMA generator carry it")
            _require(not isinstance(value, _RNG_TYPES),
                     f"attribute {where} holds a {type(value).__name__}: its state is in no "
                     "checkpoint and, seeded per process, differs between ranks; draw from "
                     "write()'s generator argument (a memory) or from torch's global RNG (a "
                     "forward, seeded by the trainer)")
    saved = set(module.state_dict())
    for name, _ in module.named_buffers():
        _require(name in saved, f"buffer '{name}' is not persistent (register_buffer(..., "
                 "persistent=False)), so a checkpoint loses it")


def _python_state(module: nn.Module) -> dict[str, Any]:
    """Plain Python values (numbers, strings, flags and tuples of them) in module attributes."""
    plain = (bool, int, float, str, type(None))
    out = {}
    for path, sub in module.named_modules():
        for key, value in vars(sub).items():
            if key.startswith("_") or key == "training":
                continue
            if isinstance(value, plain) or (isinstance(value, (tuple, list))
                                            and all(isinstance(v, plain) for v in value)):
                out[f"{path + '.' if path else ''}{key}"] = value
    return out


def _attribute_culprits(trained: nn.Module, loaded: nn.Module) -> str:
    """The Python attributes that a state_dict did not carry over, as a sentence (or "")."""
    a, b = _python_state(trained), _python_state(loaded)
    lost = [f"'{k}' ({a[k]!r} in the trained instance, {b.get(k)!r} after loading)"
            for k in a if a[k] != b.get(k)]
    return ("; Python attribute " + ", ".join(lost) + " is not in the state_dict: keep such "
            "state in a buffer (register_buffer(name, torch.tensor(value)))") if lost else ""


def _memories(module: nn.Module) -> dict[str, Memory]:
    return {name or "<self>": m for name, m in module.named_modules() if isinstance(m, Memory)}


def _memory_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.detach().clone() for name, m in _memories(module).items()
            for k, v in m.state_dict().items()}


def _commit_all(module: nn.Module) -> None:
    for m in _memories(module).values():
        m.commit()


def _cycle(module: nn.Module, call: Callable, seed: int) -> Any:
    """One training step's worth of memory traffic: a train-mode forward, then every commit."""
    module.train()
    torch.manual_seed(seed)
    out = call(module)
    _commit_all(module)
    return out


def _eval_out(module: nn.Module, call: Callable, seed: int) -> list[torch.Tensor]:
    module.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        return [t.detach().clone() for t in _tensors(call(module))]


def _same_outputs(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


# -- checks shared by every nn.Module component ---------------------------------------------
def _module_contracts(kind: str, make: Callable, call: Callable, call64: Callable, seed: int,
                      seeded: bool) -> None:
    """state-in-buffers, memory write policies (eval, autograd, buffers, randomness),
    state-dict round trip, determinism, device move.

    ``call(module)`` runs the component on fixed example inputs; ``call64`` on float64 ones.
    """
    module = make(seed)
    with _contract(kind, "state-in-buffers"):
        _state_in_buffers(module)

    if _memories(module):
        with _contract(kind, "eval-write-policy"):
            module.eval()
            before = _memory_state(module)
            with torch.no_grad():
                call(module)
            for name, m in _memories(module).items():
                if not m.write_in_eval:
                    _require(not m._staged, f"memory '{name}' staged rows in eval mode (nothing is "
                             "staged in eval unless write_in_eval=True)")
            _commit_all(module)
            _require(not _changed(before, _memory_state(module)),
                     f"memory buffers {_changed(before, _memory_state(module))} changed in eval mode")

        with _contract(kind, "write-outside-autograd"):
            module = make(seed)
            module.train()
            before = _memory_state(module)
            torch.manual_seed(seed)
            call(module)
            during = _forward_writes(module, before)
            _require(not during, f"forward changed memory buffers {during}; writes go through "
                     "stage() and are applied by write() at the memory's write_at point")
            for name, m in _memories(module).items():
                for rows in m._staged:
                    for key, t in rows.items():
                        _require(t.grad_fn is None and not t.requires_grad,
                                 f"memory '{name}' staged '{key}' with autograd history")
            _commit_all(module)
            for name, b in module.named_buffers():
                _require(b.grad_fn is None and not b.requires_grad,
                         f"buffer '{name}' has autograd history after a write (grad_fn "
                         f"{type(b.grad_fn).__name__}); write under no_grad, into buffers")

    if _memories(module):
        _write_contracts(kind, make, call, seed)

    with _contract(kind, "state-dict-round-trip"):
        trained = make(seed)
        _cycle(trained, call, seed)
        _cycle(trained, call, seed + 1)
        fresh = make(seed + 1)
        fresh.load_state_dict(trained.state_dict())
        culprits = _attribute_culprits(trained, fresh)
        _require(not _differences(_snapshot(trained), _snapshot(fresh)),
                 "load_state_dict did not restore the state")
        _require(_same_outputs(_eval_out(trained, call, seed), _eval_out(fresh, call, seed)),
                 "a fresh instance loaded from state_dict gives different outputs" + culprits)
        _cycle(trained, call, seed + 2)
        _cycle(fresh, call, seed + 2)
        diff = _differences(_snapshot(trained), _snapshot(fresh))
        _require(not diff, f"after loading state_dict and one more identical step the state differs "
                 f"in {diff}" + (culprits or ": some state lives outside the buffers (a plain "
                                 "Python attribute, or a random number generator of its own)"))

    with _contract(kind, "determinism"):
        a, b = make(seed), make(seed)
        if seeded:
            _require(not _differences(_snapshot(a), _snapshot(b)),
                     f"two builds after torch.manual_seed({seed}) differ in "
                     f"{_differences(_snapshot(a), _snapshot(b))}")
        for step in range(2):
            _cycle(a, call, seed + step)
            _cycle(b, call, seed + step)
        _require(not _differences(_snapshot(a), _snapshot(b)),
                 f"identical steps under one seed give different states "
                 f"{_differences(_snapshot(a), _snapshot(b))}")
        _require(_same_outputs(_eval_out(a, call, seed), _eval_out(b, call, seed)),
                 "identical steps under one seed give different outputs")

    with _contract(kind, "device-move"):
        moved = make(seed)
        _cycle(moved, call, seed)
        moved.to(torch.float64)
        for name, t in list(moved.named_buffers()) + list(moved.named_parameters()):
            if t.is_floating_point():
                _require(t.dtype == torch.float64, f"'{name}' stayed {t.dtype} after .to(float64)")
        outs = _tensors(_cycle(moved, call64, seed))
        _require(all(o.dtype == torch.float64 for o in outs if o.is_floating_point()),
                 "float64 module and inputs gave outputs of another dtype")
        for name, t in moved.named_buffers():
            if t.is_floating_point():
                _require(t.dtype == torch.float64, f"buffer '{name}' became {t.dtype} after a "
                         "float64 write (write into the buffer, do not replace it)")
        meta = copy.deepcopy(make(seed)).to("meta")
        for name, t in list(meta.named_buffers()) + list(meta.named_parameters()):
            _require(t.is_meta, f"'{name}' did not follow .to('meta')")


# Global random number generators a write() might wrongly draw from, with how to seed each.
_GLOBAL_RNGS = {"torch's global RNG": torch.manual_seed, "Python's random": random.seed,
                "numpy's global RNG": np.random.seed}


def _states_after_commit(make: Callable, call: Callable, seed: int, rngs, global_seed: int):
    """Memory state after one forward and commit, with ``rngs`` seeded ``global_seed`` just
    before the commit (the others at 0)."""
    m = make(seed)
    m.train()
    torch.manual_seed(seed)
    call(m)
    for name, seed_rng in _GLOBAL_RNGS.items():
        seed_rng(global_seed if name in rngs else 0)
    _commit_all(m)
    return _memory_state(m)


def _write_contracts(kind: str, make: Callable, call: Callable, seed: int) -> None:
    """``write-into-buffers`` and ``write-randomness`` for the memories inside a module."""
    with _contract(kind, "write-into-buffers"):
        module = make(seed)
        module.train()
        before = {n: p.detach().clone() for n, p in module.named_parameters()}
        torch.manual_seed(seed)
        call(module)
        _commit_all(module)
        changed = [n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())]
        _require(not changed, f"write() changed the parameter(s) {changed}: state a memory writes "
                 "belongs in register_buffer. Parameters are for what is learned by gradient: the "
                 "optimizer moves them and the EMA generator averages them (it would blend the "
                 "written state), while memory buffers are copied to the EMA generator verbatim")

    with _contract(kind, "write-randomness"):
        # The generator argument is seeded from the write counter; every global RNG differs
        # between the two runs, so a write drawing from any of them is caught, then named.
        everything = tuple(_GLOBAL_RNGS)
        if _differences(_states_after_commit(make, call, seed, everything, 1),
                        _states_after_commit(make, call, seed, everything, 2)):
            culprits = []
            for name in _GLOBAL_RNGS:
                diff = _differences(_states_after_commit(make, call, seed, (name,), 1),
                                    _states_after_commit(make, call, seed, (name,), 2))
                if diff:
                    culprits.append(f"{name} ({', '.join(diff)})")
            raise _Broken(f"write() results depend on {'; '.join(culprits) or 'global RNGs'}: "
                          "draw random numbers from write()'s generator argument (seeded from the "
                          "write counter: identical on every rank and after a resume)")


def _forward_writes(module: nn.Module, before: Mapping) -> list[str]:
    """Memory buffers a forward changed, for memories that do not write at ``forward``."""
    after = _memory_state(module)
    out = []
    for name, m in _memories(module).items():
        if m.write_at == "forward":
            continue
        prefix = f"{name}."
        out += [k for k in _changed({k: v for k, v in before.items() if k.startswith(prefix)},
                                    {k: v for k, v in after.items() if k.startswith(prefix)})]
    return out


# -- Memory ---------------------------------------------------------------------------------
def check_memory(memory, inputs, *, read_shape: tuple | None = None, differentiable: bool = True,
                 distributed: bool = False, seed: int = 0) -> None:
    """Check a :class:`memcore.Memory` whose ``forward(*inputs)`` reads (and stages rows).

    ``inputs``: a tensor, a tuple of tensors, or ``inputs(generator) -> tuple``. Contracts:
    ``protocol``, ``read`` (tensors of the inputs' dtype, ``read_shape`` if given, gradients reach
    the query when ``differentiable``), ``gradient-to-query-only`` (no parameter of the memory gets
    a gradient, unless the class sets ``learns_by_gradient = True``), ``write`` (a train-mode
    forward and commit change a buffer), ``write-into-buffers`` (and no parameter) and those shared
    with every module (:func:`check_block`). ``distributed=True`` adds the
    2-process contract of :func:`check_memory_distributed` (a few seconds: two processes start).
    """
    make, seeded = _maker(memory), not isinstance(memory, nn.Module)
    m = make(seed)
    with _contract("memory", "protocol"):
        _require(isinstance(m, Memory), f"{type(m).__name__} is not a memcore.Memory")
        _require(m.sync in SYNC_POLICIES, f"sync = {m.sync!r}, expected one of {SYNC_POLICIES}")
        _require(m.write_at in WRITE_POINTS,
                 f"write_at = {m.write_at!r}, expected one of {WRITE_POINTS}")
        _require(type(m).write is not Memory.write, "write(items, generator) is not implemented")
        stats = m.stats()
        _require(isinstance(stats, Mapping) and all(isinstance(v, (int, float)) for v in
                                                      stats.values()),
                 f"stats() must return a dict of numbers, got {stats!r}")

    args = _args(inputs, seed)
    with _contract("memory", "read"):
        m.eval()
        query = _with_grad(args)
        outs = [o for o in _tensors(m(*query)) if o.is_floating_point()]
        _require(outs, "forward returned no floating-point tensor")
        dtype = next((a.dtype for a in args if a.is_floating_point()), torch.get_default_dtype())
        _require(all(o.dtype == dtype for o in outs), f"read dtypes {[o.dtype for o in outs]} "
                 f"differ from the query's {dtype}")
        if read_shape is not None:
            _require(tuple(outs[0].shape) == tuple(read_shape),
                     f"read shape {tuple(outs[0].shape)}, expected {tuple(read_shape)}")
        if differentiable:
            sum(o.sum() for o in outs).backward()
            _require(any(q.grad is not None for q in query if isinstance(q, torch.Tensor)
                         and q.is_floating_point()), "no gradient reaches the query")
        _require(not any(b.requires_grad for b in m.buffers()), "a buffer requires grad")
    if differentiable:
        _gradient_to_query_only("memory", m)

    with _contract("memory", "write"):
        m = make(seed)
        before = _snapshot(m)
        _cycle(m, lambda mod: mod(*args), seed)
        _require(int(m.write_count) == 1, "a train-mode forward staged nothing (no commit wrote)")
        _require(_changed(before, _snapshot(m)), "a train-mode forward and commit() changed no "
                 "buffer besides write_count")

    _module_contracts("memory", make, lambda mod: mod(*args),
                      lambda mod: mod(*_as(args, torch.float64)), seed, seeded)
    if distributed:
        check_memory_distributed(memory, inputs, seed=seed)


_DIVERGENCE_CAUSE = ("Every rank wrote the same gathered rows, so the likely cause is randomness "
                     "not drawn from write()'s generator argument (a generator seeded per "
                     "process, torch's global RNG, which the trainer seeds per rank, Python's "
                     "random), or rows written without stage()")


def _memory_on_rank(memory, inputs, seed: int, steps: int) -> dict:
    m = _maker(memory)(seed)
    m.train()
    for step in range(steps):
        torch.manual_seed(seed + step)
        m(*_args(inputs, seed + step, rank=dist.rank()))
        m.commit()
    return {"sync": m.sync, "state": _snapshot(m)}


def check_memory_distributed(memory, inputs, *, nproc: int = 2, seed: int = 0, steps: int = 2,
                             timeout: float = 300) -> None:
    """``gathered-writes-identical``: on ``nproc`` gloo processes fed different rows, a memory
    with ``sync = "gather"`` holds identical state everywhere after its writes.

    ``memory`` is sent to the processes by pickle: a factory (or class) defined at the top level
    of an importable module, or a ``"module:attr"`` string naming one. ``inputs`` is pickled too:
    tensors, or a top-level function ``inputs(generator) -> tuple`` (not a string).
    """
    from .distributed import run_distributed
    if isinstance(memory, str):
        from memcore.registry import _resolve
        memory = _resolve(memory, "memory factory", "<check_memory_distributed>")
    results = run_distributed(_memory_on_rank, nproc=nproc, args=(memory, inputs, seed, steps),
                              timeout=timeout)
    with _contract("memory", "gathered-writes-identical"):
        if results[0]["sync"] == "local":
            return
        for rank, r in enumerate(results[1:], 1):
            diff = _differences(results[0]["state"], r["state"])
            _require(not diff, f"after {steps} gathered writes rank {rank} differs from rank 0 in "
                     f"{diff} (sync = {results[0]['sync']!r}). {_DIVERGENCE_CAUSE}")
        _require(int(results[0]["state"]["write_count"]) == steps,
                 f"write_count {int(results[0]['state']['write_count'])} after {steps} commits")


def _registered_on_rank(kind: str, name: str, options: dict, build: dict, plugin_files: dict,
                        seed: int, steps: int) -> dict:
    """On one rank: the registered component, trained ``steps`` forwards on this rank's inputs
    with every memory committed, and its memories' state."""
    from memcore.registry import get_registry
    registry = get_registry()
    for plugin, path in plugin_files.items():  # one-off plugin files the parent had loaded
        if plugin not in registry.plugins:
            registry.load_file(path, plugin)
    module = factory_of(kind, name, options, seed=seed, **build)()
    module.train()
    gen = torch.Generator().manual_seed(seed + 7919 * dist.rank())
    for step in range(steps):
        torch.manual_seed(seed + step)
        if kind == "generator":
            module(**module.sample_latent(2, gen, "cpu"))
        else:
            module(torch.rand(2, build["channels"], build["resolution"], build["resolution"],
                              generator=gen) * 2 - 1)
        _commit_all(module)
    return {"sync": {n: m.sync for n, m in _memories(module).items()},
            "state": _memory_state(module)}


def check_distributed(kind: str, name: str, options: Mapping | None = None, *, nproc: int = 2,
                      resolution: int = 8, channels: int = 8, blocks=(), seed: int = 0,
                      steps: int = 2, timeout: float = 300) -> None:
    """``gathered-writes-identical`` for the memories inside a registered block, generator or
    discriminator: on ``nproc`` gloo processes fed different inputs, every memory whose sync is
    ``"gather"`` holds identical state on every rank after its writes. One-off
    plugin files loaded here are loaded in the processes too."""
    from memcore.registry import get_registry
    from .distributed import run_distributed
    files = {p.name: p.module for p in get_registry().plugins.values()
             if p.status == "ok" and p.name.startswith("local:")}
    build = {"resolution": resolution, "channels": channels, "blocks": tuple(blocks)}
    results = run_distributed(_registered_on_rank, nproc=nproc, timeout=timeout,
                              args=(kind, name, dict(options or {}), build, files, seed, steps))
    with _contract(kind, "gathered-writes-identical"):
        shared = [n for n, sync in results[0]["sync"].items() if sync != "local"]
        for rank, r in enumerate(results[1:], 1):
            diff = [k for k in _differences(results[0]["state"], r["state"])
                    if any(k.startswith(n + ".") for n in shared)]
            _require(not diff, f"after {steps} gathered writes rank {rank} differs from rank 0 in "
                     f"{diff}. {_DIVERGENCE_CAUSE}")


# -- Block ----------------------------------------------------------------------------------
def _gradient_contract(kind: str, module: nn.Module, outs: list, wrt: tuple) -> None:
    with _contract(kind, "gradient"):
        floats = [o for o in outs if o.is_floating_point() and o.requires_grad]
        _require(floats, "the output does not depend on anything that requires grad")
        sum(o.float().sum() for o in floats).backward()
        for x in wrt:
            _require(x.grad is not None, "no gradient reaches the input")
        unreached = [name for name in _unreached_parameters(module)
                     if not any(name.startswith(prefix) for prefix in _declared_unreached(module))]
        _require(not unreached, f"no gradient reaches parameter(s) {unreached}: a layer no loss "
                 "trains is dead weight (or a wiring mistake); if it is meant to be, declare why in "
                 "the class: unreached_parameters = {\"name prefix\": \"why\"}")
    _gradient_to_query_only(kind, module)


def _unreached_parameters(module: nn.Module) -> list[str]:
    """Trainable parameters without a gradient after a backward, except those of memories that
    learn from their writes (the gradient-to-query-only contract keeps gradients off them)."""
    skipped = {id(p) for m in _memories(module).values() if not m.learns_by_gradient
               for p in m.parameters()}
    return [name for name, p in module.named_parameters()
            if p.requires_grad and p.grad is None and id(p) not in skipped]


def _declared_unreached(module: nn.Module) -> list[str]:
    """The parameter name prefixes the component's classes declare no loss reaches, each with
    its reason (``unreached_parameters = {"head.": "used only with labels"}``), made absolute."""
    return [f"{owner}.{prefix}" if owner else prefix for owner, m in module.named_modules()
            for prefix in getattr(type(m), "unreached_parameters", {})]


def _gradient_to_query_only(kind: str, module: nn.Module) -> None:
    """After a backward: no memory parameter got a gradient unless its class says it learns by
    gradient (``learns_by_gradient = True``, like a learned codebook)."""
    with _contract(kind, "gradient-to-query-only"):
        for name, m in _memories(module).items():
            if m.learns_by_gradient:
                continue
            reached = [n for n, p in m.named_parameters()
                       if p.grad is not None and bool(p.grad.ne(0).any())]
            _require(not reached, f"gradients reach memory '{name}' parameter(s) {reached}: a "
                     "memory learns from its writes and passes gradients to the query only; one "
                     "meant to learn by gradient declares learns_by_gradient = True (then its "
                     "parameters are trained and averaged by the EMA like any weight)")


def check_block(block, *, channels: int = 8, resolution: int = 8, batch: int = 2,
                seed: int = 0) -> None:
    """Check a block (``factory_of("block", ...)`` or a module): ``shape`` (B, C, H, W) in, the
    same out, same dtype; ``gradient`` to the input and parameters; ``state-in-buffers``;
    memories inside follow the ``eval-write-policy``, ``write-outside-autograd`` and
    ``write-randomness`` contracts; ``state-dict-round-trip``; ``determinism``; ``device-move``."""
    make, seeded = _maker(block), not isinstance(block, nn.Module)
    x = torch.randn(batch, channels, resolution, resolution,
                    generator=torch.Generator().manual_seed(seed))
    module = make(seed)
    with _contract("block", "shape"):
        module.train()
        xg = x.clone().requires_grad_(True)
        out = module(xg)
        _require(isinstance(out, torch.Tensor), f"returned {type(out).__name__}, not a tensor")
        _require(out.shape == x.shape, f"mapped {tuple(x.shape)} to {tuple(out.shape)}")
        _require(out.dtype == x.dtype, f"mapped {x.dtype} to {out.dtype}")
    _gradient_contract("block", module, [out], (xg,))
    _module_contracts("block", make, lambda mod: mod(x), lambda mod: mod(x.double()), seed, seeded)


# -- Generator / Discriminator --------------------------------------------------------------
def check_generator(generator, *, resolution: int, channels: int, batch: int = 2,
                    seed: int = 0, bounded: bool = True) -> None:
    """Check a generator: ``protocol`` (a memcore.Generator with z_dim), ``sample-latent``
    (keyword tensors of batch size n, reproducible from the torch.Generator), ``output``
    ((B, channels, resolution, resolution) in [-1, 1], or only finite with ``bounded=False`` for
    generators without an output activation, such as StyleGAN2's), ``gradient`` to the
    parameters, and the contracts shared with blocks (round trip, determinism, device move,
    memory policies)."""
    make, seeded = _maker(generator), not isinstance(generator, nn.Module)
    G = make(seed)
    with _contract("generator", "protocol"):
        _require(isinstance(G, Generator), f"{type(G).__name__} is not a memcore.Generator")
        _require(isinstance(G.z_dim, int) and G.z_dim > 0, f"z_dim = {G.z_dim!r}")
    with _contract("generator", "sample-latent"):
        latents = G.sample_latent(batch, torch.Generator().manual_seed(seed), "cpu")
        again = G.sample_latent(batch, torch.Generator().manual_seed(seed), "cpu")
        _require(isinstance(latents, Mapping) and latents, "sample_latent must return a dict")
        _require(not _differences(latents, again), "sample_latent is not reproducible from its "
                 "torch.Generator")
        for k, v in latents.items():
            _require(isinstance(v, torch.Tensor) and v.shape[0] == batch,
                     f"latent '{k}' is not a tensor with {batch} rows")
    with _contract("generator", "output"):
        G.train()
        out = G(**latents)
        _require(isinstance(out, torch.Tensor), f"returned {type(out).__name__}, not a tensor")
        want = (batch, channels, resolution, resolution)
        _require(tuple(out.shape) == want, f"images of shape {tuple(out.shape)}, expected {want}")
        if bounded:
            _require(float(out.detach().abs().max()) <= 1.0 + 1e-5, "images outside [-1, 1] "
                     "(a generator without an output activation: check with bounded=False)")
        _require(bool(torch.isfinite(out).all()), "non-finite images")
    _gradient_contract("generator", G, [out], ())
    latents64 = {k: v.double() if v.is_floating_point() else v for k, v in latents.items()}
    _module_contracts("generator", make, lambda mod: mod(**latents),
                      lambda mod: mod(**latents64), seed, seeded)


def check_discriminator(discriminator, *, resolution: int, channels: int, num_classes: int = 0,
                        batch: int = 2, seed: int = 0) -> None:
    """Check a discriminator: ``output`` (logits (B,) or (B, k), or a dict with batch-first
    tensors and a ``"logits"`` entry), ``gradient`` to the input images (R1 needs it) and the
    parameters, and the contracts shared with blocks."""
    make, seeded = _maker(discriminator), not isinstance(discriminator, nn.Module)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, resolution, resolution, generator=gen) * 2 - 1
    c = torch.randint(num_classes, (batch,), generator=gen) if num_classes else None
    args = (x,) if c is None else (x, c)
    D = make(seed)
    with _contract("discriminator", "output"):
        D.train()
        xg = x.clone().requires_grad_(True)
        out = D(xg) if c is None else D(xg, c)
        logits = logits_of(out)
        _require(isinstance(logits, torch.Tensor), "no logits tensor (a tensor or dict['logits'])")
        _require(logits.dim() in (1, 2) and logits.shape[0] == batch,
                 f"logits of shape {tuple(logits.shape)}, expected ({batch},) or ({batch}, k)")
        if isinstance(out, Mapping):
            for k, v in out.items():
                _require(not isinstance(v, torch.Tensor) or v.shape[0] == batch,
                         f"output '{k}' is not batch-first (shape {tuple(v.shape)}); the core "
                         "splits every tensor entry into real and fake rows")
    _gradient_contract("discriminator", D, [logits], (xg,))
    _module_contracts("discriminator", make, lambda mod: mod(*args),
                      lambda mod: mod(*_as(args, torch.float64)), seed, seeded)


# -- Loss -----------------------------------------------------------------------------------
class _TinyG(Generator):
    def __init__(self, resolution, channels, num_classes):
        super().__init__()
        self.z_dim, self.num_classes, self.shape = 8, num_classes, (channels, resolution, resolution)
        self.net = nn.Linear(8, channels * resolution * resolution)

    def forward(self, z, c=None):
        return self.net(z).tanh().view(-1, *self.shape)


class _TinyD(nn.Module):
    def __init__(self, resolution, channels, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Linear(channels * resolution * resolution, 1)

    def forward(self, x, c=None):
        return self.net(x.flatten(1)).squeeze(1)


def check_loss(loss, *, generator=None, discriminator=None, resolution: int = 8,
               channels: int = 1, num_classes: int = 0, batch: int = 4, seed: int = 0,
               requires_gradient: bool = True) -> None:
    """Check a loss term on a tiny G and D (or the factories given): ``protocol`` (phases within
    D and G, weight, every), ``value`` (a finite scalar tensor or None per phase), ``gradient``
    (reaches the parameters of the network trained in that phase) and ``determinism``."""
    def run(phase):
        torch.manual_seed(seed)
        G = generator() if generator else _TinyG(resolution, channels, num_classes)
        D = discriminator() if discriminator else _TinyD(resolution, channels, num_classes)
        term = loss() if callable(loss) and not hasattr(loss, "phases") else loss
        models = Models(G=G, D=D, G_ema=None, augment=None, losses=[term])
        for m in models.modules_with("on_build"):
            m.on_build(models)
        from memcore.step import StepContext
        gen = torch.Generator().manual_seed(seed)
        real = torch.rand(batch, channels, resolution, resolution, generator=gen) * 2 - 1
        labels = torch.randint(num_classes, (batch,), generator=gen) if num_classes else None
        ctx = StepContext(phase=phase, pass_name=phase + ("reg" if term.every > 1 else ""),
                          step=0, nets={"G": G, "D": D}, models=models, real=real, labels=labels,
                          latent_generator=torch.Generator().manual_seed(seed), device="cpu",
                          memories={}, recipe=None)
        return term, (D if phase == "D" else G), term(ctx)

    term = loss() if callable(loss) and not hasattr(loss, "phases") else loss
    with _contract("loss", "protocol"):
        phases = tuple(getattr(term, "phases", ()))
        _require(phases and set(phases) <= {"D", "G"}, f"phases = {phases!r}, expected a "
                 "non-empty subset of ('D', 'G')")
        _require(isinstance(term.weight, (int, float)), f"weight = {term.weight!r}")
        _require(isinstance(term.every, int) and term.every >= 1, f"every = {term.every!r}")
    for phase in phases:
        with _contract("loss", "value"):
            _, trained, value = run(phase)
            if value is None:
                continue
            _require(isinstance(value, torch.Tensor) and value.numel() == 1,
                     f"{phase} phase returned {type(value).__name__} "
                     f"{tuple(getattr(value, 'shape', ()))}, expected a scalar tensor or None")
            _require(bool(torch.isfinite(value).all()), f"{phase} phase value is {value.item()}")
        if requires_gradient:
            with _contract("loss", "gradient"):
                value.sum().backward()
                _require(any(p.grad is not None for p in trained.parameters()),
                         f"the {phase} phase value does not reach {phase}'s parameters")
        with _contract("loss", "determinism"):
            again = run(phase)[2]
            _require(torch.equal(value.detach(), again.detach()),
                     f"{phase} phase gives {value.item()} then {again.item()} under one seed")


# -- Dataset / Metric -----------------------------------------------------------------------
def check_dataset(dataset, *, items: int = 4) -> None:
    """Check an image dataset (or a factory of one): ``attributes``, ``items`` ((C, H, W) float in
    [-1, 1] and an int label), and the in-memory ``images``/``labels`` layout when present."""
    ds = dataset() if callable(dataset) and not hasattr(dataset, "__getitem__") else dataset
    with _contract("dataset", "attributes"):
        for name in ("resolution", "channels", "num_classes"):
            _require(isinstance(getattr(ds, name, None), int), f"'{name}' is not an int")
        _require(len(ds) > 0, "empty dataset")
        if ds.num_classes:
            _require(len(ds.class_names) == ds.num_classes,
                     f"{len(ds.class_names)} class_names for {ds.num_classes} classes")
    with _contract("dataset", "items"):
        for i in range(min(items, len(ds))):
            image, label = ds[i]
            want = (ds.channels, ds.resolution, ds.resolution)
            _require(isinstance(image, torch.Tensor) and tuple(image.shape) == want,
                     f"item {i}: image of shape {tuple(getattr(image, 'shape', ()))}, expected {want}")
            _require(image.is_floating_point() and float(image.abs().max()) <= 1.0 + 1e-6,
                     f"item {i}: image is not float in [-1, 1]")
            _require(isinstance(label, int) and (label == -1 if not ds.num_classes
                                                 else 0 <= label < ds.num_classes),
                     f"item {i}: label {label!r} (num_classes {ds.num_classes})")
    if getattr(ds, "images", None) is not None:
        with _contract("dataset", "in-memory"):
            _require(ds.images.dtype == torch.uint8 and ds.images.dim() == 4,
                     f"images must be uint8 N×C×H×W, got {ds.images.dtype} {tuple(ds.images.shape)}")
            if ds.labels is not None:
                _require(ds.labels.dtype == torch.int64 and len(ds.labels) == len(ds.images),
                         "labels must be int64 with one per image")


def check_metric(metric, *, resolution: int = 8, channels: int = 1, num_real: int = 64) -> None:
    """Check a metric (or a factory of one) on a tiny generator and random real images:
    ``protocol`` (key, higher_is_better, preflight) and ``compute`` (a dict holding ``key`` as a
    number; other values numbers or strings; the same result twice)."""
    from memcore_datasets.images import TensorImageDataset
    from memcore.evaluation import MetricSession
    m = metric() if callable(metric) and not hasattr(metric, "compute") else metric
    with _contract("metric", "protocol"):
        _require(isinstance(m.key, str) and m.key, f"key = {m.key!r}")
        _require(isinstance(m.higher_is_better, bool), f"higher_is_better = {m.higher_is_better!r}")
        m.preflight()
    torch.manual_seed(0)
    G = _TinyG(resolution, channels, 0)
    images = torch.randint(0, 256, (num_real, channels, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    data = TensorImageDataset(images, None)
    data.resolution, data.channels, data.num_classes = resolution, channels, 0
    with _contract("metric", "compute"):
        results = [m.compute(MetricSession(G, data, "cpu", None, 0)) for _ in range(2)]
        out = results[0]
        _require(isinstance(out, Mapping), f"compute returned {type(out).__name__}, not a dict")
        _require(isinstance(out.get(m.key), (int, float)),
                 f"the result has no number under its key '{m.key}': {out!r}")
        _require(all(isinstance(v, (int, float, str)) for v in out.values()),
                 "result values must be numbers or strings")
        _require(results[0] == results[1], f"two computations differ: {results}")
