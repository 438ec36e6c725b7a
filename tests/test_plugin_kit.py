"""The plugin kit: `memcore new-plugin`, the contract checks of memcore_kit.contracts (which must fail
on broken components, naming the contract), the 2-process runner, and the tutorial's code."""
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomli
import tomli_w
import torch
from torch import nn

import memcore
import memcore_kit.testing
from memcore_kit import contracts
from memcore.cli import main
from memcore_kit.scaffold import SCAFFOLD_KINDS
from memcore_kit.testing import run_distributed, train

ROOT = Path(__file__).resolve().parents[1]


# -- generated plugins ----------------------------------------------------------------------
@pytest.fixture
def generated(tmp_path, monkeypatch):
    """``generated(kind)`` -> (folder, plugin module, generated test module), importable."""
    made = []

    def make(kind, name=None):
        name = name or f"demo-{kind}"
        assert main(["new-plugin", name, "--kind", kind, "--dir", str(tmp_path)]) == 0
        folder = tmp_path / f"memcore-{name}"
        package = "memcore_" + name.replace("-", "_")
        monkeypatch.syspath_prepend(str(folder))
        made.append(package)
        plugin = importlib.import_module(f"{package}.plugin")
        test_file = next((folder / "tests").glob("test_*.py"))
        spec = importlib.util.spec_from_file_location(f"generated_{package}", test_file)
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)
        return folder, plugin, tests

    yield make
    for name in [m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in made)]:
        del sys.modules[name]


def test_generated_package_layout(generated):
    folder, plugin, _ = generated("memory", "kv-demo")
    meta = tomli.loads((folder / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "memcore-kv-demo"
    assert meta["project"]["entry-points"]["memcore"] == {"kv-demo": "memcore_kv_demo.plugin"}
    assert plugin.memcore_api_version() == memcore.API_VERSION
    recipe = tomli.loads((folder / "recipes" / "kv-demo.toml").read_text())
    assert recipe["generator"]["kind"] == "dcgan" and recipe["losses"] == [{"kind": "hinge"}]
    assert recipe["generator"]["blocks"] == [{"kind": "kv-demo", "at": 14}]
    assert recipe["data"]["kind"] == "fashion-mnist"
    assert "KeyValueMemory(memcore.Memory)" in (folder / "memcore_kv_demo" / "memory.py").read_text()


def test_new_plugin_refuses_bad_names_and_existing_folders(tmp_path, capsys):
    assert main(["new-plugin", "Bad_Name", "--dir", str(tmp_path)]) == 2
    assert "plugin name 'Bad_Name'" in capsys.readouterr().err
    assert main(["new-plugin", "ok", "--dir", str(tmp_path)]) == 0
    assert main(["new-plugin", "ok", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_generated_memory_plugin_registers_lists_and_trains(generated, isolated_registry, tmp_path,
                                                            capsys):
    """Fast end to end: generate, register the module (no pip), list it, train 2 steps."""
    folder, plugin, _ = generated("memory")
    info = isolated_registry.register_module(plugin, "demo-memory")
    assert info.status == "ok", info.error
    capsys.readouterr()
    assert main(["plugins", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["demo-memory"]["status"] == "ok"
    assert rows["demo-memory"]["components"] == ["block:demo-memory"]
    run = train(folder / "recipes" / "demo-memory.toml", tmp_path, steps=2)
    state = torch.load(run / "checkpoints" / "step-0000002.pt", weights_only=True)
    G = state["models"]["G"]
    memory = "slots.stages.14.0.memory."
    assert int(G[memory + "write_count"]) == 2 and int(G[memory + "filled"]) == 16  # 2 x 8 rows
    assert torch.equal(state["models"]["G_ema"][memory + "values"], G[memory + "values"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["memory/G.slots.stages.14.0.memory/filled"] == 16.0


@pytest.mark.parametrize("kind", SCAFFOLD_KINDS)
def test_each_kind_passes_its_generated_contract_tests(kind, generated, isolated_registry, capsys):
    folder, plugin, tests = generated(kind)
    assert isolated_registry.register_module(plugin, f"demo-{kind}").status == "ok"
    tests.test_registered(isolated_registry)
    fast = [f for n, f in vars(tests).items() if n.startswith("test_") and n not in (
        "test_registered", "test_trains_with_its_recipe", "test_memory_identical_on_two_processes")]
    assert fast, "every generated plugin has contract tests"
    for test in fast:
        test()
    assert main(["validate", str(folder / "recipes" / f"demo-{kind}.toml")]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in SCAFFOLD_KINDS if k != "memory"])
def test_each_kind_trains_with_its_recipe(kind, generated, isolated_registry, tmp_path):
    folder, plugin, _ = generated(kind)
    isolated_registry.register_module(plugin, f"demo-{kind}")
    run = train(folder / "recipes" / f"demo-{kind}.toml", tmp_path, steps=2)
    assert (run / "checkpoints" / "step-0000002.pt").is_file()


@pytest.fixture
def installed(tmp_path):
    """Generate memcore-pip-demo and pip install it (editable) into this venv; uninstall after."""
    assert main(["new-plugin", "pip-demo", "--dir", str(tmp_path)]) == 0
    folder = tmp_path / "memcore-pip-demo"
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", "-e", str(folder)],
                   check=True, capture_output=True, timeout=300)
    try:
        yield folder
    finally:
        subprocess.run(pip + ["uninstall", "-y", "memcore-pip-demo"], capture_output=True,
                       timeout=300)


@pytest.mark.slow
def test_installed_plugin_is_listed_passes_its_tests_and_trains(installed, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    memcore_cli = [sys.executable, "-m", "memcore"]
    listed = subprocess.run(memcore_cli + ["plugins", "--json"], capture_output=True, text=True,
                            env=env, timeout=300)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["pip-demo"]["status"] == "ok" and rows["pip-demo"]["dist"] == "memcore-pip-demo"
    assert rows["pip-demo"]["components"] == ["block:pip-demo"]
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-m", "slow or not slow"], cwd=installed, capture_output=True,
                           text=True, env=env, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert re.search(r"\b7 passed\b", tests.stdout), tests.stdout[-500:]
    run = subprocess.run(memcore_cli + ["run", str(installed / "recipes" / "pip-demo.toml"),
                                        "--set", "train.steps=3", "--set", "data.limit=64",
                                        "--set", "train.batch_size=8",
                                        "--set", "train.progress=false"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "runs" / "0001-pip-demo" / "checkpoints" / "step-0000003.pt").is_file()


# -- contract checks on good and broken components ------------------------------------------
class Fifo(memcore.Memory):
    """A correct memory: the reference for the broken variants below."""
    sync, write_at = "gather", "after_D"

    def __init__(self, slots=4, dim=3):
        super().__init__()
        self.register_buffer("keys", torch.randn(slots, dim))
        self.register_buffer("head", torch.zeros((), dtype=torch.long))

    def forward(self, query):
        self.stage(key=query)
        return (query @ self.keys.T).softmax(-1) @ self.keys

    def write(self, items, generator):
        k = items["key"][-len(self.keys):]
        slots = (self.head + torch.arange(len(k))) % len(self.keys)
        self.keys[slots] = k
        self.head.copy_((self.head + len(k)) % len(self.keys))


QUERY = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))


class PlainTensorState(Fifo):
    def __init__(self):
        super().__init__()
        self.usage = torch.zeros(4)  # not a buffer


class NotPersistent(Fifo):
    def __init__(self):
        super().__init__()
        self.register_buffer("usage", torch.zeros(4), persistent=False)


class WritesInForward(Fifo):
    def forward(self, query):
        out = super().forward(query)
        if self.training:
            self.keys[0] = self.keys[0] * 0.5 + query.mean(0)  # in the graph, outside write()
        return out


class PythonCounter(Fifo):
    def __init__(self):
        super().__init__()
        self.cursor = 0  # state in a Python int: lost by state_dict

    def write(self, items, generator):
        k = items["key"][-1]
        self.keys[self.cursor % len(self.keys)] = k
        self.cursor += 1


class StagesInEval(Fifo):
    @property
    def writes_enabled(self):
        return True


class GlobalRandomWrite(Fifo):
    def write(self, items, generator):
        slots = torch.randint(len(self.keys), (len(items["key"]),))  # global RNG, not generator
        self.keys[slots] = items["key"]


class ReplacesBuffer(Fifo):
    def write(self, items, generator):
        keys = torch.zeros(self.keys.shape)  # float32 whatever the module's dtype
        keys[:len(items["key"][-4:])] = items["key"][-4:]
        self.keys = keys


class WritesNothing(Fifo):
    def write(self, items, generator):
        pass


class ParameterState(Fifo):
    """Keeps its written state in a frozen nn.Parameter: the EMA generator would average it."""

    def __init__(self):
        super().__init__()
        del self.keys
        self.keys = nn.Parameter(torch.randn(4, 3), requires_grad=False)


class TrainedAndWritten(Fifo):
    """Its read has a learned projection: gradients reach the memory, not only the query."""

    def __init__(self):
        super().__init__()
        self.project = nn.Linear(3, 3)

    def forward(self, query):
        self.stage(key=query)
        return (self.project(query) @ self.keys.T).softmax(-1) @ self.keys


class PythonRandomWrite(Fifo):
    def write(self, items, generator):
        import random
        self.keys[random.randrange(len(self.keys))] = items["key"][-1]


class FlagState(Fifo):
    """A Python bool decides what the next write does: lost by state_dict."""

    def __init__(self):
        super().__init__()
        self.primed = False

    def write(self, items, generator):
        self.keys[int(self.primed)] = items["key"][-1] * (1 + self.write_count)
        self.primed = True


class OwnGenerator(Fifo):
    """Draws from a generator of its own, seeded per process: ranks would diverge."""

    def __init__(self):
        super().__init__()
        self.rng = torch.Generator().manual_seed(memcore.dist.rank())

    def write(self, items, generator):
        slots = torch.randint(len(self.keys), (len(items["key"]),), generator=self.rng)
        self.keys[slots] = items["key"]


@pytest.mark.parametrize("broken, contract, detail", [
    (ParameterState, "write-into-buffers", "write() changed the parameter(s) ['keys']"),
    (TrainedAndWritten, "gradient-to-query-only", "parameter(s) ['project.weight', 'project.bias']"),
    (PythonRandomWrite, "write-randomness", "depend on Python's random (<self>.keys)"),
    (GlobalRandomWrite, "write-randomness", "depend on torch's global RNG (<self>.keys)"),
    (FlagState, "state-dict-round-trip", "Python attribute 'primed' (True in the trained "
                                         "instance, False after loading)"),
    (PythonCounter, "state-dict-round-trip", "Python attribute 'cursor' (2 in the trained"),
    (OwnGenerator, "state-in-buffers", "attribute 'rng' (OwnGenerator) holds a Generator"),
])
def test_broken_memories_are_diagnosed_by_cause(broken, contract, detail):
    with pytest.raises(AssertionError, match=f"memory contract '{contract}' broken") as failure:
        contracts.check_memory(broken, QUERY)
    assert detail in str(failure.value)


def test_a_memory_learning_by_gradient_declares_it():
    class Declared(TrainedAndWritten):
        learns_by_gradient = True
    contracts.check_memory(Declared, QUERY)


def test_mfh_memory_learned_by_gradient_stays_legal():
    """MFH's memory M is a parameter trained through the read: it declares so and passes; the
    same memory undeclared is refused."""
    from memcore_mfh.memory import CIMemory
    query = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    contracts.check_memory(lambda: CIMemory(10, 6, 6, 16, "gumbel", window=8), query)

    class Undeclared(CIMemory):
        learns_by_gradient = False
    with pytest.raises(AssertionError, match="'gradient-to-query-only' broken: gradients reach "
                                             r"memory '<self>' parameter\(s\) \['slots'"):
        contracts.check_memory(lambda: Undeclared(10, 6, 6, 16, "gumbel", window=8), query)


def test_a_block_whose_memory_gets_gradients_fails():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 3, 1)
            self.memory = TrainedAndWritten()

        def forward(self, x):
            q = self.conv(x).mean((2, 3))
            return x + self.memory(q).sum()

    with pytest.raises(AssertionError, match="block contract 'gradient-to-query-only' broken: "
                                             "gradients reach memory 'memory' parameter"):
        contracts.check_block(Block, channels=8)


def test_a_correct_memory_passes_from_a_factory_or_a_module():
    contracts.check_memory(Fifo, QUERY, read_shape=(5, 3))
    contracts.check_memory(Fifo(), lambda g: torch.randn(5, 3, generator=g))


@pytest.mark.parametrize("broken, contract", [
    (PlainTensorState, "state-in-buffers"),
    (NotPersistent, "state-in-buffers"),
    (WritesInForward, "write-outside-autograd"),
    (PythonCounter, "state-dict-round-trip"),
    (StagesInEval, "eval-write-policy"),
    (GlobalRandomWrite, "write-randomness"),
    (ReplacesBuffer, "device-move"),
    (WritesNothing, "write"),
])
def test_broken_memories_fail_the_contract_they_break(broken, contract):
    with pytest.raises(AssertionError, match=f"memory contract '{contract}' broken"):
        contracts.check_memory(broken, QUERY)


def test_memory_read_contract_checks_shape_and_dtype():
    with pytest.raises(AssertionError, match="'read' broken: read shape"):
        contracts.check_memory(Fifo, QUERY, read_shape=(5, 4))

    class HalfRead(Fifo):
        def forward(self, query):
            return super().forward(query).half()
    with pytest.raises(AssertionError, match="'read' broken: read dtypes"):
        contracts.check_memory(HalfRead, QUERY)


class MemoryBlock(nn.Module):
    def __init__(self, memory_cls=Fifo):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.memory = memory_cls(4, 8) if memory_cls is Fifo else memory_cls()

    def forward(self, x):
        self.memory.stage(key=x.mean((2, 3)))
        return x + self.conv(x)


class Unseeded(nn.Module):
    builds = 0

    def __init__(self):
        super().__init__()
        Unseeded.builds += 1
        self.register_buffer("code", torch.full((8,), float(Unseeded.builds)))

    def forward(self, x):
        return x + self.code[None, :, None, None]


class Shrinks(nn.Module):
    def forward(self, x):
        return x[..., 1:, 1:]


def test_block_checks():
    contracts.check_block(MemoryBlock)
    contracts.check_block(nn.Conv2d(8, 8, 3, padding=1))
    with pytest.raises(AssertionError, match="block contract 'shape' broken: mapped"):
        contracts.check_block(Shrinks)
    with pytest.raises(AssertionError, match="block contract 'determinism' broken"):
        contracts.check_block(Unseeded)

    class EvalStager(MemoryBlock):
        def __init__(self):
            super().__init__(StagesInEval)
    with pytest.raises(AssertionError, match="block contract 'eval-write-policy' broken: "
                                             "memory 'memory' staged rows in eval mode"):
        contracts.check_block(EvalStager)


class TinyGenerator(memcore.Generator):
    def __init__(self, scale=1.0):
        super().__init__()
        self.z_dim, self.scale = 4, scale
        self.net = nn.Linear(4, 64)

    def forward(self, z):
        return (self.net(z).tanh() * self.scale).view(-1, 1, 8, 8)


class TinyDiscriminator(memcore.Discriminator):
    def __init__(self, extra=False):
        super().__init__()
        self.net, self.extra = nn.Linear(64, 1), extra

    def forward(self, x, c=None):
        logits = self.net(x.flatten(1)).squeeze(1)
        return {"logits": logits, "mean": logits.mean()[None]} if self.extra else logits


def test_generator_and_discriminator_checks():
    contracts.check_generator(TinyGenerator, resolution=8, channels=1)
    with pytest.raises(AssertionError, match="generator contract 'output' broken: images outside"):
        contracts.check_generator(lambda: TinyGenerator(scale=3.0), resolution=8, channels=1)
    with pytest.raises(AssertionError, match="'output' broken: images of shape"):
        contracts.check_generator(TinyGenerator, resolution=16, channels=1)
    contracts.check_discriminator(TinyDiscriminator, resolution=8, channels=1)
    with pytest.raises(AssertionError, match="'output' broken: output 'mean' is not batch-first"):
        contracts.check_discriminator(lambda: TinyDiscriminator(extra=True), resolution=8,
                                      channels=1)


def _with_idle_layer(cls, declared: bool):
    """``cls`` with one more layer that its forward never uses (declared idle, or not)."""
    class Idle(cls):
        unreached_parameters = {"idle.": "a test: idle on purpose"} if declared else {}

        def __init__(self):
            super().__init__()
            self.idle = nn.Linear(4, 4)
    return Idle


class PlainBlock(nn.Conv2d):
    def __init__(self):
        super().__init__(8, 8, 3, padding=1)


GRADIENT_CHECKS = {
    "block": (PlainBlock, contracts.check_block, {}),
    "generator": (TinyGenerator, contracts.check_generator, {"resolution": 8, "channels": 1}),
    "discriminator": (TinyDiscriminator, contracts.check_discriminator,
                      {"resolution": 8, "channels": 1}),
}


@pytest.mark.parametrize("kind", GRADIENT_CHECKS)
def test_gradient_contract_fails_on_a_parameter_nothing_reaches_unless_declared(kind):
    cls, check, sizes = GRADIENT_CHECKS[kind]
    with pytest.raises(AssertionError, match=rf"{kind} contract 'gradient' broken: no gradient "
                                             r"reaches parameter\(s\) \['idle.weight', 'idle.bias'\]"):
        check(_with_idle_layer(cls, declared=False), **sizes)
    check(_with_idle_layer(cls, declared=True), **sizes)


class GoodLoss(memcore.Loss):
    def __call__(self, ctx):
        sign = 1 if ctx.phase == "D" else -1
        return sign * memcore.logits_of(ctx.d_fake).mean()


class VectorLoss(GoodLoss):
    def __call__(self, ctx):
        return memcore.logits_of(ctx.d_fake)


class GradientFreeLoss(GoodLoss):
    def __call__(self, ctx):
        return memcore.logits_of(ctx.d_fake).detach().mean()


def test_loss_checks():
    contracts.check_loss(GoodLoss())
    with pytest.raises(AssertionError, match="loss contract 'value' broken: D phase returned"):
        contracts.check_loss(VectorLoss())
    with pytest.raises(AssertionError, match="loss contract 'gradient' broken"):
        contracts.check_loss(GradientFreeLoss())

    class OddPhase(GoodLoss):
        phases = ("E",)
    with pytest.raises(AssertionError, match="loss contract 'protocol' broken: phases"):
        contracts.check_loss(OddPhase())


def test_dataset_and_metric_checks(isolated_registry):
    contracts.check_dataset(contracts.factory_of("dataset", "fashion-mnist", {"limit": 8}))

    class BadLabels(memcore.ImageDataset):
        resolution, channels, num_classes, class_names = 8, 1, 2, ("a", "b")
        images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
        labels = torch.tensor([0, 1, 5, 0])
    with pytest.raises(AssertionError, match="dataset contract 'items' broken: item 2: label 5"):
        contracts.check_dataset(BadLabels())

    class Constant(memcore.Metric):
        key = "zero"

        def compute(self, session):
            return {"zero": 0.0, "protocol": "constant"}
    contracts.check_metric(Constant(memcore.MetricOptions(), None))

    class Unstable(Constant):
        calls = 0

        def compute(self, session):
            Unstable.calls += 1
            return {"zero": float(Unstable.calls)}
    with pytest.raises(AssertionError, match="metric contract 'compute' broken: two computations"):
        contracts.check_metric(Unstable(memcore.MetricOptions(), None))


# -- two processes --------------------------------------------------------------------------
class BypassesStage(Fifo):
    """Writes its own rows in forward, skipping stage(): ranks see different data and diverge."""

    def forward(self, query):
        if self.training:
            with torch.no_grad():
                self.write({"key": query.detach()}, None)
        return (query @ self.keys.T).softmax(-1) @ self.keys


def gather_rank_rows():
    rank = memcore.dist.rank()
    return memcore.dist.gather_rows(torch.full((rank + 1, 2), float(rank))).tolist()


@pytest.mark.slow  # the runner is also exercised by the next test
def test_run_distributed_returns_every_ranks_result():
    expected = [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert run_distributed(gather_rank_rows, nproc=2) == [expected, expected]


@pytest.mark.distributed
def test_gathered_writes_identical_on_two_processes():
    contracts.check_memory_distributed(Fifo, QUERY)
    with pytest.raises(AssertionError, match="'gathered-writes-identical' broken: after 2 "
                                             "gathered writes rank 1 differs from rank 0"):
        contracts.check_memory_distributed(BypassesStage, QUERY)


# -- the tutorial ---------------------------------------------------------------------------
def tutorial_blocks(language):
    text = (ROOT / "docs" / "writing-plugins.md").read_text()
    return re.findall(rf"```{language}\n(# file: .*?)```", text, flags=re.S)


@pytest.mark.usefixtures("trusted_tmp_path")  # the tutorial's plugin files
def test_the_tutorial_plugin_trains_in_generator_and_discriminator(tmp_path, isolated_registry,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ is written to the working directory
    files = {}
    for block in tutorial_blocks("python") + tutorial_blocks("toml"):
        name, _, body = block.partition("\n")
        files[name.removeprefix("# file: ").strip()] = block
    assert {"hopfield_plugin.py", "hopfield.toml"} <= set(files)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = train(tmp_path / "hopfield.toml", tmp_path, steps=2)
    state = torch.load(run / "checkpoints" / "step-0000002.pt", weights_only=True)["models"]
    for role in ("G", "D"):
        counts = [int(v) for k, v in state[role].items() if k.endswith("memory.write_count")]
        assert counts and all(c == 2 for c in counts), (role, counts)


@pytest.mark.usefixtures("trusted_tmp_path")  # the tutorial's plugin files
def test_the_block_loss_example_adds_its_weighted_term(tmp_path, isolated_registry, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for block in tutorial_blocks("python") + tutorial_blocks("toml"):
        name, _, _ = block.partition("\n")
        (tmp_path / name.removeprefix("# file: ").strip()).write_text(block)
    run = train(tmp_path / "gain.toml", tmp_path, steps=2)
    row = next(json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()
               if "loss/G/gain-pull" in line)
    assert row["loss/G/gain-pull"] == pytest.approx(1.0, abs=0.01)
    assert row["loss/G"] == pytest.approx(row["loss/G/Hinge"] + 0.1 * row["loss/G/gain-pull"],
                                          rel=1e-5)


@pytest.mark.usefixtures("trusted_tmp_path")
def test_local_plugin_paths_are_relative_to_the_recipe(tmp_path, isolated_registry, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "noop_plugin.py").write_text("")
    recipe = memcore_kit.testing.tiny_recipe(plugins={"local": ["noop_plugin.py"]})
    (tmp_path / "sub" / "r.toml").write_text(tomli_w.dumps(recipe))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "sub/r.toml"]) == 0
