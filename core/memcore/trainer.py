"""The training loop: one place where the GAN step happens.

Per iteration: ``d_steps`` D phases (each on a fresh real batch), lazy D terms when due, one G
phase, lazy G terms when due, then the EMA update. Memory commits happen at the points their
memories declare (``after_D``, ``after_G``, ``after_step``). Then logging, sample grids,
checkpoints and metrics, each a separate concern.

DDP follows the recipe in docs/architecture.md: G and D are wrapped separately with
``broadcast_buffers=False`` (memory buffers are synchronised by the memory protocol, not by DDP);
only the trained network has ``requires_grad`` on in a phase; the other runs under ``no_grad``
or ``no_sync``; gradient accumulation is an explicit micro-batch loop, never
``accelerator.accumulate`` (which silently skips D steps when two phases share its counter).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import resource
import signal
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from . import __version__, checkpoint, dist, safewrite
from .build import build_dataset, build_metrics, build_models
from .data import BatchStream
from .ema import average_buffers, update_ema
from .errors import Interrupted, MemcoreError, TrainingStopped
from .images import save_grid
from .logs import RunLog, read_log, torn_last_line
from .memory import commit_all, memories_in
from .recipe import Recipe, dumps
from .registry import get_registry
from .rundir import plugin_versions
from .step import StepContext, applies_to, module_owners, recording_block_losses


def make_accelerator(recipe: Recipe, find_unused: bool = False):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs
    # Several runs in one process (tests, studies) may differ in precision; the process group
    # (PartialState) is kept.
    AcceleratorState._reset_state()
    # We rely on broadcast_buffers=False keeping rank-local buffers unsynced at init, which the
    # suggested replacement does not do yet.
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated")
    kwargs = DistributedDataParallelKwargs(broadcast_buffers=False,
                                           find_unused_parameters=find_unused)
    # Without cpu=True accelerate does not see torchrun's CPU processes (MULTI_CPU with gloo).
    cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    return Accelerator(cpu=cpu, mixed_precision=recipe.train.precision, kwargs_handlers=[kwargs],
                       gradient_accumulation_steps=1, step_scheduler_with_optimizer=False)


def _optimizer(spec, params, lazy_interval: int = 0):
    """Adam(W); with ``lazy_correction`` the lr and betas compensate for lazy regularisation."""
    lr, betas = spec.lr, tuple(spec.betas)
    if spec.lazy_correction and lazy_interval > 1:
        c = lazy_interval / (lazy_interval + 1)
        lr, betas = lr * c, tuple(b ** c for b in betas)
    cls = torch.optim.AdamW if spec.kind == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=betas, eps=spec.eps, weight_decay=spec.weight_decay)


class _Interrupt:
    """During the training loop the first Ctrl-C/SIGTERM asks for a stop at the end of the step,
    with a checkpoint; a second one stops at once without saving, since the step it lands in is
    half done (a checkpoint of it would hold later state under an earlier step number).

    Before the loop nothing is deferred: the CLI turns either signal into :class:`Interrupted`.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread
            pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise Interrupted(signum, "a second interrupt stopped training at once, without "
                              "saving the half-finished step")
        self.signum = signum

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


class Trainer:
    def __init__(self, recipe: Recipe, resolved: dict, run_dir: Path, resume_from: Path | None = None,
                 dataset=None):
        """``dataset``: the recipe's dataset when already opened (by validation), else built."""
        self.recipe, self.resolved, self.run_dir = recipe, resolved, Path(run_dir)
        t = recipe.train
        self.dataset = dataset if dataset is not None else build_dataset(recipe)
        self.models = build_models(recipe, self.dataset)
        self.metrics = build_metrics(recipe, self.dataset)
        for m in self.metrics:  # before anything is trained or written: fail at step 0, not N
            m.preflight()
        find_unused = any(getattr(m, "ddp_find_unused", False)
                          for root in (self.models.G, self.models.D) for m in root.modules())
        self.accelerator = make_accelerator(recipe, find_unused)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        if t.batch_size % (self.world * t.micro_batches):
            raise MemcoreError(f"train.batch_size = {t.batch_size} must be divisible by the number of "
                               f"processes ({self.world}) x train.micro_batches ({t.micro_batches})")
        self.device = self.accelerator.device
        self.step = 0
        self.best: dict = {}
        self._told_ema = False  # that the EMA generator is still mostly its first weights
        if t.init_from and resume_from is None:  # a resumed run has its own weights
            self._init_from(t.init_from, t.init_roles)
        self._freeze(t.freeze)
        self._prepare()
        self.stream = BatchStream(self.dataset, t.batch_size, t.seed, self.rank, self.world,
                                  t.num_workers)
        self.latent_generator = torch.Generator().manual_seed(t.seed * 1000 + self.rank + 1)
        torch.manual_seed(t.seed * 1000 + self.rank + 7)
        self.memories = memories_in(self.models.G, self.models.D, self.models.augment)
        if resume_from is not None:
            self._resume(checkpoint.load(resume_from), f"--resume checkpoint {resume_from}")

    # -- setup --------------------------------------------------------------------------------
    def _init_from(self, source: str, roles) -> None:
        path = checkpoint.resolve(source, prefer="latest")
        state = checkpoint.load(path)
        pairs = {role: (net, state["models"][role]) for role, net in
                 (("G", self.models.G), ("D", self.models.D), ("G_ema", self.models.G_ema))
                 if net is not None and role in roles and role in state["models"]}
        # New modules (a block added for stage 2) start fresh; every saved tensor must fit.
        checkpoint.refuse_foreign(
            f"train.init_from = {source!r} ({path})",
            {role: checkpoint.tensor_mismatches(net, sd, allow_missing=True)
             for role, (net, sd) in pairs.items()},
            checkpoint.recipe_differences(state, self.resolved))
        report = []
        for role, (net, sd) in pairs.items():
            result = net.load_state_dict(sd, strict=False)
            report.append(f"{role}: {len(sd)} tensors loaded, {len(result.missing_keys)} new")
        self.init_report = report

    def _freeze(self, names) -> None:
        roots = {"G": self.models.G, "D": self.models.D}
        for name in names:
            role, _, sub = name.partition(".")
            root = roots.get(role)
            module = None
            if root is not None:
                try:
                    module = root.get_submodule(sub) if sub else root
                except AttributeError:
                    module = None
            if module is None:
                known = [f"{r}.{n}" for r, m in roots.items() for n, _ in m.named_children()]
                raise MemcoreError(f"train.freeze: no module '{name}' (top-level modules: "
                                   f"{', '.join(known)})")
            module.requires_grad_(False)
            module.memcore_frozen = True
        self.frozen = list(names)

    def _prepare(self) -> None:
        G, D = self.models.G, self.models.D
        params_G = [p for p in G.parameters() if p.requires_grad]
        params_D = [p for p in D.parameters() if p.requires_grad]
        if not params_D:
            raise MemcoreError("the discriminator has no trainable parameters")
        o = self.recipe.optim
        self.opt_G = _optimizer(o.G, params_G, self._lazy_interval("G")) if params_G else None
        self.opt_D = _optimizer(o.D, params_D, self._lazy_interval("D"))
        # DDP must see requires_grad on at prepare time, else on GPU it silently skips wrapping.
        to_prepare = [G, D, self.opt_D] + ([self.opt_G] if self.opt_G else [])
        prepared = self.accelerator.prepare(*to_prepare)
        self.G, self.D, self.opt_D = prepared[0], prepared[1], prepared[2]
        if self.opt_G:
            self.opt_G = prepared[3]
        self.models.G, self.models.D = self.accelerator.unwrap_model(self.G), \
            self.accelerator.unwrap_model(self.D)
        for extra in (self.models.G_ema, self.models.augment):
            if extra is not None:
                extra.to(self.device)
        for loss in self.models.losses:
            if isinstance(loss, nn.Module):
                loss.to(self.device)
        self._trainable = {"G": params_G, "D": params_D}
        self._owners = module_owners(self.models.G, self.models.D)  # for memcore.add_loss
        G.requires_grad_(False)
        D.requires_grad_(False)

    # -- phases -------------------------------------------------------------------------------
    def _lazy_interval(self, phase: str) -> int:
        """The interval of the phase's lazy terms (the largest, if several)."""
        return max((l.every for l in self.models.losses if phase in l.phases and l.every > 1),
                   default=0)

    def _set_trainable(self, phase: str) -> None:
        for p in self._trainable["D"]:
            p.requires_grad_(phase == "D")
        for p in self._trainable["G"]:
            p.requires_grad_(phase == "G")

    def _terms(self, phase: str, lazy: bool):
        return [l for l in self.models.losses if phase in l.phases and ((l.every > 1) == lazy)
                and (not lazy or self.step % l.every == 0)]

    def _run_pass(self, phase: str, pass_name: str, terms, real, labels, logs) -> None:
        opt = self.opt_D if phase == "D" else self.opt_G
        if not terms or opt is None:
            return
        trained, other = (self.D, self.G) if phase == "D" else (self.G, self.D)
        self._set_trainable(phase)
        for m in self.models.modules_with("before_phase"):
            m.before_phase(self._ctx_info(phase, pass_name))
        n_micro = self.recipe.train.micro_batches
        total = None
        for i, (real_i, labels_i) in enumerate(zip(real.chunk(n_micro), _chunk(labels, n_micro))):
            sync = i == n_micro - 1
            ctx = StepContext(phase=phase, pass_name=pass_name, step=self.step,
                              nets={"G": self.G, "D": self.D}, models=self.models, real=real_i,
                              labels=labels_i, latent_generator=self.latent_generator,
                              device=self.device, memories=self.memories, recipe=self.recipe)
            sync_ctx = contextlib.nullcontext() if sync else self.accelerator.no_sync(trained)
            with sync_ctx, self.accelerator.no_sync(other), self.accelerator.autocast(), \
                    recording_block_losses(self._owners, phase) as recorded:
                loss = 0.0
                for term in terms:
                    value = term(ctx)
                    if value is None:
                        continue
                    scale = term.weight * (term.every if term.every > 1 else 1)
                    loss = loss + value.float() * scale
                    ctx.log(f"loss/{pass_name}/{type(term).__name__}", value)
                if pass_name == phase:  # blocks' terms join the main pass, never a lazy one
                    loss = self._add_block_losses(loss, recorded.terms(), ctx)
                if not isinstance(loss, torch.Tensor):
                    continue
                self._check_finite(loss, pass_name)
                self.accelerator.backward(loss / n_micro)
            total = loss.detach() if total is None else total + loss.detach()
            for k, v in ctx.logs.items():
                logs[k].append(v.float().mean())
        if total is not None:
            logs[f"loss/{pass_name}"].append(total / n_micro)
            self._step_optimizer(opt, phase)
        self._set_trainable("none")
        for m in self.models.modules_with("after_phase"):
            m.after_phase(self._ctx_info(phase, pass_name))

    def _add_block_losses(self, loss, terms: dict, ctx):
        """The terms the trained network's modules recorded with memcore.add_loss, each scaled
        by its train.block_loss_weights entry (default 1) and logged by name."""
        weights = self.recipe.train.block_loss_weights
        for name, value in terms.items():
            loss = loss + value * weights.get(name, 1.0)
            ctx.log(f"loss/{ctx.pass_name}/{name}", value)
        return loss

    def _ctx_info(self, phase, pass_name):
        return StepContext(phase=phase, pass_name=pass_name, step=self.step,
                           nets={"G": self.G, "D": self.D}, models=self.models,
                           real=torch.empty(0), labels=None, latent_generator=self.latent_generator,
                           device=self.device, memories=self.memories, recipe=self.recipe)

    def _check_finite(self, loss, pass_name) -> None:
        bad = not bool(torch.isfinite(loss).item())
        if dist.any_rank(bad, device=self.device):
            raise TrainingStopped(
                f"non-finite {pass_name} loss at step {self.step}"
                f"{' on rank ' + str(self.rank) if bad and self.world > 1 else ''}; stopped on every "
                f"process. Last good checkpoint: {checkpoint.latest(self.run_dir) or 'none yet'}. "
                "Lower the learning rate, try train.precision = \"no\", or check the loss terms.")

    def _step_optimizer(self, opt, phase) -> None:
        params = self._trainable[phase]
        for p in params:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        if self.recipe.train.max_grad_norm:
            self.accelerator.clip_grad_norm_(params, self.recipe.train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        spec = getattr(self.recipe.optim, phase)
        if spec.schedule == "linear":
            remaining = max(0.0, 1.0 - (self.step + 1) / self._decay_horizon(spec))
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * remaining

    def _decay_horizon(self, spec) -> int:
        """Steps after which a linear schedule is at 0: train.steps, or decay_epochs passes."""
        if spec.decay_epochs is None:
            return self.recipe.train.steps
        return spec.decay_epochs * self.stream.batches_per_epoch

    def train_step(self, logs) -> None:
        t = self.recipe.train
        for _ in range(t.d_steps):
            real, labels = self._next_batch()
            self._run_pass("D", "D", self._terms("D", lazy=False), real, labels, logs)
        self._run_pass("D", "Dreg", self._terms("D", lazy=True), real, labels, logs)
        commit_all(self.memories.values(), "after_D")
        self._run_pass("G", "G", self._terms("G", lazy=False), real, labels, logs)
        self._run_pass("G", "Greg", self._terms("G", lazy=True), real, labels, logs)
        commit_all(self.memories.values(), "after_G")
        commit_all(self.memories.values(), "after_step")
        for memory in self.memories.values():
            memory.discard_staged()  # staged after its write point: never carried across steps
        average_buffers(self.models.G)
        average_buffers(self.models.D)
        self.step += 1
        e = self.recipe.ema
        if self.models.G_ema is not None and self.step % e.every == 0:
            update_ema(self.models.G_ema, self.models.G, self.ema_decay(), e.buffers)

    def ema_decay(self, step: int | None = None) -> float:
        """The decay of the update at ``step`` (default: now): ``decay``, or that of a half-life
        of ``half_life_kimg`` thousand images; with ``rampup`` the half-life is at most rampup x
        the images seen so far (stylegan2-ada's ramp-up: early on the EMA follows G closely)."""
        e, batch = self.recipe.ema, self.recipe.train.batch_size
        step = self.step if step is None else step
        if step <= e.start:
            return 0.0
        if e.half_life_kimg is None and e.rampup is None:
            return e.decay
        images = batch * e.every  # per update
        half_life = e.half_life_kimg * 1000 if e.half_life_kimg is not None \
            else images * math.log(0.5) / math.log(e.decay) if e.decay else 0.0
        if e.rampup is not None:
            half_life = min(half_life, step * batch * e.rampup)
        return 0.5 ** (images / max(half_life, 1e-8))

    def ema_initial_share(self) -> float:
        """How much of the EMA generator is still G as it was at ``ema.start`` (the product of the
        decays since), exact while at least one half; a smaller share is returned as found when
        the product fell below one half."""
        e, share = self.recipe.ema, 1.0
        for step in range(e.start + e.every - e.start % e.every, self.step + 1, e.every):
            share *= self.ema_decay(step)
            if share < 0.5:
                break
        return share

    def _next_batch(self):
        images, labels = self.stream.next()
        images = images.to(self.device, non_blocking=True)
        if self.models.augment is not None and applies_to(self.models.augment) == "real":
            with torch.no_grad():  # once per drawn batch; StepContext.augment skips it after
                images = self.models.augment(images)
        labels = labels.to(self.device) if self.dataset.num_classes else None
        return images, labels

    # -- the loop -----------------------------------------------------------------------------
    def train(self) -> dict:
        t = self.recipe.train
        main = self.accelerator.is_main_process
        self._truncate_logs()
        self.log = RunLog(self.run_dir, t.steps, self.step, t.progress, main)
        if main and getattr(self, "init_report", None):
            self.log.message("init_from: " + "; ".join(self.init_report))
        logs = defaultdict(list)
        # On the first log line of a fresh run (a resumed run's log already holds it).
        self._start_values = self._start_record() if main and self.step == 0 else {}
        t_last, step_last = time.perf_counter(), self.step
        stop = False
        with _Interrupt() as interrupt:
            try:
                while self.step < t.steps:
                    self.train_step(logs)
                    if self.step % t.log_every == 0 or self.step == t.steps:
                        now = time.perf_counter()
                        rate = (self.step - step_last) * t.batch_size / max(now - t_last, 1e-9)
                        self._write_log(logs, rate)
                        t_last, step_last, logs = now, self.step, defaultdict(list)
                    if self.step % t.sample_every == 0 or self.step == t.steps:
                        self.save_samples()
                    due_metrics = [m for m in self.metrics if m.options.every
                                   and self.step % m.options.every == 0 and self.step != t.steps]
                    if due_metrics:
                        self.evaluate(due_metrics)
                    if self.step % t.checkpoint_every == 0 or self.step == t.steps:
                        self.save_checkpoint()
                    stop = dist.any_rank(interrupt.signum is not None, device=self.device)
                    if stop:
                        break
                if stop:  # at a step boundary: the checkpoint is what an uninterrupted run holds
                    self.save_samples()
                    path = self.save_checkpoint()
                    self.log.message(f"interrupted: saved {path}; continue with "
                                     f"`memcore run --resume {self.run_dir}`")
                elif self.metrics:
                    self.evaluate(self.metrics)
                    self.save_checkpoint()
            except Interrupted as exc:
                raise Interrupted(exc.signum, f"{exc} at step {self.step}; "
                                  f"{self._last_good()}") from None
            except OSError as exc:  # a full disk, a read-only or vanished folder
                raise MemcoreError(f"file system error at step {self.step} on "
                                   f"{exc.filename or 'a run file'}: {exc.strerror or exc}; "
                                   f"{self._last_good()}") from None
            finally:
                self.log.close()
                if main:
                    with contextlib.suppress(OSError):  # the report is a convenience
                        get_registry().pm.hook.memcore_run_finished(run_dir=self.run_dir,
                                                                    notes=self._report_notes())
        if stop:
            raise Interrupted(interrupt.signum or signal.SIGINT,
                              f"stopped at step {self.step}; checkpoint saved in "
                              f"{self.run_dir / 'checkpoints'}")
        return {"step": self.step, "run_dir": str(self.run_dir)}

    def _start_record(self) -> dict:
        """Network sizes, and fingerprints of the first real batch and of the latent stream, for
        `memcore compare`: variants of one seed must have seen the same data and latents. The
        batch is drawn from a copy, so the training streams are untouched (and the global
        generator, which a data loader draws its seed from); the latent stream is fingerprinted by
        its generator's state, since some generators cannot sample before their first step (an
        exemplar bank filled by training)."""
        t = self.recipe.train
        with torch.random.fork_rng(devices=[]):
            images, labels = BatchStream(self.dataset, t.batch_size, t.seed, self.rank,
                                         self.world).next()
        return {"params/G": sum(p.numel() for p in self.models.G.parameters()),
                "params/D": sum(p.numel() for p in self.models.D.parameters()),
                "data_hash": _fingerprint([images, labels]),
                "latent_hash": _fingerprint([self.latent_generator.get_state()])}

    def _last_good(self) -> str:
        last = checkpoint.latest(self.run_dir)
        return (f"the last good checkpoint is {last}; continue with `memcore run --resume "
                f"{self.run_dir}`" if last else "no checkpoint was written yet")

    def close(self) -> None:
        """Leave the process group cleanly (an abrupt exit aborts gloo's threads)."""
        if dist.is_distributed():
            import torch.distributed as tdist
            tdist.barrier()  # no rank leaves while another still talks to it
            tdist.destroy_process_group()

    def _truncate_logs(self) -> None:
        """On resume, drop the lines the interrupted run wrote after its checkpoint (and a line a
        kill tore), so the logs read as those of an uninterrupted run."""
        if not self.accelerator.is_main_process:
            return
        import json
        for name in ("log.jsonl", "metrics.jsonl"):
            path = self.run_dir / name
            if path.exists():
                if torn_last_line(self.run_dir, name):
                    print(f"{path}: dropped a torn last line (a kill during a write)", flush=True)
                keep = [r for r in read_log(self.run_dir, name) if r["step"] <= self.step]
                safewrite.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

    def _write_log(self, logs, rate) -> None:
        values = {k: float(torch.stack(v).mean()) for k, v in logs.items() if v}
        values = {k: float(dist.all_reduce_mean(torch.tensor(v)).item()) for k, v in values.items()} \
            if self.world > 1 else values
        values["img_per_s"] = rate
        values["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
        if self.device.type == "cuda":
            values["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        values.update(self._start_values)
        self._start_values = {}
        for name, mem in self.memories.items():
            for k, v in mem.stats().items():
                values[f"memory/{name}/{k}"] = float(v)
        self.log.write(self.step, values)
        short = " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in values.items()
                         if k in ("loss/D", "loss/G"))
        mem = " ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in values.items()
                       if k.startswith("memory/") and k.endswith(("used", "entropy")))
        self.log.progress(self.step - (self.log.bar.n if self.log.bar else self.step),
                          f"{short} | {rate:.0f} img/s" + (f" | {mem}" if mem else ""))

    # -- outputs ------------------------------------------------------------------------------
    def sampling_generator(self) -> nn.Module:
        return self.models.G_ema if self.models.G_ema is not None else self.models.G

    @torch.no_grad()
    def save_samples(self) -> None:
        if not self.accelerator.is_main_process:
            return
        images = sample_images(self.sampling_generator(), self.recipe.train.grid_size,
                               self.recipe.train.seed, self.device)
        folder = self.run_dir / "samples"
        save_grid(images, folder / f"step-{self.step:07d}.png", inside=self.run_dir)
        save_grid(images, folder / "latest.png", inside=self.run_dir)
        if self.models.G_ema is not None and not self._told_ema:
            share = self.ema_initial_share()
            if share >= 0.5:  # once: a short run's grids (and metrics) show an untrained G
                self._told_ema = True
                self.log.message(f"step {self.step}: the EMA generator (samples, metrics) is "
                                 f"still {share:.0%} the G of step {self.recipe.ema.start}; "
                                 "for a short run set ema.rampup = 0.05 (stylegan2-ada's ramp-up) "
                                 "or a lower ema.decay")

    def evaluate(self, metrics) -> dict:
        import json
        from .evaluation import MetricSession
        session = MetricSession(self.sampling_generator(), self.dataset, self.device,
                                self.run_dir, self.step, self.recipe)
        results = []
        specs = {id(m): spec for spec, m in zip(self.recipe.metrics, self.metrics)}
        for m in metrics:
            spec = specs[id(m)]
            out = m.compute(session)
            values = {k: v for k, v in out.items() if isinstance(v, (int, float))}
            protocol = {k: v for k, v in out.items() if not isinstance(v, (int, float))}
            results.append((values, protocol, m))
            if self.accelerator.is_main_process:
                with safewrite.open_append(self.run_dir / "metrics.jsonl") as fh:
                    fh.write(json.dumps({"step": self.step, "metric": spec.kind, "values": values,
                                         "protocol": protocol}) + "\n")
                # The extractor is part of the name: numbers from different ones never mix.
                suffix = f"@{protocol['extractor']}" if protocol.get("extractor") else ""
                self.log.write(self.step, {f"metric/{k}{suffix}": v for k, v in values.items()})
                shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
                self.log.message(f"step {self.step}: {shown} ({protocol.get('extractor', spec.kind)})")
        self._track_best(results)
        return results

    def _track_best(self, results) -> None:
        """``train.best_metric`` is a value name (``fid``: the first metric giving one) or a
        value of one extractor (``fid@fashion-classifier``); default: the first metric's key."""
        if not results:
            return
        key = self.recipe.train.best_metric or results[0][2].key
        for values, protocol, m in results:
            named = {**values, **{f"{k}@{protocol['extractor']}": v for k, v in values.items()
                                  if protocol.get("extractor")}}
            if key not in named:
                continue
            value, old = named[key], self.best.get("value")
            if old is None or (value > old if m.higher_is_better else value < old):
                self.best = {"key": key, "value": float(value), "step": self.step}
                self._best_pending = True
            return

    def state_dict(self) -> dict:
        models = {"G": self.models.G.state_dict(), "D": self.models.D.state_dict()}
        if self.models.G_ema is not None:
            models["G_ema"] = self.models.G_ema.state_dict()
        if self.models.augment is not None:
            models["augment"] = self.models.augment.state_dict()
        rng = dist.gather_object({"torch": torch.get_rng_state(),
                                  "latent": self.latent_generator.get_state(),
                                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []})
        scaler = self.accelerator.scaler
        return {
            "format": checkpoint.FORMAT, "memcore": __version__, "step": self.step,
            "models": models,
            "losses": [l.state_dict() if isinstance(l, nn.Module) else None for l in self.models.losses],
            "optim": {"G": self.opt_G.state_dict() if self.opt_G else None, "D": self.opt_D.state_dict()},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "data": self.stream.state_dict(), "rng": rng, "best": dict(self.best),
            "recipe": dumps(self.resolved), "plugins": plugin_versions(), "world_size": self.world,
            "dataset": {"resolution": self.dataset.resolution, "channels": self.dataset.channels,
                        "num_classes": self.dataset.num_classes},
        }

    def save_checkpoint(self) -> Path | None:
        if self.world > 1 and self.recipe.train.check_consistency:
            check_consistency(self.models)
        state = self.state_dict()
        path = self.run_dir / "checkpoints" / f"step-{self.step:07d}.pt"
        if self.accelerator.is_main_process:
            checkpoint.save_atomic(state, path, inside=self.run_dir)
            if getattr(self, "_best_pending", False):
                checkpoint.mark_best(path)
                self._best_pending = False
            checkpoint.prune(self.run_dir, self.recipe.train.keep_last)
        self.accelerator.wait_for_everyone()
        return path

    def _resume(self, state: dict, source: str) -> None:
        """Continue from ``state``. Networks that do not fit are refused by name; anything else
        that cannot be applied means the checkpoint is damaged."""
        try:
            self._load(state, source)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            raise MemcoreError(f"{source}: cannot be continued from, it is damaged "
                               f"({type(exc).__name__}: {str(exc)[:200]})") from None

    def _load(self, state: dict, source: str) -> None:
        m = self.models
        checkpoint.restore_models(m, state, source, self.resolved)
        for loss, sd in zip(m.losses, state.get("losses", [])):
            if sd is not None and isinstance(loss, nn.Module):
                loss.load_state_dict(sd)
        for role, opt in (("G", self.opt_G), ("D", self.opt_D)):
            saved = state["optim"].get(role)
            if opt is None or saved is None:
                continue
            try:
                opt.load_state_dict(saved)
            except ValueError as exc:  # other parameter groups: train.freeze changed
                raise MemcoreError(f"{source}: the {role} optimizer state does not fit ({exc}); "
                                   "train.freeze or the trainable parameters changed since the "
                                   "checkpoint was written") from None
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.stream.load_state_dict(state["data"])
        rng = state["rng"][self.rank] if self.rank < len(state["rng"]) else state["rng"][0]
        torch.set_rng_state(rng["torch"])
        self.latent_generator.set_state(rng["latent"])
        if torch.cuda.is_available() and rng.get("cuda"):
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(state["step"])
        self.best = dict(state.get("best", {}))

    def _report_notes(self) -> list[str]:
        notes = [f"memcore {__version__}; {self.world} process(es) on {self.device}; "
                 f"dataset: {getattr(self.dataset, 'description', '')} ({len(self.dataset)} images)"]
        if self.best:
            notes.append(f"Best {self.best['key']}: {self.best['value']:.4g} at step {self.best['step']}")
        return notes


def _fingerprint(tensors) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _chunk(labels, n):
    return labels.chunk(n) if labels is not None else [None] * n


@torch.no_grad()
def sample_images(G: nn.Module, n: int, seed: int, device, batch: int = 64,
                  condition: dict | None = None) -> torch.Tensor:
    """``n`` images from fixed latents drawn from ``seed`` (the same for every call).

    ``condition`` (e.g. ``{"exemplar": images}``) is passed to ``G.sample_latent``.
    """
    was_training = G.training
    G.eval()
    gen = torch.Generator().manual_seed(seed + 12345)
    out = []
    for start in range(0, n, batch):
        latents = G.sample_latent(min(batch, n - start), gen, device, **(condition or {}))
        out.append(G(**latents).float().cpu())
    G.train(was_training)
    return torch.cat(out)


def check_consistency(models) -> None:
    """Compare every parameter and buffer across ranks; name those that differ and the likely
    cause. Raised on every rank with the same message (printed once, by rank 0)."""
    drift = []
    for role, net in (("G", models.G), ("D", models.D), ("G_ema", models.G_ema)):
        if net is None:
            continue
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            ref = dist.broadcast_rows(t.detach().clone().reshape(-1) if t.dim() else t.detach().reshape(1))
            if not torch.equal(ref, t.detach().reshape(-1) if t.dim() else t.detach().reshape(1)):
                drift.append(f"{role}.{name}")
    drift = sorted(set().union(*map(set, dist.gather_object(drift))))  # rank 0 sees its own none
    if drift:
        memory_buffers = {f"{prefix}.{name}" for prefix, m in memories_in(models.G, models.D).items()
                          for name, _ in m.named_buffers()}
        error = MemcoreError(_drift_message(drift, memory_buffers, models))
        error.every_rank = True
        raise error


def _drift_message(drift: list[str], memory_buffers: set[str], models) -> str:
    """What differs between ranks, grouped by kind of state, each with its likely cause."""
    memory_buffers |= {"G_ema" + n[1:] for n in memory_buffers if n.startswith("G.")}
    params = {f"{role}.{n}" for role, net in (("G", models.G), ("D", models.D),
                                              ("G_ema", models.G_ema)) if net is not None
              for n, _ in net.named_parameters()}
    groups = {"memory buffers": [n for n in drift if n in memory_buffers],
              "parameters": [n for n in drift if n in params],
              "other buffers": [n for n in drift if n not in memory_buffers and n not in params]}
    causes = {
        "memory buffers": "every rank writes the same gathered rows, so the likely cause is "
                          "randomness in write() not drawn from its generator argument (torch's "
                          "global RNG is seeded per rank), a generator or Python attribute of the "
                          "memory's own, or rows written without stage(); `memcore check` with "
                          "--nproc 2 runs the memory's contracts",
        "parameters": "DDP keeps them identical, so something changes weights outside the "
                      "optimizer step, differently per rank",
        "other buffers": "floating buffers are averaged across ranks every step; these are "
                         "changed per rank outside the memory protocol (keep such state in a "
                         "memcore.Memory, or make it floating-point)",
    }
    lines = [f"{kind} {', '.join(names[:8])}{' ...' if len(names) > 8 else ''} differ between "
             f"ranks: {causes[kind]}" for kind, names in groups.items() if names]
    return "ranks disagree (train.check_consistency):\n  " + "\n  ".join(lines)
