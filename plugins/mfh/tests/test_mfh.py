"""MFH plugin: networks, memory addressing, loss equations, historical average, recipes, one-shot
sampling of a class never seen in training, and the viz/eval commands."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import tomli

import memcore
from memcore.cli import main

from memcore_mfh import losses, networks
from memcore_mfh.memory import CIMemory, gumbel_address
from memcore_mfh.networks import Discriminator, DiscriminatorOptions, Generator, GeneratorOptions

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = ["--set", "train.steps=3", "--set", "train.batch_size=8", "--set", "train.progress=false",
        "--set", "data.limit=64", "--set", "train.log_every=1", "--set", "train.sample_every=3",
        "--set", "train.checkpoint_every=3", "--set", "train.grid_size=8",
        "--set", "generator.width=8", "--set", "generator.encoder_width=8",
        "--set", "generator.memory_slots=10", "--set", "generator.ci_dim=8",
        "--set", "generator.cr_dim=8", "--set", "generator.addresser_hidden=16",
        "--set", "generator.bank_size=8", "--set", "discriminator.width=8"]


def tiny_generator(resolution=28, **kw):
    o = GeneratorOptions(width=8, encoder_width=8, memory_slots=10, ci_dim=8, cr_dim=8,
                         addresser_hidden=16, bank_size=8, **kw)
    return Generator(o, memcore.BuildContext(resolution=resolution, channels=1, num_classes=4))


def batch(n=8, classes=4):
    return torch.rand(n, 1, 28, 28) * 2 - 1, torch.arange(n) % classes


# -- shapes and structure ------------------------------------------------------------------------
def test_shapes_of_every_mode():
    torch.manual_seed(0)
    G = tiny_generator()
    x, y = batch()
    out = G(mode="train", x=x, labels=y)
    for k in ("recon", "fake_a", "fake_b"):
        assert out[k].shape == (8, 1, 28, 28)
        assert out[k].abs().max() <= 1
    assert out["pi"].shape == out["probs"].shape == (8, 10)
    assert G(mode="hallucinate", x=x, labels=y).shape == (8, 1, 28, 28)
    assert G(cr=torch.randn(5, 8), slot=torch.arange(5)).shape == (5, 1, 28, 28)
    assert G(exemplar=x[:1], ci=torch.randn(3, 8)).shape == (3, 1, 28, 28)
    D = Discriminator(DiscriminatorOptions(width=8),
                      memcore.BuildContext(resolution=28, channels=1, num_classes=4))
    d = D(x, y)
    assert d["logits"].shape == (8,) and d["class_logits"].shape == (8, 4)
    assert any("parametrizations" in n for n, _ in D.named_parameters())  # spectral norm


def test_projection_term_uses_labels():
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorOptions(width=8),
                      memcore.BuildContext(resolution=28, channels=1, num_classes=4)).eval()
    x, y = batch()                                          # eval: no power iteration per call
    plain, projected = D(x)["logits"], D(x, y)["logits"]
    h = D.features(x).sum((2, 3))
    assert torch.allclose(projected - plain, (D.embed(y) * h).sum(1), atol=1e-5)


def test_switch_resolution():
    G = tiny_generator()                                    # 28 px: stages 7, 14, 28; auto -> 14
    assert G.synthesis.sizes == [7, 14, 28] and G.synthesis.switch_at == 14
    assert [G.synthesis.condition_at(s) for s in (7, 14, 28)] == ["ci", "cr", "cr"]
    assert tiny_generator(32).synthesis.switch_at == 8     # a quarter of the side
    assert networks.default_switch([4, 8, 16, 32, 64, 128], 128) == 32   # the paper's 32 of 128
    G = tiny_generator(32, switch_at=16)
    assert [G.synthesis.condition_at(s) for s in (4, 8, 16, 32)] == ["ci", "ci", "cr", "cr"]
    # the AdaIN layers really read the feature of their side of the switch
    assert G.synthesis.stages[1][0].adain.style.in_features == 8
    with pytest.raises(memcore.MemcoreError, match="switch_at = 12"):
        tiny_generator(32, switch_at=12)


def test_ci_and_cr_drive_their_stages():
    """Changing f_ci changes the image; with switch at the first stage f_ci only enters the stem."""
    torch.manual_seed(0)
    G = tiny_generator().eval()
    cr = torch.randn(1, 8)
    a = G(cr=cr, slot=torch.tensor([0]))
    b = G(cr=cr, slot=torch.tensor([1]))
    assert not torch.allclose(a, b)


def test_needs_labels():
    with pytest.raises(memcore.MemcoreError, match="labelled"):
        Generator(GeneratorOptions(), memcore.BuildContext(resolution=28, channels=1))


def test_class_means_is_eq1():
    f = torch.randn(6, 3)
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    m = networks.class_means(f, y, 4)
    for i in range(6):
        assert torch.allclose(m[i], f[y == y[i]].mean(0))


# -- memory and addressing -----------------------------------------------------------------------
@pytest.mark.parametrize("train_cr", ["image", "class-mean"])
def test_training_cr_is_per_image_or_class_mean(train_cr):
    """Algorithm 1 line 2 / eq. 8: f_cr = E_cr(x_i) (default); 'class-mean': eq. 1 on the batch.
    The synthesis network receives it for the reconstruction, both hallucinations and D's fakes."""
    torch.manual_seed(0)
    G = tiny_generator(train_cr=train_cr)
    x, y = batch()
    with torch.no_grad():
        own = G.E_cr(x)
        expected = own if train_cr == "image" else networks.class_means(own, y, 4)
        seen = []
        synthesis = G.synthesis.forward
        G.synthesis.forward = lambda f_cr, f_ci: seen.append(f_cr) or synthesis(f_cr, f_ci)
        G(mode="train", x=x, labels=y)
        G(mode="hallucinate", x=x, labels=y)
    torch.testing.assert_close(seen[0], expected.repeat(3, 1))
    torch.testing.assert_close(seen[1], expected)
    assert not torch.allclose(own, networks.class_means(own, y, 4))   # the two choices differ


def test_gumbel_hard_is_one_hot_with_gradients():
    torch.manual_seed(0)
    logits = torch.randn(16, 10, requires_grad=True)
    pi = gumbel_address(logits, tau=0.7, hard=True)
    assert torch.equal(pi.sum(1), torch.ones(16))
    assert set(pi.unique().tolist()) == {0.0, 1.0}
    weights = torch.randn(10)
    (pi * weights).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_memory_read_is_pi_times_m_and_gradient_reaches_m():
    torch.manual_seed(0)
    mem = CIMemory(10, 6, 6, 16, "gumbel")
    out = mem(torch.randn(4, 6))
    assert torch.allclose(out["f_ci"], out["pi"] @ mem.slots)
    assert torch.allclose(out["f_ci"], mem.slots[out["pi"].argmax(1)])
    out["f_ci"].sum().backward()
    assert mem.slots.grad.abs().sum() > 0           # M is learned by gradient (eq. 4)
    assert mem.addresser[0].weight.grad.abs().sum() > 0   # R through the straight-through π


def test_usage_written_outside_autograd_after_commit():
    torch.manual_seed(0)
    mem = CIMemory(10, 6, 6, 16, "gumbel", window=8)
    out = mem(torch.randn(5, 6))
    assert int((mem.recent >= 0).sum()) == 0         # staged, not yet written
    mem.commit()
    assert torch.equal(mem.recent[:5], out["pi"].argmax(1))
    assert mem.usage().sum() == 5 and not mem.recent.requires_grad
    mem(torch.randn(5, 6))
    mem.commit()                                     # ring buffer wraps at the window
    assert int(mem.head) == 2 and mem.usage().sum() == 8
    mem.eval()
    mem(torch.randn(5, 6))
    assert mem._staged == []                         # nothing staged in eval mode
    stats = mem.stats()
    assert stats["used"] + stats["dead"] == 10 and stats["tau"] == 1.0


def test_nearest_addressing_is_vq():
    torch.manual_seed(0)
    mem = CIMemory(10, 6, 6, 16, "nearest")
    q = torch.randn(4, 6, requires_grad=True)
    out = mem(q)
    nearest = torch.cdist(q, mem.slots).argmin(1)
    assert torch.allclose(out["f_ci"], mem.slots[nearest], atol=1e-6)
    chosen = mem.slots[nearest]
    expect = F.mse_loss(chosen, q.detach()) + 0.25 * F.mse_loss(q, chosen.detach())
    assert torch.allclose(out["vq_loss"], expect)
    out["f_ci"].sum().backward()
    assert torch.allclose(q.grad, torch.ones_like(q))   # straight-through to the encoder


def test_temperature_annealing():
    G = tiny_generator(tau=2.0, tau_min=0.5, tau_anneal=0.01)
    assert G.temperature(0) == pytest.approx(2.0)
    assert G.temperature(50) == pytest.approx(2.0 * math.exp(-0.5), rel=1e-5)
    assert G.temperature(10_000) == 0.5


# -- losses against direct computations -----------------------------------------------------------
def test_kl_uniform_is_zero_and_positive_otherwise():
    uniform = torch.full((3, 7), 1 / 7)
    assert losses.balance_loss(uniform, "batch").abs() < 1e-6
    assert losses.balance_loss(uniform, "sample").abs() < 1e-6
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    direct = (p.mean(0) * (p.mean(0) / (1 / 3)).log()).sum()
    assert torch.allclose(losses.balance_loss(p, "batch"), direct)
    per = (p * (p * 3).log()).sum(1).mean()
    assert torch.allclose(losses.balance_loss(p, "sample"), per) and per > 0


def test_diversity_loss_signs():
    a, b = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.3)
    assert losses.diversity_loss(a, b, 0.5, hinge=False) == pytest.approx(0.5 - 0.3)
    assert losses.diversity_loss(a, b, 0.5, hinge=True) == pytest.approx(0.2)
    assert losses.diversity_loss(a, b + 0.5, 0.5, hinge=True) == 0      # target reached
    # minimising it pushes the two images apart
    b = b.clone().requires_grad_(True)
    losses.diversity_loss(a, b, 0.5, hinge=False).backward()
    assert (b.grad < 0).all()


def test_adversarial_terms_direct():
    torch.manual_seed(0)
    y = torch.tensor([0, 2, 1])
    real = {"logits": torch.randn(3), "class_logits": torch.randn(3, 4)}
    fake = {"logits": torch.randn(3), "class_logits": torch.randn(3, 4)}
    total, gan, cls = losses.adversarial_terms(real, fake, y, "D", 0.5)
    sig = torch.sigmoid
    direct = -(sig(real["logits"]).log().mean() + (1 - sig(fake["logits"])).log().mean())
    assert torch.allclose(gan, direct, atol=1e-5)
    assert torch.allclose(total, direct + 0.5 * F.cross_entropy(real["class_logits"], y), atol=1e-5)
    fake2 = {"logits": torch.randn(6), "class_logits": torch.randn(6, 4)}
    total, gan, cls = losses.adversarial_terms(None, fake2, y, "G", 1.0)
    assert torch.allclose(gan, -sig(fake2["logits"]).log().mean(), atol=1e-5)
    # both hallucinations must be classified as the input's class (Algorithm 1, line 5)
    assert torch.allclose(cls, F.cross_entropy(fake2["class_logits"], torch.cat([y, y])))


class FakeCtx:
    def __init__(self, G, D, phase):
        self.G, self.phase, self._D = G, phase, D
        self.real, self.labels = batch()
        self.logged, self._cache = {}, {}

    def cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def discriminate(self, x, c):
        return self._D(x, c)

    def log(self, k, v):
        self.logged[k] = v


def test_reconstruction_loss_and_shared_pass():
    torch.manual_seed(0)
    G = tiny_generator()
    D = Discriminator(DiscriminatorOptions(width=8),
                      memcore.BuildContext(resolution=28, channels=1, num_classes=4))
    ctx = FakeCtx(G, D, "G")
    value = losses.Reconstruction(memcore.LossOptions())(ctx)
    p = losses.mfh_pass(ctx)
    assert torch.allclose(value, (ctx.real - p["recon"]).abs().mean())
    assert losses.mfh_pass(ctx) is p                 # one G/D forward shared by every term
    assert p["d_fake"]["logits"].shape == (16,)      # both hallucinations scored
    assert "mfh/slot_image_l1" in ctx.logged
    d_ctx = FakeCtx(G, D, "D")
    d_value = losses.Adversarial(losses.AdversarialOptions())(d_ctx)
    assert d_value.requires_grad and not losses.mfh_pass(d_ctx).get("recon")


def test_historical_average_update_rule(tmp_path, monkeypatch):
    """After one step the EMA G is 0.999 * initial G + 0.001 * trained G (update weight 0.001)."""
    recipe = tomli.loads((RECIPES / "mfh-fashion-mnist.toml").read_text())
    assert recipe["ema"]["decay"] == 0.999 and recipe["ema"]["start"] == 0
    assert recipe["optim"]["G"]["lr"] == 1e-4
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(RECIPES / "mfh-fashion-mnist.toml"), *TINY,
                 "--set", "train.steps=1", "--set", "train.checkpoint_every=1"]) == 0
    state = torch.load(next((run_dir(tmp_path) / "checkpoints").glob("step-*.pt")), weights_only=True)
    torch.manual_seed(0)                                 # the run builds G first from train.seed
    o = GeneratorOptions(width=8, encoder_width=8, memory_slots=10, ci_dim=8, cr_dim=8,
                         addresser_hidden=16, bank_size=8)
    initial = Generator(o, memcore.BuildContext(resolution=28, channels=1, num_classes=7))
    G, G_ema = state["models"]["G"], state["models"]["G_ema"]
    for name, p0 in initial.named_parameters():
        assert torch.allclose(G_ema[name], 0.999 * p0 + 0.001 * G[name], atol=1e-6), name
    assert not torch.allclose(G["memory.slots"], initial.memory.slots)   # M did train


# -- runs ----------------------------------------------------------------------------------------
def run_dir(tmp_path):
    return next((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("recipe", ["mfh-fashion-mnist.toml", "mfh-animal-mnist.toml",
                                    "mfh-fashion-relatives.toml"])
def test_recipe_trains_and_base_split_has_no_novel_class(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(RECIPES / recipe), *TINY]) == 0
    run = run_dir(tmp_path)
    state = torch.load(sorted((run / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert state["dataset"]["num_classes"] == 7
    bank = state["models"]["G_ema"]["bank.labels"]
    assert bank.max() < 7 and (bank >= 0).all()      # only base classes reached the generator
    log = (run / "log.jsonl").read_text()
    assert "memory/G.memory/entropy" in log and "mfh/slot_image_l1" in log
    assert (run / "samples" / "latest.png").exists()


def test_base_split_excludes_novel_classes():
    entry = memcore.get_registry().get("dataset", "fashion-mnist")
    options = entry.load_config()(classes=[0, 1, 2, 3, 4, 5, 6], limit=2000)
    data = entry.load_factory()(options, memcore.BuildContext(0, 0))
    assert data.num_classes == 7 and set(data.labels.unique().tolist()) <= set(range(7))
    assert "sneaker" not in data.class_names and "bag" not in data.class_names


def test_one_shot_sampling_of_unseen_class_and_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(RECIPES / "mfh-fashion-mnist.toml"), *TINY]) == 0
    run = run_dir(tmp_path)
    from memcore_mfh.tools import novel_data
    recipe = tomli.loads((run / "recipe.resolved.toml").read_text())
    images, labels, names = novel_data(recipe)
    assert names == ["sneaker", "bag", "ankle boot"] and set(labels.tolist()) == {7, 8, 9}
    from PIL import Image
    exemplar = images[0].add(1).mul(127.5).round().byte()[0].numpy()
    Image.fromarray(exemplar).save(tmp_path / "one.png")
    out = tmp_path / "grid.png"
    assert main(["sample", str(run), "--exemplar", str(tmp_path / "one.png"), "--n", "16",
                 "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size[0] > 4 * 28 and im.size[1] > 2 * 28
    assert main(["viz", "mfh", str(run), "--slots", "4", "--steps", "3"]) == 0
    assert (run / "viz-mfh" / "fig5-same-slot.png").exists()
    assert (run / "viz-mfh" / "fig10-interpolation.png").exists()
    (run / "viz-mfh").rename(tmp_path / "elsewhere")
    (run / "viz-mfh").symlink_to(tmp_path / "elsewhere")  # planted: refused, never written into
    before = sorted((tmp_path / "elsewhere").iterdir())
    assert main(["viz", "mfh", str(run), "--slots", "4", "--steps", "3"]) == 2
    assert sorted((tmp_path / "elsewhere").iterdir()) == before


EVAL_FAST = ["--extractor", "fashion-classifier", "--judge-steps", "20", "--judge-per-class",
             "20", "--hit-exemplars", "2", "--hit-slots", "3"]


def test_eval_command_runs_with_test_extractor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(RECIPES / "mfh-animal-mnist.toml"), *TINY]) == 0
    run = run_dir(tmp_path)
    assert main(["mfh-eval", str(run), *EVAL_FAST, "--per-class", "8",
                 "--episodes", "5", "--supports", "2", "--generated", "2", "--way", "2"]) == 0
    import json
    result = json.loads(next(run.glob("mfh-eval-step-*.json")).read_text())
    assert set(result["per_class"]) == {"horse", "sheep", "zebra"}
    assert result["per_class"]["horse"]["generated"] == 8
    assert [p["way"] for p in result["protonet"]] == [2]
    assert 0 <= result["protonet"][0]["accuracy"] <= 1
    assert set(result["class_hit"]) == {"horse", "sheep", "zebra"}
    for hit in [*result["class_hit"].values(), result["class_hit_mean"]]:
        assert set(hit) == {"hallucinated", "reconstructed", "real"}
        assert all(0 <= v <= 1 for v in hit.values())
    assert "judge only" in result["judge"]["role"] and result["judge"]["steps"] == 20
    assert "base classes only" in result["protonet_features"]["role"]
    horse = result["per_class"]["horse"]
    assert horse["class_hit_images"]["hallucinated"] == 6
    assert horse["slot_pair_ratio"] == pytest.approx(horse["slot_pair_l1"]
                                                     / horse["same_class_real_l1"])
    address = result["address"]
    assert address["log_slots"] == pytest.approx(math.log(10))
    assert 0 <= address["entropy_per_image"] <= address["log_slots"] + 1e-9
    # The real-vs-real floor: 8 further real images of the class, far closer to the scored real
    # images than an untrained G's output is.
    for scores in result["per_class"].values():
        assert scores["real_reference"] == 8
        assert 0 <= scores["fid_real_reference"] < scores["fid"]
    assert result["fid_real_reference_mean"] < result["fid_mean"]
    # Too few held-out images for a disjoint reference set: no floor, said as null, not a number
    # scored on images that overlap the scored ones or the supports.
    assert main(["mfh-eval", str(run), *EVAL_FAST, "--per-class", "8",
                 "--episodes", "2", "--supports", "2", "--generated", "1", "--max-real", "12"]) == 0
    small = json.loads(next(run.glob("mfh-eval-step-*.json")).read_text())
    assert {v["real_reference"] for v in small["per_class"].values()} == {1}
    assert small["fid_real_reference_mean"] is None
    assert [p["way"] for p in small["protonet"]] == [3]          # every class; not 5-way of 3


# -- the measures on hand-checkable cases ----------------------------------------------------------
def test_address_information_of_known_distributions():
    from memcore_mfh.tools import address_information
    n = 8
    uniform = address_information(torch.full((5, n), 1 / n))
    assert uniform["entropy_per_image"] == pytest.approx(math.log(n))
    assert uniform["mutual_information"] == pytest.approx(0, abs=1e-12)
    # each image certain of its own slot, the 8 images on 8 slots: H(slot|image) 0, I = log 8
    onehot = address_information(torch.eye(n))
    assert onehot["entropy_per_image"] == pytest.approx(0, abs=1e-12)
    assert onehot["mutual_information"] == pytest.approx(math.log(n))
    # half of the mass on each of two slots: entropy log 2 per image
    half = torch.zeros(4, n)
    half[:, :2] = 0.5
    info = address_information(half)
    assert info["entropy_per_image"] == pytest.approx(math.log(2))
    assert info["mutual_information"] == pytest.approx(0, abs=1e-12)


def test_mean_pairwise_l1_by_hand():
    from memcore_mfh.tools import mean_pairwise_l1
    images = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    assert mean_pairwise_l1(images) == pytest.approx((1 + 2 + 1) / 3)   # pairs 1, 2, 1
    assert mean_pairwise_l1(images[:1].repeat(4, 1, 1, 1)) == 0


@pytest.mark.parametrize("addressing", ["gumbel", "nearest", "random"])
def test_probabilities_are_distributions_and_random_is_uniform(addressing):
    torch.manual_seed(0)
    G = tiny_generator(addressing=addressing)
    probs = G.memory.probabilities(torch.randn(6, 8))
    assert probs.shape == (6, 10) and torch.allclose(probs.sum(1), torch.ones(6))
    assert (probs == 0.1).all() == (addressing == "random")
    out = G(mode="train", x=batch()[0], labels=batch()[1])
    assert out["pi"].sum(1).eq(1).all()


class Copier(torch.nn.Module):
    """A 'generator' whose every slot returns the exemplar itself: a perfect copier."""

    def __init__(self, k=6):
        super().__init__()
        self.memory = CIMemory(k, 4, 4, 8, "gumbel")
        self.E_cr = torch.nn.Flatten()
        self.E_ci = lambda x: x.flatten(1)[:, :4]
        self.synthesis = lambda cr, ci: cr.view(-1, 1, 4, 4).expand(len(ci), -1, -1, -1)

    def encode_cr(self, x):
        return self.E_cr(x)

    def forward(self, cr, slot):
        return self.synthesis(cr, self.memory.read_slots(slot))


def test_class_hit_of_a_copier_equals_real_and_its_slot_pair_ratio_is_zero():
    """Images generated by copying the exemplar are judged exactly like the real images."""
    from memcore_mfh.judge import TrainedNet
    from memcore_mfh.tools import class_measures, mean_pairwise_l1
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 4, 4) * 2 - 1

    class Judge(TrainedNet):               # class 1 where the first pixel is positive
        def __init__(self):
            pass

        def predict(self, x):
            return (x.flatten(1)[:, 0] > 0).long()

    judge = Judge()
    with torch.no_grad():
        hallucinated, reconstructed, probs = class_measures(Copier(), images, gen, 5, 3)
    assert hallucinated.shape == (5, 3, 1, 4, 4)
    real_hit = (judge.predict(images) == 1).double().mean()
    assert (judge.predict(reconstructed) == 1).double().mean() == real_hit
    assert all(mean_pairwise_l1(h) == 0 for h in hallucinated)
    assert probs.shape == (12, 6)


def test_judge_training_is_seeded_and_learns_a_separable_task():
    from memcore_mfh.judge import train_classifier
    torch.manual_seed(0)
    images = torch.rand(64, 1, 8, 8) * 2 - 1
    labels = torch.arange(64) % 2
    images[labels == 1, :, :4] = 1.0                        # class 1: a white upper half
    a, b = (train_classifier(images, labels, 2, 60, seed=3) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
    assert (a.predict(images) == labels).double().mean() > 0.95
    assert a.features(images).shape == (64, 64)


def test_cr_head_gives_class_logits_of_e_cr_and_the_loss_needs_it():
    torch.manual_seed(0)
    G = tiny_generator(cr_head=True)
    x, y = batch()
    out = G(mode="train", x=x, labels=y)
    torch.testing.assert_close(out["cr_logits"], G.cr_classifier(G.E_cr(x)))
    assert "cr_logits" not in tiny_generator()(mode="train", x=x, labels=y)
    D = Discriminator(DiscriminatorOptions(width=8),
                      memcore.BuildContext(resolution=28, channels=1, num_classes=4))
    loss = losses.CRCategory(memcore.LossOptions())
    loss.on_build(memcore.Models(G=G, D=D, G_ema=None, augment=None, losses=[]))
    with pytest.raises(memcore.MemcoreError, match="cr_head = true"):
        loss.on_build(memcore.Models(G=tiny_generator(), D=D, G_ema=None, augment=None,
                                     losses=[]))


def test_protonet_ways():
    from memcore_mfh.tools import protonet_ways
    assert protonet_ways(0, 3) == [3] and protonet_ways(0, 5) == [5]
    assert protonet_ways(0, 26) == [26, 5] and protonet_ways(4, 26) == [4]


def test_sample_latent_rules():
    torch.manual_seed(0)
    G = tiny_generator().eval()
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(memcore.MemcoreError, match="no exemplar"):
        G.sample_latent(4, gen, "cpu")
    with pytest.raises(memcore.MemcoreError, match="shape"):
        G.sample_latent(4, gen, "cpu", exemplar=torch.zeros(1, 3, 28, 28))
    lat = G.sample_latent(6, gen, "cpu", exemplar=torch.zeros(2, 1, 28, 28))
    assert lat["slot"].unique().numel() == 6        # distinct slots while n <= memory size
    assert torch.allclose(lat["cr"][0], G.E_cr(torch.zeros(2, 1, 28, 28)).mean(0), atol=1e-6)


def test_protonet_way_draws_that_many_classes_per_episode():
    """--way 5 (Table 2's 5-way 1-shot): each episode is a random 5 of the novel classes. With
    features that are the class index, the nearest prototype is always right, and a 2-way episode
    with uninformative features is right about half the time, not a third."""
    from memcore_mfh.tools import episode_classes, protonet_accuracy
    gen = torch.Generator().manual_seed(0)
    draws = [episode_classes(list(range(8)), 5, gen) for _ in range(50)]
    assert all(len(set(d)) == 5 for d in draws) and len({tuple(sorted(d)) for d in draws}) > 1
    assert episode_classes([3, 1, 2], 0, gen) == [3, 1, 2]
    labels = torch.arange(8).repeat_interleave(6)
    pool = {c: torch.nonzero(labels == c)[:2, 0].tolist() for c in range(8)}
    generated = {c: [torch.zeros(0, 1, dtype=torch.float64)] * 2 for c in range(8)}
    exact = labels[:, None].double()
    (acc, _), _ = protonet_accuracy(exact, labels, pool, generated, 20, 3, gen, way=5)
    assert acc == 1.0
    noise = torch.zeros(len(labels), 1, dtype=torch.float64)          # ties: argmin picks the first
    (acc2, _), _ = protonet_accuracy(noise, labels, pool, generated, 200, 3, gen, way=2)
    assert acc2 == 0.5


def test_eval_refuses_a_way_beyond_the_novel_classes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(RECIPES / "mfh-animal-mnist.toml"), *TINY, "--set", "train.steps=1",
                 "--set", "train.checkpoint_every=1"]) == 0
    assert main(["mfh-eval", str(run_dir(tmp_path)), "--way", "5",
                 "--extractor", "fashion-classifier"]) == 2
    assert "--way 5: the run has only 3 novel classes" in capsys.readouterr().err
