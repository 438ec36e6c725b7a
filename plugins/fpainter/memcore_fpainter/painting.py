"""The painting op: T rank-one updates of a canvas by a synaptic learning rule.

Each canvas (one image channel) is a fast weight matrix W of shape (height, width) = (S_v, S_k),
starting from W_0 = 0. At step t a key k_t (S_k, already through softmax), a value v_t (S_v) and a
learning rate b_t (a scalar, or one per canvas row) update it:

    delta    W_t = W_{t-1} + b_t (v_t - W_{t-1} k_t) k_t^T         (eq. 9 of the paper)
    hebbian  W_t = W_{t-1} + v_t k_t^T                              (linear-transformer rule, b = 1)
    oja      W_t = W_{t-1} + b_t v_t (k_t - W_{t-1}^T v_t)^T        (Oja's subspace rule)
    oja-softmax  W_t = W_{t-1} + b_t v_t softmax(k_t - W_{t-1}^T v_t)^T   (the authors' code's
             Oja variant: the key softmax applied again to the corrected key)

Every rule leaves W_T = sum_t l_t r_t^T, a sum of T outer products whose factors can be computed
for all steps at once:

* hebbian: l_t = v_t, r_t = k_t.
* delta: r_t = k_t and the "pseudo-values" u_t = b_t (v_t - sum_{s<t} u_s k_s^T k_t) satisfy the
  unit lower-triangular system (I + tril(diag(b) K K^T, -1)) U = diag(b) V (the UT / WY form of
  DeltaNet), one triangular solve instead of T sequential matrix-vector products.
* oja: (I - b v v^T) W + b v k^T is the delta rule on W^T with keys and values swapped, so
  l_t = v_t and r_t comes from the same solve with K and V exchanged.
* oja-softmax: l_t = b_t v_t, r_t = softmax(k_t - W_{t-1}^T v_t). The softmax makes r_t a
  non-linear function of the canvas, so the factors are computed step by step (no closed form).

Leading dimensions (images, channels) are batch dimensions throughout: no Python loop over them.
``paint_loop`` is the straightforward step-by-step reference the fast form is tested against.
"""
from __future__ import annotations

from typing import Literal

import torch

Rule = Literal["delta", "hebbian", "oja", "oja-softmax"]


def paint_loop(keys: torch.Tensor, values: torch.Tensor, lrs: torch.Tensor | None,
               rule: Rule = "delta") -> torch.Tensor:
    """Reference: apply the rule step by step. keys (..., T, S_k), values (..., T, S_v),
    lrs (..., T, 1) or (..., T, S_v) (ignored by hebbian) -> canvas (..., S_v, S_k)."""
    canvas = keys.new_zeros(*keys.shape[:-2], values.shape[-1], keys.shape[-1])
    for t in range(keys.shape[-2]):
        k, v = keys[..., t, :], values[..., t, :]                                  # (..., S)
        if rule == "hebbian":
            update = v[..., :, None] * k[..., None, :]
        elif rule == "delta":
            recall = (canvas @ k[..., :, None])[..., 0]                              # W k: (..., S_v)
            update = (lrs[..., t, :] * (v - recall))[..., :, None] * k[..., None, :]
        elif rule == "oja":
            back = (canvas.transpose(-1, -2) @ v[..., :, None])[..., 0]              # W^T v: (..., S_k)
            update = (lrs[..., t, :] * v)[..., :, None] * (k - back)[..., None, :]
        elif rule == "oja-softmax":
            back = (canvas.transpose(-1, -2) @ v[..., :, None])[..., 0]
            update = (lrs[..., t, :] * v)[..., :, None] * (k - back).softmax(-1)[..., None, :]
        else:
            raise ValueError(f"unknown learning rule {rule!r}")
        canvas = canvas + update
    return canvas


def _solve_unit_lower(system: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """system⁻¹ rhs for unit lower-triangular systems. Half-precision inputs (what autocast gives
    under train.precision = "bf16"/"fp16") are solved in float32: torch has no half-precision
    triangular solve, and a T-step substitution in bf16 would lose the delta rule's corrections."""
    dtype = torch.promote_types(system.dtype, rhs.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        return _solve_unit_lower(system.float(), rhs.float()).to(dtype)
    return torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)


def delta_pseudo_values(keys: torch.Tensor, values: torch.Tensor, lrs: torch.Tensor) -> torch.Tensor:
    """u_t of the delta rule for all t: keys (..., T, S_k), values (..., T, S_v), lrs (..., T, 1)
    or (..., T, S_v) -> (..., T, S_v), so that W_T = U^T K."""
    steps = keys.shape[-2]
    gram = keys @ keys.transpose(-1, -2)                                              # (..., T, T)
    eye = torch.eye(steps, dtype=keys.dtype, device=keys.device)
    if lrs.shape[-1] == 1:
        # one system for the whole canvas: rows of A are scaled by b_t
        system = eye + torch.tril(lrs * gram, diagonal=-1)                            # (..., T, T)
        return _solve_unit_lower(system, lrs * values)
    # one learning rate per canvas row: every row is its own delta rule, one T x T system each
    row_lrs = lrs.transpose(-1, -2)[..., :, :, None]                                  # (..., S_v, T, 1)
    system = eye + torch.tril(row_lrs * gram[..., None, :, :], diagonal=-1)           # (..., S_v, T, T)
    targets = (lrs * values).transpose(-1, -2)[..., None]                             # (..., S_v, T, 1)
    rows = _solve_unit_lower(system, targets)
    return rows[..., 0].transpose(-1, -2)                                             # (..., T, S_v)


def oja_softmax_factors(keys: torch.Tensor, values: torch.Tensor,
                        lrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors of the oja-softmax rule, one step at a time: W_{t-1}^T v_t is read from the
    factors so far (sum_s r_s (l_s . v_t)), so no canvas is materialised."""
    left = lrs * values                                                               # (..., T, S_v)
    right = keys[..., :0, :]                                                          # (..., t, S_k)
    for t in range(keys.shape[-2]):
        back = ((left[..., :t, :] @ values[..., t, :, None]) * right).sum(-2)         # W^T v
        right = torch.cat([right, (keys[..., t, :] - back).softmax(-1)[..., None, :]], dim=-2)
    return left, right


def rank_one_factors(keys: torch.Tensor, values: torch.Tensor, lrs: torch.Tensor | None,
                     rule: Rule = "delta") -> tuple[torch.Tensor, torch.Tensor]:
    """(left (..., T, S_v), right (..., T, S_k)) with W_T = sum_t left_t right_t^T."""
    if rule == "hebbian":
        return values, keys
    if rule == "delta":
        return delta_pseudo_values(keys, values, lrs), keys
    if rule == "oja":
        if lrs.shape[-1] != 1:
            raise ValueError("the oja rule takes one learning rate per step (a scalar)")
        return values, delta_pseudo_values(values, keys, lrs)
    if rule == "oja-softmax":
        if lrs.shape[-1] != 1:
            raise ValueError("the oja-softmax rule takes one learning rate per step (a scalar)")
        return oja_softmax_factors(keys, values, lrs)
    raise ValueError(f"unknown learning rule {rule!r}")


def paint(keys: torch.Tensor, values: torch.Tensor, lrs: torch.Tensor | None,
          rule: Rule = "delta") -> torch.Tensor:
    """The fast form of ``paint_loop`` (same arguments, same result)."""
    left, right = rank_one_factors(keys, values, lrs, rule)
    return left.transpose(-1, -2) @ right                                             # (..., S_v, S_k)


def paint_steps(keys: torch.Tensor, values: torch.Tensor, lrs: torch.Tensor | None,
                rule: Rule = "delta") -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank-one update and every canvas: (updates, canvases), each (..., T, S_v, S_k)."""
    left, right = rank_one_factors(keys, values, lrs, rule)
    updates = left[..., :, :, None] * right[..., :, None, :]
    return updates, updates.cumsum(dim=-3)
