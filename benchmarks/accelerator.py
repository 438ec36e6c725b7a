"""One prepared accelerator benchmark: every first-party plugin's main recipe at the paper's network
widths in fp32 and bf16, the attention / memory / painting options against their baselines, metric
feature extraction and two-GPU training, in one command sized for a short GPU lease.

    python benchmarks/accelerator.py OUT_DIR            # on a CUDA machine: under 8 minutes
    python benchmarks/accelerator.py OUT_DIR --smoke    # the same code paths on CPU, tiny sizes
    python benchmarks/accelerator.py OUT_DIR --only recipe/sagan,attention   # rerun some sections

Writes ``OUT_DIR/results.json`` and ``OUT_DIR/results.md`` (two files, rewritten after every
section) and prints a progress line with the elapsed time for every section and run.

Plan on one H200 (budgets are upper bounds in seconds; no section starts with less than its
budget left of the 450 s the whole run may take, and a section skipped for that says so):

  environment (10)   device, torch / CUDA / cuDNN / driver versions, git commit, TF32 settings.
  recipe/NAME (30 each, 8 recipes: quickstart, fastgan, stylegan2, sagan, moca, memorygan, mfh,
                     fpainter)  the main recipe's own networks, fp32 then bf16
                     (``train.precision``), each at most 300 steps or 10 s of timed steps, the
                     first 10 untimed: img/s, ms/step, peak torch.cuda.max_memory_allocated,
                     losses finite, not diverging.
  attention (20)     SAGAN ``self-attention`` block, ``fused = true`` (SDPA) vs ``false``
                     (bmm + softmax), forward + backward at 64x64 and 128x128 maps, fp32 and
                     bf16 autocast; batch 8, 64 channels, median of 5.
  moca (40)          the MoCA block vs its SA-only path (``paths = "sa"``) at 32 x 256
                     prototypes (batch 8, 256 channels, 64x64, d 128, best of 10); the training
                     step of moca-fastgan-256 vs sa-fastgan-256 (at most 150 steps or 8 s each).
  memorygan (30)     the training step of cifar10-memorygan vs cifar10-no-memory (same
                     networks) and the memory write: N 16,384, key 512, k 256, batch 64,
                     5 + at most 40 alternating steps.
  fpainter (15)      the painting op, fast (triangular solve) vs loop, 64x64, T 64, batch 20,
                     scalar and vector learning rates, best of 10; the CelebA generator with
                     ``painting = "fast"`` vs ``"loop"``.
  fidelity (40)      feature extraction, memcore-fidelity's defaults vs torch-fidelity's, on the
                     GPU, 2,000 images, 3 alternating rounds, for every extractor whose weights
                     are present (never downloads; a missing one is recorded as skipped).
  distributed (80)   torchrun on 2 GPUs: img/s of cifar10-memorygan and moca-fastgan-256 (100
                     steps each) and memcore.trainer.check_consistency (every parameter and
                     buffer, memories included, equal across ranks); skipped with fewer than 2.

One GPU: 395 s of budgets plus start-up. ``--smoke`` runs every section on CPU at tiny widths,
resolutions and step counts (the distributed one is skipped there: fewer than 2 GPUs).

Data: every run trains on synthetic images (smooth random blobs, uint8, the recipe's resolution,
channels and class count), since a lent machine has no datasets; throughput does not depend on the
pixels. MoCA's warm-up is shortened to 5 steps so that the timed steps read the memory.

Loss rule: a run's losses are *finite* if no loss was non-finite (the trainer stops on one), and
*diverging* if the mean of the last W logged D or G losses exceeds 10 × max(|mean of the first
W|, 1), W = min(50, steps // 4): a loss whose magnitude grew tenfold is blowing up; a falling D
loss is not divergence.

Robustness: this process (the supervisor) runs the sections in one worker process and watches it.
A section that raises records its error and the worker goes on (a failing part, e.g. bf16, records
its own error and leaves the rest of its section); a section that kills the worker (a CUDA fault)
or runs past 1.5 × its budget + 30 s is recorded as such, and a fresh worker continues with the
next section. The results files are rewritten as each section ends, so a lost lease loses only
the section in flight.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
TOTAL_S = {False: 450, True: 400}           # the whole run's deadline (GPU, --smoke: a guard)
GRACE_S = 15                                # past the deadline, the worker is stopped
DIVERGENCE_FACTOR = 10.0
RULE = ("finite: no non-finite loss; diverging: mean of the last W D or G losses > "
        f"{DIVERGENCE_FACTOR:g} x max(|mean of the first W|, 1), W = min(50, steps // 4)")


# -- the recipes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipeSpec:
    name: str
    path: str
    data: tuple[int, int, int]            # synthetic data: resolution, channels, classes
    smoke_data: tuple[int, int, int]
    overrides: tuple[str, ...] = ()
    smoke: tuple[str, ...] = ()           # tiny widths for --smoke


# --smoke: 32 px FastGAN as in plugins/fastgan/recipes/fastgan.toml, the block at 16 px.
FASTGAN_SMOKE = ("generator.width=4", "discriminator.width=4", "generator.sle_span=4",
                 "discriminator.sle_span=4", "discriminator.decoder_width=8")
MOCA_SMOKE = (*FASTGAN_SMOKE, "generator.blocks[0].at=16", "generator.blocks[0].dim=8",
              "generator.blocks[0].cells=4", "generator.blocks[0].prototypes=8",
              "generator.blocks[0].warmup=1")  # the memory is read from the second step
RECIPES = [
    RecipeSpec("quickstart", "recipes/quickstart.toml", (28, 1, 10), (28, 1, 10),
               smoke=("generator.width=8", "discriminator.width=8", "generator.z_dim=16")),
    RecipeSpec("fastgan", "plugins/fastgan/recipes/fastgan-folder.toml", (256, 3, 0), (32, 3, 0),
               smoke=FASTGAN_SMOKE),
    RecipeSpec("stylegan2", "plugins/stylegan2/recipes/stylegan2-cifar10.toml", (32, 3, 10),
               (16, 3, 10),
               smoke=("generator.channel_base=256", "generator.channel_max=16",
                      "generator.z_dim=16", "generator.w_dim=16", "discriminator.channel_base=256",
                      "discriminator.channel_max=16", "discriminator.mbstd_group=4")),
    RecipeSpec("sagan", "plugins/sagan/recipes/sagan-dogs64.toml", (64, 3, 0), (32, 3, 0),
               smoke=("generator.width=8", "discriminator.width=8", "generator.z_dim=16",
                      "generator.blocks[1].at=8")),  # 32 px G has no 32 px hidden stage
    RecipeSpec("moca", "plugins/moca/recipes/paper/moca-fastgan-256.toml", (256, 3, 0), (32, 3, 0),
               overrides=("generator.blocks[0].warmup=5",), smoke=MOCA_SMOKE),
    RecipeSpec("memorygan", "plugins/memorygan/recipes/cifar10-memorygan.toml", (32, 3, 10),
               (32, 3, 10),
               smoke=("generator.inner.width=8", "discriminator.width=8", "generator.key_dim=16",
                      "discriminator.key_dim=16", "discriminator.slots=64",
                      "discriminator.top_k=8")),
    RecipeSpec("mfh", "plugins/mfh/recipes/mfh-animal-faces.toml", (128, 3, 119), (32, 3, 4),
               smoke=("generator.width=8", "generator.max_width=16", "generator.encoder_width=8",
                      "generator.ci_dim=16", "generator.cr_dim=16", "generator.memory_slots=8",
                      "generator.switch_at=16", "discriminator.width=8",
                      "discriminator.max_width=16")),
    RecipeSpec("fpainter", "plugins/fpainter/recipes/paper/celeba.toml", (64, 3, 0), (16, 3, 0),
               smoke=("generator.steps=8", "generator.hidden=32", "generator.layers=1",
                      "generator.z_dim=16", "generator.input_dim=16", "discriminator.width=8",
                      "discriminator.max_width=16", "discriminator.last_side=4",
                      "discriminator.attention_at=[8]")),
]
SPECS = {spec.name: spec for spec in RECIPES}
# MoCA's SA baseline: the same networks and block convs without the memory (the pair of Table 3).
SA_FASTGAN = RecipeSpec("sa-fastgan", "plugins/moca/recipes/paper/sa-fastgan-256.toml",
                        (256, 3, 0), (32, 3, 0),
                        smoke=(*FASTGAN_SMOKE, "generator.blocks[0].at=16",
                               "generator.blocks[0].dim=8"))
DIST_RECIPES = ("memorygan", "moca")    # recipes with a memory whose state must agree across ranks


# -- context, timing, small helpers -----------------------------------------------------------
class Skip(Exception):
    """A section or part that cannot run here; the message is the recorded reason."""


@dataclass
class Context:
    work: Path                             # the run's work folder (not OUT)
    smoke: bool
    t0: float                              # the supervisor's start (time.time())
    deadline: float
    device: torch.device = field(default_factory=lambda: torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"))
    force_dist: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def pick(self, full, smoke):
        """The full-size value, or the tiny one under --smoke."""
        return smoke if self.smoke else full

    @property
    def tmp(self) -> Path:
        path = self.work / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path


def log(ctx_or_t0, message: str) -> None:
    t0 = ctx_or_t0.t0 if isinstance(ctx_or_t0, Context) else ctx_or_t0
    print(f"[{time.time() - t0:6.1f} s] {message}", flush=True)


def attempt(fn, *args, **kwargs) -> dict:
    """Run one section or part; its error or skip reason becomes its result instead of ending
    the run."""
    try:
        return {"status": "ok", **fn(*args, **kwargs)}
    except Skip as exc:
        return {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the run goes on
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000],
                "traceback": traceback.format_exc()[-3000:]}
    finally:
        free_memory()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device) -> float | None:
    """Peak GPU memory allocated since the last reset_peak; None off CUDA (a CPU process's
    resident set says nothing about one part of a long-lived process)."""
    if torch.device(device).type != "cuda":
        return None
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def measure_peak(fn, device) -> float | None:
    reset_peak(device)
    fn()
    return peak_mib(device)


def plugin_helper(relative: str):
    """A plugin's benchmark script as a module (they are scripts, not packages)."""
    name = "accelerator_" + Path(relative).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def synthetic_images(resolution: int, channels: int, classes: int, n: int, seed: int = 0):
    """A labelled (classes > 0) or unlabelled in-memory dataset of smooth random uint8 images."""
    from memcore_datasets.images import TensorImageDataset
    g = torch.Generator().manual_seed(seed)
    blobs = F.interpolate(torch.rand(n, channels, 4, 4, generator=g), size=(resolution,) * 2,
                          mode="bilinear", align_corners=False)
    pixels = 0.8 * blobs + 0.2 * torch.rand(n, channels, resolution, resolution, generator=g)
    images = pixels.mul(255).round().clamp(0, 255).to(torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g) if classes else None
    return TensorImageDataset(images, labels, [f"class-{i}" for i in range(classes)],
                              description="synthetic")


# -- training a recipe ------------------------------------------------------------------------
def loss_summary(values: list[float]) -> dict:
    w = min(50, max(1, len(values) // 4))
    first, last = statistics.fmean(values[:w]), statistics.fmean(values[-w:])
    return {"first": first, "last": last, "window": w,
            "diverging": abs(last) > DIVERGENCE_FACTOR * max(abs(first), 1.0)}


def train_run(ctx: Context, spec: RecipeSpec, precision: str, steps: int,
              seconds: float | None, after=None) -> dict:
    """Train ``spec`` for ``steps`` steps, or until ``seconds`` of timed steps have passed (None:
    exactly ``steps``, as several ranks must), on synthetic data; ``after(trainer)`` adds fields
    before the trainer is dropped."""
    from memcore.errors import TrainingStopped
    from memcore.recipe import load_recipe
    from memcore.trainer import Trainer
    overrides = ["train.progress=false", "metrics=[]", f"train.steps={steps}",
                 f"train.precision={precision}", *spec.overrides]
    if ctx.smoke:
        overrides += ["train.batch_size=4", *spec.smoke]
    recipe, resolved = load_recipe(ROOT / spec.path, overrides)
    batch = recipe.train.batch_size
    dataset = synthetic_images(*ctx.pick(spec.data, spec.smoke_data), n=max(256, 4 * batch))
    reset_peak(ctx.device)
    # ~0 unless an earlier run left tensors behind; the peak below includes them
    held = torch.cuda.memory_allocated(ctx.device) / 2 ** 30 if ctx.cuda else None
    trainer = Trainer(recipe, resolved, ctx.tmp / f"run-{spec.name}", dataset=dataset)
    warm = min(ctx.pick(10, 1), steps - 1)
    logs, done, stopped, start = defaultdict(list), 0, None, None
    try:
        for step in range(steps):
            if step == warm:
                sync(ctx.device)
                start = time.perf_counter()
            elif start is not None and seconds is not None and \
                    time.perf_counter() - start > seconds:
                break
            trainer.train_step(logs)
            done += 1
    except TrainingStopped as exc:
        stopped = str(exc)
    sync(ctx.device)
    timed = done - warm if start is not None else 0
    elapsed = time.perf_counter() - start if start is not None else 0.0
    d_loss = torch.stack(logs["loss/D"]).float().cpu().tolist() if logs["loss/D"] else []
    g_loss = torch.stack(logs["loss/G"]).float().cpu().tolist() if logs["loss/G"] else []
    finite = stopped is None and all(map(_finite, d_loss + g_loss))
    d, g = (loss_summary(v) if v and finite else None for v in (d_loss, g_loss))
    result = {
        "steps": done, "timed_steps": timed, "batch": batch,
        "img_per_s": timed * batch / elapsed if timed else None,
        "ms_per_step": 1000 * elapsed / timed if timed else None,
        "peak_gib": (lambda p: p / 1024 if p is not None else None)(peak_mib(ctx.device)),
        "held_before_gib": held,
        "params_G_M": sum(p.numel() for p in trainer.models.G.parameters()) / 1e6,
        "params_D_M": sum(p.numel() for p in trainer.models.D.parameters()) / 1e6,
        "finite": finite,
        "diverging": None if d is None else bool(d["diverging"] or (g and g["diverging"])),
        "d_loss_first_last": None if d is None else f"{d['first']:.3f} -> {d['last']:.3f}",
        "g_loss_first_last": None if g is None else f"{g['first']:.3f} -> {g['last']:.3f}",
        "cut_by_time": done < steps and stopped is None,
    }
    if stopped:
        result["stopped"] = stopped[:500]
    if after is not None:
        result.update(after(trainer))
    return result


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def section_recipe(ctx: Context, spec: RecipeSpec) -> dict:
    rows = []
    for precision, label in (("no", "fp32"), ("bf16", "bf16")):
        row = {"precision": label, **attempt(train_run, ctx, spec, precision,
                                              ctx.pick(300, 2), ctx.pick(10.0, None))}
        rows.append(row)
        log(ctx, f"  {spec.name} {label}: {describe_run(row)}")
    note = f"`{spec.path}`, synthetic {ctx.pick(spec.data, spec.smoke_data)} (px, channels, " \
           f"classes); overrides: {', '.join(spec.overrides + ctx.pick((), spec.smoke)) or 'none'}"
    return {"recipe": spec.path, "note": note, "rows": rows}


def describe_run(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('error') or row.get('reason')}"[:300]
    rate = f"{row['img_per_s']:.1f} img/s" if row["img_per_s"] else "no timed steps"
    peak = f", peak {row['peak_gib']:.2f} GiB" if row["peak_gib"] is not None else ""
    return (f"{row['steps']} steps, {rate}{peak}, finite {row['finite']}, "
            f"diverging {row['diverging']}")


# -- the other sections -----------------------------------------------------------------------
def section_environment(ctx: Context) -> dict:
    import memcore
    from memcore.rundir import plugin_versions

    def run(*cmd):
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=20)
            return proc.stdout.strip() if proc.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            return None
    commit = run("git", "rev-parse", "HEAD")
    dirty = run("git", "status", "--porcelain", "--untracked-files=no")
    info = {
        "device": torch.cuda.get_device_name(0) if ctx.cuda else
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "gpus_visible": torch.cuda.device_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "driver": run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"),
        "python": platform.python_version(), "memcore": memcore.__version__,
        "plugins": plugin_versions(),
        # a copied working tree has no .git: the caller may pass the commit in MEMCORE_GIT_COMMIT
        "git_commit": (commit + (" (uncommitted changes)" if dirty else "")) if commit else
        os.environ.get("MEMCORE_GIT_COMMIT", "unknown (no git checkout here)"),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        info["gpu_memory_gib"] = props.total_memory / 2 ** 30
        info["multiprocessors"] = props.multi_processor_count
    return {"info": info}


def section_attention(ctx: Context) -> dict:
    bench = plugin_helper("plugins/sagan/benchmarks/attention_bench.py")
    args = SimpleNamespace(batch=ctx.pick(8, 2), channels=ctx.pick(64, 16),
                           warmup=ctx.pick(2, 1), repeats=ctx.pick(5, 1))

    def one(side, fused, precision):
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            ms, peak = bench.measure(side, fused, args, ctx.device)
        return {"ms": ms, "peak_mib": peak if ctx.cuda else None}
    rows = []
    for side in ctx.pick((64, 128), (8, 16)):
        for precision in ("fp32", "bf16"):
            pair = {}
            for fused in (False, True):
                pair[fused] = attempt(one, side, fused, precision)
                rows.append({"map": f"{side}x{side}", "precision": precision,
                             "path": "fused (SDPA)" if fused else "explicit", **pair[fused]})
            if all(p["status"] == "ok" for p in pair.values()):
                rows[-1]["speedup"] = pair[False]["ms"] / pair[True]["ms"]
            log(ctx, f"  attention {side}x{side} {precision}: " + ", ".join(
                f"{r['path']} {cell(r.get('ms', r['status']))} ms" for r in rows[-2:]))
    return {"note": f"SAGAN self-attention block, batch {args.batch}, {args.channels} channels, "
                    f"forward + backward, median of {args.repeats} after {args.warmup}",
            "rows": rows}


def section_moca(ctx: Context) -> dict:
    bench = plugin_helper("plugins/moca/benchmarks/bench_block.py")
    from fpainter_painting import timed
    b, c, res, cells, size = ctx.pick((8, 256, 64, 32, 256), (2, 16, 8, 32, 256))
    repeats = ctx.pick(10, 1)
    x = torch.randn(b, c, res, res, device=ctx.device, requires_grad=True)

    def block(paths):
        layer = bench.block(paths, c, res, cells, size, softmax="separate").to(ctx.device)
        step = lambda: layer(x).sum().backward()  # noqa: E731
        return {"ms": 1000 * timed(step, repeats, ctx.device),
                "peak_mib": measure_peak(step, ctx.device)}
    rows = [{"part": "block", "variant": "SA only (paths = sa)", **attempt(block, "sa")},
            {"part": "block", "variant": "MoCA (paths = both)", **attempt(block, "both")}]
    if all(r["status"] == "ok" for r in rows):
        rows[1]["ratio_vs_sa"] = rows[1]["ms"] / rows[0]["ms"]
    steps, seconds = ctx.pick(150, 2), ctx.pick(8.0, None)
    for spec, variant in ((SA_FASTGAN, "sa-fastgan-256"), (SPECS["moca"], "moca-fastgan-256")):
        rows.append({"part": "training step (fp32)", "variant": variant,
                     **attempt(train_run, ctx, spec, "no", steps, seconds)})
    if rows[2]["status"] == rows[3]["status"] == "ok" and rows[2]["ms_per_step"]:
        rows[3]["ratio_vs_sa"] = rows[3]["ms_per_step"] / rows[2]["ms_per_step"]
    log(ctx, "  moca: " + "; ".join(f"{r['variant']} {r['status']}" for r in rows))
    return {"note": f"block: batch {b}, {c} channels, {res}x{res}, {cells} x {size} prototypes, "
                    f"d {c // 2}, softmax separate, forward + backward, best of {repeats}; "
                    f"training: the paper recipes on synthetic data, memory warm-up "
                    f"{ctx.pick(5, 1)} step(s)",
            "rows": rows}


def section_memorygan(ctx: Context) -> dict:
    bench = plugin_helper("plugins/memorygan/scripts/bench_step.py")
    batch, slots, key, top_k = ctx.pick((64, 16384, 512, 256), (8, 64, 16, 8))
    warmup, steps, seconds = ctx.pick(5, 1), ctx.pick(40, 2), ctx.pick(15.0, 60.0)
    images = bench.random_images(ctx.tmp / "memorygan-images", max(ctx.pick(512, 16), batch))
    common = [f'data={{kind = "image-folder", path = "{images}", resolution = 32}}',
              f"train.batch_size={batch}", f"train.steps={warmup + steps}", "train.progress=false",
              f"discriminator.key_dim={key}", *ctx.pick([], ["discriminator.width=8"])]
    cases = [("memoryGAN", "cifar10-memorygan.toml",
              [f"discriminator.slots={slots}", f"discriminator.top_k={top_k}",
               f"generator.key_dim={key}", *ctx.pick([], ["generator.inner.width=8"])]),
             ("-Memory (same networks)", "cifar10-no-memory.toml",
              ctx.pick([], ["generator.width=8"]))]
    runs = {name: bench.Timed(bench.RECIPES / recipe, common + extra, ctx.tmp / "memorygan-run")
            for name, recipe, extra in cases}
    start = time.perf_counter()
    for i in range(warmup + steps):  # alternating, as the plugin's script does
        if i > warmup and time.perf_counter() - start > seconds:
            break
        for run in runs.values():
            run.step()
    rows = []
    for name, run in runs.items():
        r = run.result(warmup)
        rows.append({"recipe": name, "status": "ok", "timed_steps": len(run.steps) - warmup,
                     "ms_per_step": 1000 * r["median"], "min_ms": 1000 * r["min"],
                     "max_ms": 1000 * r["max"],
                     "write_ms": 1000 * r["write"] if r["write"] is not None else None,
                     "params_G_M": r["params"]["G"] / 1e6, "params_D_M": r["params"]["D"] / 1e6})
    rows[0]["ratio_vs_no_memory"] = rows[0]["ms_per_step"] / rows[1]["ms_per_step"]
    log(ctx, f"  memorygan: {rows[0]['ms_per_step']:.1f} vs {rows[1]['ms_per_step']:.1f} ms/step")
    return {"note": f"plugins/memorygan/scripts/bench_step.py's trainers: batch {batch}, "
                    f"N {slots}, key {key}, k {top_k}, random 32 px images, median after "
                    f"{warmup} steps",
            "rows": rows}


def section_fpainter(ctx: Context) -> dict:
    import attrs
    from fpainter_painting import generator_rates, painting_op
    from memcore.recipe import load_recipe
    batch, steps, side, channels = ctx.pick((20, 64, 64, 3), (2, 8, 8, 1))
    repeats = ctx.pick(10, 1)

    def op(lr_dim):
        rows, err = painting_op(batch, channels, steps, side, lr_dim, repeats, ctx.device)
        (lf, lb), (ff, fb) = rows["loop"], rows["fast"]
        return {"loop_fwd_ms": 1000 * lf, "fast_fwd_ms": 1000 * ff, "speedup_fwd": lf / ff,
                "loop_fwd_bwd_ms": 1000 * lb, "fast_fwd_bwd_ms": 1000 * fb,
                "speedup_fwd_bwd": lb / fb, "max_abs_diff": err}

    def generator():
        spec = SPECS["fpainter"]
        recipe, _ = load_recipe(ROOT / spec.path, ["metrics=[]", *ctx.pick((), spec.smoke)])
        res, ch, _ = ctx.pick(spec.data, spec.smoke_data)
        (lf, lb), (ff, fb) = [generator_rates(attrs.evolve(recipe.generator.options, painting=p),
                                              res, ch, batch, repeats, ctx.device)
                              for p in ("loop", "fast")]
        return {"loop_fwd_img_s": lf, "fast_fwd_img_s": ff, "loop_fwd_bwd_img_s": lb,
                "fast_fwd_bwd_img_s": fb}
    rows = [{"what": "painting op, scalar lr", **attempt(op, 1)},
            {"what": "painting op, vector lr", **attempt(op, side)},
            {"what": f"generator of {SPECS['fpainter'].path}", **attempt(generator)}]
    log(ctx, "  fpainter: " + "; ".join(f"{r['what']} {r['status']}" for r in rows))
    return {"note": f"delta rule, batch {batch}, {channels} channels, T {steps}, {side}x{side}; "
                    f"best of {repeats} after one warm-up (benchmarks/fpainter_painting.py)",
            "rows": rows}


def section_fidelity(ctx: Context) -> dict:
    import torch_fidelity
    from fidelity_extraction import Uint8Images
    from memcore_fidelity import torch_fidelity_adapter
    from memcore_fidelity.images import build_metric
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset
    n, rounds = ctx.pick(2000, 16), ctx.pick(3, 1)
    images = synthetic_images(32, 3, 0, n).images

    def compare(kind):
        plain = build_metric("fid", extractor={"kind": kind, "fold_batchnorm": False,
                                               "channels_last": False}).extractor
        ours = build_metric("fid", extractor=kind).extractor
        name = f"accelerator-{kind}"
        torch_fidelity.register_feature_extractor(name, torch_fidelity_adapter(plain))
        net = create_feature_extractor(name, ["features"], cuda=ctx.cuda, verbose=False)
        pipelines = {
            "torch-fidelity": lambda: get_featuresdict_from_dataset(
                Uint8Images(images), net, batch_size=64, cuda=ctx.cuda, save_cpu_ram=False,
                verbose=False)["features"],
            "memcore-fidelity": lambda: ours.extract(images, device=ctx.device)["features"]}
        times, features, peaks = defaultdict(list), {}, {}
        for label, fn in pipelines.items():  # warm-up: weights loaded, kernels chosen
            peaks[label] = measure_peak(fn, ctx.device)
        for _ in range(rounds):
            for label, fn in pipelines.items():
                sync(ctx.device)
                start = time.perf_counter()
                features[label] = fn()
                sync(ctx.device)
                times[label].append(time.perf_counter() - start)
        tf, us = (statistics.median(times[k]) for k in pipelines)
        return {"images": n, "torch_fidelity_s": tf, "memcore_fidelity_s": us,
                "torch_fidelity_img_s": n / tf, "memcore_fidelity_img_s": n / us,
                "speedup": tf / us,
                "max_abs_feature_diff": (features["memcore-fidelity"] -
                                         features["torch-fidelity"]).abs().max().item(),
                "torch_fidelity_peak_mib": peaks["torch-fidelity"],
                "memcore_fidelity_peak_mib": peaks["memcore-fidelity"]}

    def one(kind):
        extractor = build_metric("fid", extractor=kind).extractor
        path = extractor.weights_path()
        if path is None or not Path(path).is_file():  # offline: never download
            raise Skip(f"weights absent: {extractor.missing_weights_message()[:300]}")
        return compare(kind)
    rows = [{"extractor": kind, **attempt(one, kind)}
            for kind in ("inception-v3-compat", "efficientnet-lite0", "fashion-classifier")]
    log(ctx, "  fidelity: " + "; ".join(f"{r['extractor']} {r['status']}" for r in rows))
    return {"note": f"{n} synthetic 32 px RGB images; torch-fidelity {torch_fidelity.__version__} "
                    "defaults (get_featuresdict_from_dataset, batch 64, its DataLoader) against "
                    "Extractor.extract (BatchNorm folded, channels-last); median of "
                    f"{rounds} alternating rounds after a warm-up", "rows": rows}


def section_distributed(ctx: Context) -> dict:
    visible = torch.cuda.device_count()
    if visible < 2 and not ctx.force_dist:
        raise Skip(f"fewer than 2 GPUs ({visible} visible)")
    target = ctx.work / "distributed.json"
    target.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), str(ctx.work), "--dist-worker", str(ctx.work),
           *(["--smoke"] if ctx.smoke else [])]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    budget = SECTIONS_BY_NAME["distributed"].budget[ctx.smoke]
    # its own process group (not session: a lease still ends it), so that a hung rank goes with
    # torchrun when time is up
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, **group)
    try:
        output, _ = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this section started, by its id
        output, _ = proc.communicate()
        raise RuntimeError(f"torchrun did not finish in {budget} s: {output[-1500:]}") from None
    if proc.returncode != 0 or not target.exists():
        raise RuntimeError(f"torchrun exited {proc.returncode}: {output[-1500:]}")
    rows = json.loads(target.read_text())
    for row in rows:  # against the one-GPU fp32 numbers of the same recipe, when measured
        single = section_file(ctx.work, f"recipe/{row['recipe']}")
        if row["status"] == "ok" and single.exists():
            fp32 = json.loads(single.read_text()).get("rows", [{}])[0]
            if fp32.get("img_per_s") and row.get("img_per_s"):
                row["one_gpu_img_per_s"] = fp32["img_per_s"]
                row["scaling"] = row["img_per_s"] / fp32["img_per_s"]
    return {"note": "torchrun --nproc_per_node 2; global batch as the recipe; identical = "
                    "memcore.trainer.check_consistency (every parameter and buffer, memories "
                    "included) found no difference", "rows": rows}


def dist_worker(ctx: Context) -> None:
    """One rank of the distributed section (started by torchrun)."""
    import torch.distributed as tdist
    from memcore.errors import MemcoreError
    from memcore.memory import memories_in
    from memcore.trainer import check_consistency
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        ctx.device = torch.device("cuda", local)

    def consistency(trainer):
        memories = sorted(memories_in(trainer.models.G, trainer.models.D))
        try:
            check_consistency(trainer.models)
            drift = None
        except MemcoreError as exc:
            drift = str(exc)[:1000]
        return {"ranks": trainer.world, "memories": ", ".join(memories) or "none",
                "identical_across_ranks": drift is None, "drift": drift}
    rows = [{"recipe": name, **attempt(train_run, ctx, SPECS[name], "no", ctx.pick(100, 3), None,
                                       after=consistency)} for name in DIST_RECIPES]
    if tdist.is_initialized():
        if tdist.get_rank() == 0:
            write_json(ctx.work / "distributed.json", rows)
        tdist.barrier()
        tdist.destroy_process_group()


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Context], dict]
    budget: dict[bool, int]                  # seconds, by --smoke


SECTIONS = [
    Section("environment", section_environment, {False: 10, True: 15}),
    *[Section(f"recipe/{spec.name}", (lambda ctx, spec=spec: section_recipe(ctx, spec)),
              {False: 30, True: 20}) for spec in RECIPES],
    Section("attention", section_attention, {False: 20, True: 10}),
    Section("moca", section_moca, {False: 40, True: 15}),
    Section("memorygan", section_memorygan, {False: 30, True: 15}),
    Section("fpainter", section_fpainter, {False: 15, True: 10}),
    Section("fidelity", section_fidelity, {False: 40, True: 20}),
    Section("distributed", section_distributed, {False: 80, True: 60}),
]
SECTIONS_BY_NAME = {s.name: s for s in SECTIONS}


# -- files ------------------------------------------------------------------------------------
# OUT holds results.json and results.md only (a device lease returns a few files from it); the
# section files, the worker's state and scratch data live in a temporary work folder.
def section_file(work: Path, name: str) -> Path:
    return work / "sections" / (name.replace("/", "-") + ".json")


def clean(value):
    """JSON-safe: non-finite floats as strings (strict JSON has no NaN)."""
    if isinstance(value, float) and not _finite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # whole or not at all: another process may read it any moment


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(clean(data), indent=1))


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def publish(work: Path) -> Path:
    """Rewrite OUT/results.json and OUT/results.md from the sections done so far: called after
    every section, so a run cut short leaves what it measured."""
    run = read_json(work / "run.json")
    sections = {}
    for section in SECTIONS:
        data = read_json(section_file(work, section.name))
        if data is None:  # every section appears, with a reason: none disappears silently
            data = {"status": "skipped", "reason": "not selected (--only)"} \
                if run["only"] and section.name not in run["only"] else \
                {"status": "error", "error": "no result: the run ended before this section"}
        sections[section.name] = data
    results = {"command": run["command"], "smoke": run["smoke"],
               "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run["t0"])),
               "wall_s": time.time() - run["t0"],
               "environment": sections["environment"].get("info", {}), "loss_rule": RULE,
               "sections": sections}
    out = Path(run["out"])
    write_json(out / "results.json", results)
    write_text(out / "results.md", markdown(results))
    return out


# -- the worker: runs the sections in order ---------------------------------------------------
def worker(ctx: Context, only: list[str]) -> None:
    current = ctx.work / "current.json"
    for section in SECTIONS:
        target = section_file(ctx.work, section.name)
        if (only and section.name not in only) or target.exists():
            continue  # not asked for, or done by an earlier worker of this run
        budget, left = section.budget[ctx.smoke], ctx.deadline - time.time()
        if left < budget:
            write_json(target, {"status": "skipped", "budget_s": budget, "reason":
                                f"not enough time left ({left:.0f} s of the run's "
                                f"{TOTAL_S[ctx.smoke]} s, budget {budget} s)"})
            log(ctx, f"{section.name}: skipped, {left:.0f} s left")
            continue
        write_json(current, {"section": section.name, "started": time.time(), "budget": budget})
        log(ctx, f"{section.name}: start (budget {budget} s)")
        start = time.perf_counter()
        result = attempt(section.run, ctx)
        result.update(elapsed_s=time.perf_counter() - start, budget_s=budget)
        write_json(target, result)
        publish(ctx.work)
        log(ctx, f"{section.name}: {result['status']} in {result['elapsed_s']:.1f} s"
                 + (f" ({result.get('error') or result.get('reason')})"[:300]
                    if result["status"] != "ok" else ""))
    current.unlink(missing_ok=True)


# -- the supervisor: starts workers, records what kills them ----------------------------------
def supervise(args) -> int:
    import shutil
    import tempfile
    out, smoke = Path(args.out), args.smoke
    only = [s for s in (args.only or "").split(",") if s]
    unknown = [s for s in only if s not in SECTIONS_BY_NAME]
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; sections: "
              f"{', '.join(SECTIONS_BY_NAME)}", file=sys.stderr)
        return 2
    if only and "environment" not in only:
        only.insert(0, "environment")  # the numbers' machine and versions, always measured anew
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="memcore-accelerator-"))
    t0 = time.time()
    deadline = t0 + TOTAL_S[smoke]
    previous = read_json(out / "results.json") if only else None
    if previous and previous.get("smoke") != smoke:
        previous = None  # smoke and full-size results never mix in one table
    for name, data in (previous or {}).get("sections", {}).items():
        if name in SECTIONS_BY_NAME and name not in only and "--only" not in data.get("reason", ""):
            write_json(section_file(work, name), data)  # --only keeps the other sections' results
    write_json(work / "run.json", {
        "out": str(out.resolve()), "smoke": smoke, "t0": t0, "only": only,
        "command": " ".join(["python", "benchmarks/accelerator.py", *sys.argv[1:]])})
    cmd = [sys.executable, str(Path(__file__).resolve()), str(out), "--worker", str(work),
           "--t0", str(t0), *(["--smoke"] if smoke else []),
           *(["--only", ",".join(only)] if only else []),
           *(["--crash-in", args.crash_in] if args.crash_in else [])]
    log(t0, f"accelerator benchmark{' (smoke)' if smoke else ''} into {out}, at most "
            f"{TOTAL_S[smoke]} s")
    try:
        for _ in range(len(SECTIONS)):
            failure = watch(subprocess.Popen(cmd), work, deadline)
            if failure is None:
                break
            state = read_json(work / "current.json") or {}
            name = state.get("section")
            if not name or section_file(work, name).exists():
                log(t0, f"the worker failed outside a section: {failure}")
                break
            write_json(section_file(work, name), {"status": "error", "error": failure,
                                                  "elapsed_s": time.time() - state["started"],
                                                  "budget_s": state["budget"]})
            (work / "current.json").unlink()  # else the next worker is judged by this clock
            log(t0, f"{name}: {failure}; a new worker continues")
            if time.time() > deadline:
                break
        publish(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(t0, f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


def watch(proc: subprocess.Popen, work: Path, deadline: float) -> str | None:
    """Wait for the worker; None when it finished, else why it was lost."""
    while True:
        try:
            code = proc.wait(timeout=0.5)
            return None if code == 0 else f"the worker died (exit status {code})"
        except subprocess.TimeoutExpired:
            pass
        state = read_json(work / "current.json") or {}
        over = bool(state) and time.time() > state["started"] + 1.5 * state["budget"] + 30
        if over or time.time() > deadline + GRACE_S:
            proc.kill()  # the worker this supervisor started, by its id
            proc.wait()
            return (f"killed after {time.time() - state['started']:.0f} s (budget "
                    f"{state['budget']} s)" if over else "killed at the run's deadline")


# -- Markdown ---------------------------------------------------------------------------------
def cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")[:400]


def table(rows: list[dict], skip=("traceback",)) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row if k not in skip))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = ["# Accelerator benchmark", "",
             f"`{results['command']}` — started {results['started_utc']} UTC, "
             f"{results['wall_s']:.0f} s{' (smoke: CPU, tiny sizes)' if results['smoke'] else ''}",
             ""]
    lines += [f"- {k}: " + (", ".join(f"{a} {b}" for a, b in v.items()) if isinstance(v, dict)
                            else cell(v)) for k, v in env.items()]
    lines += ["", f"Loss rule: {results['loss_rule']}.", "", "## Summary", ""]
    summary = []
    for name, data in results["sections"].items():
        failed = [r for r in data.get("rows", []) if r.get("status") == "error"]
        summary.append({"section": name, "status": data["status"],
                        "time_s": data.get("elapsed_s"),
                        "note": data.get("error") or data.get("reason") or
                        (f"{len(failed)} part(s) failed" if failed else "")})
    lines += table(summary)
    for name, data in results["sections"].items():
        if not data.get("rows"):
            continue
        lines += ["", f"## {name}", ""]
        if data.get("note"):
            lines += [data["note"], ""]
        lines += table(data["rows"])
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="Folder for results.json and results.md.")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny sizes: the same code paths.")
    parser.add_argument("--only", help="Comma-separated sections to run again (the others' "
                        f"results in OUT are kept): {', '.join(SECTIONS_BY_NAME)}.")
    parser.add_argument("--force-dist", action="store_true",
                        help="Run the distributed section on CPU too (gloo; for tests).")
    parser.add_argument("--crash-in", help=argparse.SUPPRESS)  # tests: the worker dies there
    parser.add_argument("--worker", metavar="WORK", help=argparse.SUPPRESS)
    parser.add_argument("--dist-worker", metavar="WORK", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.force_dist:  # the workers read it from the environment they inherit
        os.environ["MEMCORE_BENCH_FORCE_DIST"] = "1"
    if not (args.worker or args.dist_worker):
        return supervise(args)
    t0 = args.t0 or time.time()
    ctx = Context(Path(args.worker or args.dist_worker), args.smoke, t0, t0 + TOTAL_S[args.smoke],
                  force_dist=os.environ.get("MEMCORE_BENCH_FORCE_DIST") == "1")
    if args.dist_worker:
        dist_worker(ctx)
        return 0
    if args.crash_in:
        crash = SECTIONS_BY_NAME[args.crash_in]
        SECTIONS[SECTIONS.index(crash)] = Section(crash.name, lambda ctx: os._exit(3),
                                                  crash.budget)
    worker(ctx, [s for s in (args.only or "").split(",") if s])
    return 0


if __name__ == "__main__":
    sys.exit(main())
