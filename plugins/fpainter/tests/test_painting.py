"""The learning rules against direct per-step computations, and the fast form against the loop."""
import pytest
import torch

from memcore_fpainter.painting import paint, paint_loop, paint_steps


def strokes(b=2, c=3, steps=5, height=6, width=7, lr_dim=1, seed=0, unit_values=False):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(b, c, steps, width, generator=g).mul(2).softmax(-1)
    values = torch.randn(b, c, steps, height, generator=g)
    if unit_values:
        values = torch.nn.functional.normalize(values, dim=-1)
    lrs = torch.rand(b, c, steps, lr_dim, generator=g)
    return keys, values, lrs


def direct(keys, values, lrs, rule):
    """One canvas at a time, one step at a time, with torch.outer: the equations as written."""
    out = torch.zeros(*keys.shape[:2], values.shape[-1], keys.shape[-1])
    for i in range(keys.shape[0]):
        for c in range(keys.shape[1]):
            W = torch.zeros(values.shape[-1], keys.shape[-1])
            for t in range(keys.shape[2]):
                k, v, b = keys[i, c, t], values[i, c, t], lrs[i, c, t]
                if rule == "delta":
                    W = W + torch.outer(b * (v - W @ k), k)
                elif rule == "hebbian":
                    W = W + torch.outer(v, k)
                else:
                    W = W + b * torch.outer(v, k - W.T @ v)
            out[i, c] = W
    return out


@pytest.mark.parametrize("rule,lr_dim", [("delta", 1), ("delta", 6), ("hebbian", 1), ("oja", 1)])
@pytest.mark.parametrize("fn", [paint_loop, paint])
def test_rule_matches_direct_reference_non_square(rule, lr_dim, fn):
    keys, values, lrs = strokes(lr_dim=lr_dim, unit_values=rule == "oja")
    expected = direct(keys, values, lrs, rule)
    got = fn(keys, values, lrs, rule)
    assert got.shape == (2, 3, 6, 7)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_two_delta_steps_by_hand():
    keys, values, lrs = strokes(b=1, c=1, steps=2, height=3, width=4)
    k1, k2, v1, v2 = keys[0, 0, 0], keys[0, 0, 1], values[0, 0, 0], values[0, 0, 1]
    b1, b2 = lrs[0, 0, 0, 0], lrs[0, 0, 1, 0]
    W1 = b1 * torch.outer(v1, k1)                  # W_0 = 0: the delta term vanishes
    W2 = W1 + b2 * torch.outer(v2 - W1 @ k2, k2)
    for fn in (paint_loop, paint):
        torch.testing.assert_close(fn(keys[:, :, :1], values[:, :, :1], lrs[:, :, :1])[0, 0], W1)
        torch.testing.assert_close(fn(keys, values, lrs)[0, 0], W2)


def test_hebbian_is_the_sum_of_outer_products():
    keys, values, _ = strokes(steps=9)
    expected = torch.einsum("bctv,bctk->bcvk", values, keys)
    torch.testing.assert_close(paint(keys, values, None, "hebbian"), expected)
    torch.testing.assert_close(paint_loop(keys, values, None, "hebbian"), expected)


@pytest.mark.parametrize("rule", ["delta", "hebbian", "oja"])
def test_rank_after_t_steps_is_at_most_t(rule):
    keys, values, lrs = (x.double() for x in strokes(b=1, c=2, steps=4, height=12, width=12,
                                                     unit_values=True))
    rank = torch.linalg.matrix_rank(paint(keys, values, lrs, rule))
    assert (rank == 4).all()                        # <= T always; generic strokes: exactly T


@pytest.mark.parametrize("lr_dim", [1, 64])
def test_fast_equals_loop_at_paper_size_with_gradients(lr_dim):
    keys, values, lrs = strokes(b=2, c=3, steps=64, height=64, width=64, lr_dim=lr_dim)
    grads = []
    for fn in (paint_loop, paint):
        inputs = [x.clone().requires_grad_() for x in (keys, values, lrs)]
        out = fn(*inputs, "delta")
        out.square().sum().backward()
        grads.append((out.detach(), [x.grad for x in inputs]))
    (loop_out, loop_grads), (fast_out, fast_grads) = grads
    assert (fast_out - loop_out).abs().max() < 1e-5
    for a, b in zip(loop_grads, fast_grads):
        assert (a - b).abs().max() < 1e-4 * max(1.0, a.abs().max().item())


def test_steps_are_rank_one_and_sum_to_the_canvas():
    keys, values, lrs = strokes(steps=6)
    updates, canvases = paint_steps(keys, values, lrs, "delta")
    assert updates.shape == canvases.shape == (2, 3, 6, 6, 7)
    assert (torch.linalg.matrix_rank(updates, rtol=1e-5) == 1).all()
    torch.testing.assert_close(canvases[:, :, -1], paint_loop(keys, values, lrs))
    torch.testing.assert_close(canvases[:, :, 2], paint_loop(keys[:, :, :3], values[:, :, :3],
                                                             lrs[:, :, :3]))


def test_oja_rejects_vector_learning_rates():
    keys, values, lrs = strokes(lr_dim=6)
    with pytest.raises(ValueError, match="oja"):
        paint(keys, values, lrs, "oja")


def test_oja_softmax_matches_the_code_formula_step_by_step():
    """The code's Oja variant, W += b v softmax(softmax(k) - W^T v)^T, written out per step with
    torch.outer on raw key logits (the rule receives the already-softmaxed keys)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, 7, generator=g)
    values = torch.randn(2, 3, 5, 6, generator=g)
    lrs = torch.rand(2, 3, 5, 1, generator=g)
    expected = torch.zeros(2, 3, 6, 7)
    for i in range(2):
        for c in range(3):
            W = torch.zeros(6, 7)
            for t in range(5):
                v, b = values[i, c, t], lrs[i, c, t]
                corrected = torch.softmax(torch.softmax(logits[i, c, t], 0) - W.T @ v, 0)
                W = W + b * torch.outer(v, corrected)
            expected[i, c] = W
    keys = logits.softmax(-1)
    for fn in (paint_loop, paint):
        torch.testing.assert_close(fn(keys, values, lrs, "oja-softmax"), expected)
    updates, canvases = paint_steps(keys, values, lrs, "oja-softmax")
    torch.testing.assert_close(canvases[:, :, -1], expected)
    linear = paint(keys, values, lrs, "oja")
    assert not torch.allclose(linear, expected, atol=1e-3)     # a different rule than linear Oja


@pytest.mark.parametrize("lr_dim", [1, 6])
def test_delta_rule_under_bf16_autocast(lr_dim):
    """train.precision = "bf16": the fast delta form trains (torch has no bf16 triangular solve;
    the solve runs in float32) and stays close to the float32 canvas."""
    keys, values, lrs = strokes(lr_dim=lr_dim)
    expected = paint(keys, values, lrs, "delta")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = paint(keys.bfloat16(), values.bfloat16(), lrs.bfloat16(), "delta")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.05)
