"""The Memory protocol in one process: staging, commit points, eval policy, stats, EMA copy."""
import pytest
import torch
from torch import nn

import memcore
from memcore.ema import update_ema
from memcore.memory import commit_all, memories_in


class Log(memcore.Memory):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.register_buffer("sum", torch.zeros(3))
        self.register_buffer("draws", torch.zeros(0))

    def write(self, items, generator):
        assert not torch.is_grad_enabled()
        self.sum += items["x"].sum(0)
        self.draws = torch.cat([self.draws, torch.rand(1, generator=generator)])

    def forward(self, x):
        self.stage(x=x)
        return x * 2


def test_stage_then_commit_outside_autograd():
    m = Log()
    x = torch.ones(4, 3, requires_grad=True)
    y = m(x)
    assert y.requires_grad and torch.equal(m.sum, torch.zeros(3))  # nothing written yet
    m.commit()
    assert torch.equal(m.sum, torch.full((3,), 4.0)) and m.sum.grad_fn is None
    assert int(m.write_count) == 1
    m.commit()  # nothing staged: no write
    assert int(m.write_count) == 1


def test_stage_refuses_other_names_before_a_commit():
    m = Log()
    m.stage(x=torch.ones(1, 3))
    for names in [{"key": torch.ones(1, 3)}, {"x": torch.ones(1, 3), "y": torch.ones(1, 3)}, {}]:
        with pytest.raises(ValueError, match=r"Log.stage\(.*\): every stage\(\) before a commit "
                                             r"must name the same rows as the first one \(x\)"):
            m.stage(**names)
    m.stage(x=torch.ones(2, 3))  # the same names: fine, and so after the commit any names
    m.commit()
    assert torch.equal(m.sum, torch.full((3,), 3.0))
    m.stage(y=torch.ones(1, 3))
    m.discard_staged()


def test_eval_mode_policy():
    m = Log().eval()
    m(torch.ones(2, 3))
    m.commit()
    assert int(m.write_count) == 0
    m = Log(write_in_eval=True).eval()
    m(torch.ones(2, 3))
    m.commit()
    assert int(m.write_count) == 1


def test_write_at_forward_commits_immediately():
    class Now(Log):
        write_at = "forward"
    m = Now()
    m(torch.ones(2, 3))
    assert torch.equal(m.sum, torch.full((3,), 2.0))


def test_commit_points_and_discard():
    m = Log()
    m(torch.ones(1, 3))
    commit_all([m], "after_G")
    assert int(m.write_count) == 0  # declared after_D
    commit_all([m], "after_D")
    assert int(m.write_count) == 1
    m(torch.ones(1, 3))
    m.discard_staged()
    m.commit()
    assert int(m.write_count) == 1


def test_write_randomness_is_reproducible_from_the_counter():
    a, b = Log(seed=5), Log(seed=5)
    for m in (a, b):
        for _ in range(3):
            m(torch.ones(1, 3))
            m.commit()
    assert torch.equal(a.draws, b.draws) and len(set(a.draws.tolist())) == 3
    c = Log(seed=5)
    c.load_state_dict({k: v for k, v in a.state_dict().items() if k != "draws"}, strict=False)
    c(torch.ones(1, 3))
    c.commit()
    a(torch.ones(1, 3))
    a.commit()
    assert c.draws[-1] == a.draws[-1]  # resumed from the counter: same next draw


def test_bad_sync_policy_is_named():
    class Bad(Log):
        sync = "everyone"
    m = Bad()
    m(torch.ones(1, 3))
    with pytest.raises(ValueError, match="expected one of"):
        m.commit()


def test_slot_statistics():
    s = memcore.slot_statistics(torch.tensor([2.0, 2.0, 0.0, 0.0]))
    assert s["used"] == 2 and s["dead"] == 2
    assert abs(s["entropy"] - torch.log(torch.tensor(2.0)).item()) < 1e-6
    assert abs(s["perplexity"] - 2.0) < 1e-6


def test_memories_found_and_ema_copies_memory_buffers():
    G = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), Log())
    assert list(memories_in(G, None)) == ["G.2"]
    ema = __import__("copy").deepcopy(G)
    G(torch.randn(4, 3))
    G[2].commit()
    update_ema(ema, G, decay=0.9, average_buffers=True)
    assert torch.equal(ema[2].sum, G[2].sum)  # copied, not averaged
    assert not torch.equal(ema[1].running_mean, G[1].running_mean)  # averaged
    assert torch.allclose(ema[1].running_mean, 0.1 * G[1].running_mean)
