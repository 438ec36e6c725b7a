"""The MoCA block and its prototype memory, against direct computations on tiny sizes."""
import pytest
import torch

import memcore
from memcore_moca.moca import MocaBlock, MocaOptions, PrototypeMemory, kmeans, nearest


def make_block(channels=8, res=4, **options):
    options.setdefault("cells", 3)
    options.setdefault("prototypes", 5)
    options.setdefault("warmup", 1)
    ctx = memcore.BuildContext(resolution=res, channels=channels, seed=0)
    return MocaBlock(MocaOptions(at=res, **options), ctx)


def commit_keys(memory, keys):
    memory.stage(key=keys)
    memory.commit()


def warmed_block(**options):
    """A block whose memory has been filled and clustered (ready), with γ != 0."""
    torch.manual_seed(0)
    block = make_block(**options)
    block.train()
    block(torch.randn(4, 8, 4, 4))
    block.memory.commit()
    assert bool(block.memory.ready)
    with torch.no_grad():
        block.gamma.fill_(0.7)
    return block


@pytest.mark.parametrize("paths", ["both", "moca", "sa"])
@pytest.mark.parametrize("softmax", ["joint", "separate"])
def test_shapes_and_identity_at_init(paths, softmax):
    block = make_block(paths=paths, softmax=softmax)
    x = torch.randn(2, 8, 4, 4)
    y = block(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)  # γ = 0 at start
    assert (block.memory is None) == (paths == "sa")


def closest_cell(cells, a, rule):
    """The routing rules written out for one column: Euclidean (paper), cosine, dot product."""
    if rule == "euclidean":
        return min(range(len(cells)), key=lambda j: float((cells[j] - a).norm()))
    if rule == "cosine":
        return max(range(len(cells)), key=lambda j: float(cells[j] @ a / (cells[j].norm() * a.norm())))
    return max(range(len(cells)), key=lambda j: float(cells[j] @ a))


def reference_read(block, x, rule="euclidean"):
    """Per-column loop: nearest cell, softmax over its prototypes, self-attention over positions."""
    b, c, h, w = x.shape
    q = block.theta(x).flatten(2)                       # (B, d, N)
    k = block.phi(x).flatten(2)
    v = block.psi(x).flatten(2) if block.psi is not None else None
    mem = block.memory
    protos = mem.prototypes.view(mem.num_cells, mem.size, -1)
    out = torch.zeros(b, q.shape[1], h * w)
    for i in range(b):
        for n in range(h * w):
            a = q[i, :, n]
            cell = closest_cell(mem.cells, a, rule)
            s_mem = protos[cell] @ a                    # (T,)
            parts = [s_mem]
            if block.paths == "both":
                parts.append(k[i].T @ a)                # (N,)
            if block.softmax == "joint":
                beta = torch.cat(parts).softmax(0)
                beta_mem, beta_ctx = beta[:mem.size], beta[mem.size:]
            else:
                beta_mem = s_mem.softmax(0)
                beta_ctx = parts[1].softmax(0) if len(parts) > 1 else None
            h_read = protos[cell].T @ beta_mem
            if block.paths == "both":
                h_read = h_read + v[i] @ beta_ctx
            out[i, :, n] = h_read
    return x + block.gamma * block.out(out.view(b, -1, h, w))


@pytest.mark.parametrize("paths", ["both", "moca"])
@pytest.mark.parametrize("softmax", ["joint", "separate"])
def test_read_matches_loop(paths, softmax):
    block = warmed_block(paths=paths, softmax=softmax).eval()
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), reference_read(block, x), atol=1e-5)


def test_paper_softmax_is_the_default():
    assert MocaOptions(at=4).softmax == "separate"
    assert MocaOptions(at=4).routing == "euclidean"
    assert MocaOptions(at=4).slot_momentum == 1.0 and MocaOptions(at=4).key_update == "g-step"


def test_fastgan_code_routing_reads_by_cosine():
    """The code's read: argmax cosine(θ row, prototype mean) picks the cell (mean vectors made
    such that cosine and Euclidean disagree)."""
    block = warmed_block(routing="fastgan-code").eval()
    with torch.no_grad():
        block.memory.cells.mul_(torch.tensor([[0.1], [1.0], [8.0]]))
    x = torch.randn(2, 8, 4, 4)
    q = block.theta(x).flatten(2).transpose(1, 2).reshape(-1, block.memory.cells.shape[1])
    cosine = (torch.nn.functional.normalize(q, dim=1)
              @ torch.nn.functional.normalize(block.memory.cells, dim=1).T).argmax(1)
    assert torch.equal(block.memory.route(q), cosine)
    assert not torch.equal(cosine, torch.cdist(q, block.memory.cells).argmin(1))
    with torch.no_grad():
        assert torch.allclose(block(x), reference_read(block, x, "cosine"), atol=1e-5)


def test_fastgan_code_routing_writes_by_dot_product():
    memory = PrototypeMemory(torch.randn(2, 8, 1, 1), cells=2, prototypes=1, warmup=1,
                             kmeans_iters=5, routing="fastgan-code")
    memory.train()
    commit_keys(memory, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    memory.cells.copy_(torch.tensor([[1.0, 0.0], [4.0, 4.0]]))
    memory.prototypes.copy_(memory.cells)
    key = torch.tensor([[1.2, 0.1]])       # Euclidean: cell 0; dot product: 1.2 vs 5.2 -> cell 1
    assert int(nearest(key, memory.cells)[0]) == 0
    commit_keys(memory, key)
    assert torch.equal(memory.prototypes, torch.tensor([[1.0, 0.0], [1.2, 0.1]]))


@pytest.mark.parametrize("m", [1.0, 0.3])
def test_slot_momentum_blends_as_cp_momentum(m):
    """The code's write: slot <- (1 - m)·slot + m·key (m = cp_momentum; 1 = replacement)."""
    memory = PrototypeMemory(torch.randn(2, 8, 1, 1), cells=1, prototypes=1, warmup=1,
                             kmeans_iters=5, slot_momentum=m)
    memory.train()
    commit_keys(memory, torch.tensor([[2.0, -1.0]]))             # warm-up: the key itself
    assert torch.equal(memory.prototypes, torch.tensor([[2.0, -1.0]]))
    key = torch.tensor([[0.5, 3.0]])
    commit_keys(memory, key)
    expected = (1 - m) * torch.tensor([[2.0, -1.0]]) + m * key
    assert torch.allclose(memory.prototypes, expected) and torch.allclose(memory.cells, expected)


def test_bad_slot_momentum_is_refused():
    from memcore.config import structure
    with pytest.raises(memcore.RecipeError, match="slot_momentum"):
        structure({"at": 4, "slot_momentum": 0.0}, MocaOptions, "block")


def test_routing_picks_nearest_cell():
    block = warmed_block()
    q = torch.randn(50, block.memory.cells.shape[1])
    routed = block.memory.route(q)
    dist = torch.cdist(q, block.memory.cells)
    assert torch.equal(routed, dist.argmin(1))


def test_sa_only_matches_plain_self_attention():
    block = make_block(paths="sa")
    with torch.no_grad():
        block.gamma.fill_(1.0)
    x = torch.randn(2, 8, 4, 4)
    q, k, v = (f(x).flatten(2) for f in (block.theta, block.phi, block.psi))
    attn = (q.transpose(1, 2) @ k).softmax(-1)          # (B, N, N)
    expected = x + block.out((v @ attn.transpose(1, 2)).view(2, -1, 4, 4))
    assert torch.allclose(block(x), expected, atol=1e-5)


def test_kmeans_separates_blobs():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0., 0.], [10., 0.], [0., 10.], [10., 10.]])
    points = torch.cat([c + 0.3 * torch.randn(40, 2, generator=gen) for c in centres])
    found, assign = kmeans(points, 4, 50, torch.Generator().manual_seed(1))
    for blob in range(4):
        labels = assign[blob * 40:(blob + 1) * 40]
        assert (labels == labels[0]).all()               # every blob in one cluster
    assert len(set(assign.tolist())) == 4                # ... and distinct clusters
    matched = nearest(centres, found)[1].sqrt()
    assert (matched < 0.3).all()


def blob_keys(n_per=40, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:3] * 10
    return torch.cat([c + 0.1 * torch.randn(n_per, dim, generator=gen) for c in centres]), centres


def test_warmup_forms_cells_without_off_by_one():
    memory = PrototypeMemory(torch.randn(4, 8, 1, 1), cells=3, prototypes=5, warmup=2,
                             kmeans_iters=20)
    memory.train()
    keys, centres = blob_keys()
    commit_keys(memory, keys[torch.randperm(len(keys))])
    assert not bool(memory.ready)
    commit_keys(memory, keys[torch.randperm(len(keys))])
    assert bool(memory.ready)                            # the warm-up-th write forms the cells
    protos = memory.prototypes.view(3, 5, 4)
    # each cell holds the members of exactly one blob, and is their mean
    blob_of = nearest(protos.reshape(-1, 4), centres)[0].view(3, 5)
    assert (blob_of == blob_of[:, :1]).all() and len(set(blob_of[:, 0].tolist())) == 3
    assert torch.allclose(memory.cells, protos.mean(1))
    # the very next write is routed (no unclustered overwrite as in the code's off-by-one)
    before = memory.prototypes.clone()
    new = centres[1:2] + 0.05 * torch.randn(6, 4)
    commit_keys(memory, new)
    changed = (memory.prototypes != before).any(1).nonzero().squeeze(1)
    target = int(nearest(new[:1], before.view(3, 5, 4).mean(1))[0])
    assert len(changed) > 0 and (changed // 5 == target).all()


def test_writes_land_in_nearest_cell_and_means_follow():
    block = warmed_block()
    memory = block.memory
    for step in range(3):
        cells_before = memory.cells.clone()
        before = memory.prototypes.clone()
        keys = torch.randn(7, memory.cells.shape[1]) * 3
        commit_keys(memory, keys)
        changed = (memory.prototypes != before).any(1).nonzero().squeeze(1)
        expected_cells = nearest(keys, cells_before)[0]
        assert set((changed // memory.size).tolist()) <= set(expected_cells.tolist())
        # every written prototype is one of the keys, in the key's own cell
        for slot in changed.tolist():
            row = (keys == memory.prototypes[slot]).all(1).nonzero().squeeze(1)
            assert len(row) >= 1 and int(expected_cells[row[-1]]) == slot // memory.size
        assert torch.allclose(memory.cells, memory.prototypes.view(3, 5, -1).mean(1))


def test_duplicate_slot_keeps_last_row():
    memory = PrototypeMemory(torch.randn(2, 8, 1, 1), cells=1, prototypes=1, warmup=1,
                             kmeans_iters=5)
    memory.train()
    commit_keys(memory, torch.zeros(1, 2))
    commit_keys(memory, torch.tensor([[1., 1.], [2., 2.], [3., 3.]]))
    assert torch.equal(memory.prototypes, torch.tensor([[3., 3.]]))


def test_writes_outside_autograd_and_only_at_commit():
    block = warmed_block()
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    before = block.memory.prototypes.clone()
    y = block(x)
    assert torch.equal(block.memory.prototypes, before)   # staged, not written
    staged = block.memory._staged[0]
    assert not staged["key"].requires_grad
    y.sum().backward()
    assert block.theta.weight.grad is not None and block.phi.weight.grad is not None
    assert all(not b.requires_grad for b in block.memory.buffers())
    block.memory.commit()
    assert not torch.equal(block.memory.prototypes, before)
    assert not block.memory.prototypes.requires_grad


def test_eval_mode_does_not_write_unless_asked():
    block = warmed_block().eval()
    before = block.memory.state_dict()
    block(torch.randn(2, 8, 4, 4))
    block.memory.commit()
    assert all(torch.equal(v, before[k]) for k, v in block.memory.state_dict().items())
    writer = warmed_block(write_in_eval=True).eval()
    before = writer.memory.prototypes.clone()
    writer(torch.randn(2, 8, 4, 4))
    writer.memory.commit()
    assert not torch.equal(writer.memory.prototypes, before)


class _Ctx:
    def __init__(self, pass_name):
        self.pass_name, self.phase = pass_name, pass_name[0]


@pytest.mark.parametrize("momentum", [0.6, 0.999, 0.0])
def test_momentum_update_formula(momentum):
    block = make_block(momentum=momentum)
    with torch.no_grad():
        block.phi.weight.add_(1.0)                       # φ moved by an optimizer step
    old = block.memory.key_encoder.weight.clone()
    block.after_phase(_Ctx("D"))                         # only after the G step
    assert torch.equal(block.memory.key_encoder.weight, old)
    block.after_phase(_Ctx("G"))
    expected = momentum * old + (1 - momentum) * block.phi.weight
    assert torch.allclose(block.memory.key_encoder.weight, expected)


def test_key_update_on_every_forward_after_warmup():
    """The code's φ_k: after the warm-up, each forward that writes moves it once,
    φ_k <- m·φ_k + (1-m)·φ; the G step does not."""
    block = make_block(momentum=0.6, key_update="forward", warmup=1)
    block.train()
    old = block.memory.key_encoder.weight.clone()
    with torch.no_grad():
        block.phi.weight.add_(1.0)
    block(torch.randn(2, 8, 4, 4))                       # warm-up forward: φ̃ unchanged
    assert torch.equal(block.memory.key_encoder.weight, old)
    block.memory.commit()                                # the cells are formed
    for _ in range(2):                                   # D-phase and G-phase forwards
        staged_before = len(block.memory._staged)
        block(torch.randn(2, 8, 4, 4))
        old = 0.6 * old + 0.4 * block.phi.weight
        assert torch.allclose(block.memory.key_encoder.weight, old)
        # the keys of this forward were encoded before the update, as in the code
        assert len(block.memory._staged) == staged_before + 1
    block.after_phase(_Ctx("G"))
    assert torch.allclose(block.memory.key_encoder.weight, old)
    block.eval()(torch.randn(2, 8, 4, 4))                # no writes in eval: no update either
    assert torch.allclose(block.memory.key_encoder.weight, old)


def test_key_encoder_saved_and_device_following():
    block = warmed_block()
    names = block.state_dict().keys()
    assert "memory.key_encoder.weight" in names and "memory.prototypes" in names
    assert "memory.key_encoder.weight" not in dict(block.named_parameters())
    block.to(torch.float64)
    assert block.memory.key_encoder.weight.dtype == torch.float64
    assert block.memory.prototypes.dtype == torch.float64
    block(torch.randn(1, 8, 4, 4, dtype=torch.float64))


def test_state_dict_round_trip_restores_memory_and_encoder():
    block = warmed_block()
    for _ in range(2):
        block(torch.randn(2, 8, 4, 4))
        block.memory.commit()
        block.after_phase(_Ctx("G"))
    fresh = make_block()
    fresh.load_state_dict(block.state_dict())
    for (k, a), b in zip(block.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.randn(2, 8, 4, 4)
    block.eval(), fresh.eval()
    assert torch.equal(block(x), fresh(x))


def test_stats_report_usage():
    block = warmed_block()
    block(torch.randn(2, 8, 4, 4))
    block.memory.commit()
    stats = block.memory.stats()
    assert stats["cells_used"] + stats["cells_dead"] == 3
    assert stats["cells_used"] >= 1 and stats["routing_entropy"] >= 0
    assert 0 <= stats["prototypes_dead"] <= 15


def test_table6_single_cell_of_8192():
    block = make_block(channels=8, cells=1, prototypes=8192)
    block.train()
    block(torch.randn(2, 8, 4, 4))
    block.memory.commit()
    assert bool(block.memory.ready) and block.memory.prototypes.shape == (8192, 8)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    assert block(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)


def test_feature_noise_hook_changes_output():
    from memcore_moca.commands import _noise_hook
    block = warmed_block().eval()
    x = torch.randn(2, 8, 4, 4)
    clean = block(x)
    hook = block.register_forward_pre_hook(_noise_hook(0.5, torch.Generator().manual_seed(0)))
    noisy = block(x)
    hook.remove()
    assert not torch.allclose(clean, noisy)
    assert torch.equal(block(x), clean)
