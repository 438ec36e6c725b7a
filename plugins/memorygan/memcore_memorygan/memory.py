"""The discriminative memory of memoryGAN: a von Mises-Fisher mixture over D's queries.

State (buffers, outside autograd): keys K (N, M) unit-norm mean directions, values v (N,) in {0, 1}
(real / fake), ages a (N,), histogram h (N,). Initial state as in the authors' code (K = 0, half the
slots real and half fake, h = 1e-5, a = 0), with real and fake slots interleaved (see __init__).

Read (eq. 1-4): the top-k slots by exp(kappa K_i.q)(h_i + beta), the posterior over them, and
p(y=1|x) = sum_i pi_i v_i clipped to [eps, 1 - eps]. Gradients reach the query only.

Write (eq. 5, Algorithm 1 lines 5-11), one call per commit with every staged (query, label) row:

1. reset test per row: with ``reset = "no-label-in-top-k"`` (the paper's text) a row resets when no
   slot of its unconditional top-k has its label; with ``"top1-wrong"`` (the code) when the top-1
   slot has the wrong label.
2. rows that do not reset update S_y, their top-k slots under p(c | x, v_c = y), by T iterations
   of incremental EM. Rows are applied *together*: every row's E-step reads the same memory. A
   slot touched by n rows, with ``combine = "averaged"`` (default), starts from h_hat = alpha^n h
   and adds c * sum_b dgamma_bi to h and c * sum_b dgamma_bi (q_b - K_i) / h_i to K_i
   (re-normalised), c = (1 + alpha + ... + alpha^(n-1)) / n: for the histogram, eq. 5 row by row
   averaged over all row orders; for one row, eq. 5 exactly. ``"summed"`` is mini-batch EM
   (h_hat = alpha h, c = 1), whose histogram grows with the number of rows per slot. Neither
   depends on row order (the TF code keeps one arbitrary row per slot instead).
   ``em = "code"`` is the authors' code (TF and the PyTorch port): the histogram statistic of
   a row is its posterior summed over S_y, 1 for T = 1, added to every slot of S_y alike
   (h <- alpha h + 1, so K's step is gamma_i / (alpha h_i + 1)); ``"paper"`` adds each slot's
   own gamma_i (eq. 5). The key's statistic is gamma_i in both.
3. rows that reset take distinct slots, the first resetting row the oldest slot: slots not
   touched by step 2 come first, then higher age, then lower index. Key q, value y, age 0,
   h = mean(h) of the memory before this commit. If more rows reset than there are slots, the
   first N (in gathered order) are written.
4. every age advances by one; every slot written in steps 2-3 is set to age 0.

``update = "kaiser"`` is the -EM ablation: the histogram gets the first E-step as above, and only the
nearest slot of S_y moves, K <- normalise(K + sum of its rows' q) (Kaiser et al., 2017).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import memcore
from memcore import MemcoreError


class DiscriminativeMemory(memcore.Memory):
    sync = "gather"
    write_at = "after_D"

    def __init__(self, slots: int, key_dim: int, *, top_k: int = 128, kappa: float = 1.0,
                 beta: float = 1e-8, eps: float = 1e-3, decay: float = 0.5, em_iters: int = 1,
                 update: str = "em", reset: str = "no-label-in-top-k", combine: str = "averaged",
                 em: str = "paper", write_at: str = "after_D",
                 write_in_eval: bool = False, seed: int = 0):
        super().__init__(write_in_eval=write_in_eval, seed=seed)
        if top_k > slots:
            raise MemcoreError(f"discriminator.top_k = {top_k} must be <= discriminator.slots = "
                               f"{slots}")
        self.slots, self.key_dim, self.top_k = slots, key_dim, top_k
        self.kappa, self.beta, self.eps, self.decay = kappa, beta, eps, decay
        self.em_iters, self.update, self.reset, self.combine = em_iters, update, reset, combine
        self.em = em
        self.write_at = write_at  # instance override of the class default ("forward" = code schedule)
        self.register_buffer("keys", torch.zeros(slots, key_dim))
        # Half real, half fake as in the code, but interleaved (even slots real): the first read
        # sees all-tied scores (K = 0) and torch.topk returns a contiguous block for ties, so
        # both labels get slots in the first top-k. With two halves one label takes the whole
        # first top-k and the histogram then keeps the other out of every top-k (p(y|x) = eps).
        self.register_buffer("values", (torch.arange(slots) % 2 == 0).float())
        self.register_buffer("ages", torch.zeros(slots))
        self.register_buffer("hist", torch.full((slots,), 1e-5))

    # -- read ---------------------------------------------------------------------------------
    def scaled_dots(self, query: torch.Tensor) -> torch.Tensor:
        """kappa K_i.q for every slot; (B, M) -> (B, N)."""
        return self.kappa * query @ self.keys.T

    def log_scores(self, query: torch.Tensor, dots: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x|c) p(c) up to a constant: kappa K_i.q + log(h_i + beta); (B, M) -> (B, N).
        ``dots``: this query's ``scaled_dots`` when the caller already has them."""
        dots = self.scaled_dots(query) if dots is None else dots
        return dots + (self.hist + self.beta).log()

    def neighbours(self, query: torch.Tensor, label: torch.Tensor | None = None, scores=None):
        """Top-k slots (B, k) under p(c|x), or under p(c|x, v_c = label) when a label is given;
        ``scores``: this query's ``log_scores`` when the caller already has them."""
        scores = self.log_scores(query.detach()) if scores is None else scores
        if label is not None:
            scores = scores.masked_fill(self.values[None] != label[:, None], -math.inf)
        return scores.topk(self.top_k, dim=1)

    def forward(self, query: torch.Tensor) -> dict[str, torch.Tensor]:
        """p(y=1|x) from the top-k posterior (eq. 3-4); ``query`` (B, M) unit norm."""
        with torch.no_grad():
            _, slots = self.neighbours(query)                             # (B, k)
        # Gathered copies: the graph never holds the buffers, so a write right after the read
        # (write_at = "forward") cannot invalidate backward.
        # F.embedding: the same rows as self.keys[slots], gathered several times faster on CPU.
        keys = F.embedding(slots, self.keys)                              # (B, k, M)
        log_prior = (self.hist[slots] + self.beta).log()                  # (B, k)
        posterior = (self.kappa * torch.einsum("bm,bkm->bk", query, keys) + log_prior).softmax(-1)
        prob = (posterior * self.values[slots]).sum(-1).clamp(self.eps, 1 - self.eps)
        return {"prob": prob, "posterior": posterior, "slots": slots}

    def log_likelihood(self, query: torch.Tensor, label: int = 1) -> torch.Tensor:
        """Biased log p~(x | y) (Fig. 3a): log of the top-k mixture restricted to label slots,
        with the prior normalised over those slots and without the vMF constant; (B,)."""
        scores, _ = self.neighbours(query, torch.full((len(query),), float(label),
                                                      device=query.device))
        label_mass = (self.hist + self.beta)[self.values == label].sum()
        return scores.logsumexp(-1) - label_mass.log()

    # -- MCGN sampling ------------------------------------------------------------------------
    def sample_slots(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """c ~ p(c | v_c = 1) = h_c v_c / sum_j h_j v_j (only real slots); (n,) on CPU."""
        weights = (self.hist * self.values).detach().double().cpu()
        if weights.sum() <= 0:  # no real slot left: nothing to condition on but the whole memory
            weights = torch.ones_like(weights)
        return torch.multinomial(weights, n, replacement=True, generator=generator)

    # -- write --------------------------------------------------------------------------------
    def write(self, items: dict[str, torch.Tensor], generator: torch.Generator) -> None:
        query = F.normalize(items["query"].to(self.keys), dim=1)         # (B, M)
        label = items["label"].to(self.keys)                             # (B,)
        # One (B, N) product serves the reset test, the neighbour search and the first E-step.
        dots = self.scaled_dots(query)                                   # (B, N)
        scores = self.log_scores(query, dots)                            # (B, N)
        resets = self._reset_mask(scores, label)                         # (B,)
        hist_mean = self.hist.mean()
        keep = ~resets
        touched = self._update_neighbours(query[keep], label[keep], scores[keep], dots[keep])
        written = self._replace_oldest(query[resets], label[resets], hist_mean, touched)
        self.ages += 1
        self.ages[touched | written] = 0

    def _reset_mask(self, scores, label) -> torch.Tensor:
        _, top = scores.topk(self.top_k, dim=1)
        same = self.values[top] == label[:, None]                        # (B, k)
        return ~same.any(1) if self.reset == "no-label-in-top-k" else ~same[:, 0]

    def _update_neighbours(self, query, label, scores, dots) -> torch.Tensor:
        """Batched incremental EM (or the Kaiser rule) on S_y; returns the touched-slot mask.
        ``scores``, ``dots``: the rows' ``log_scores`` and ``scaled_dots`` (E, N)."""
        touched = torch.zeros(self.slots, dtype=torch.bool, device=self.keys.device)
        if len(query) == 0:
            return touched
        cond_scores, S = self.neighbours(query, label, scores)           # (E, k)
        valid = torch.isfinite(cond_scores)                              # fewer than k label slots
        slot_ids, local = torch.unique(S[valid], return_inverse=True)    # (U,)
        U = len(slot_ids)
        # Local index per (row, neighbour); invalid entries go to a scratch row U, dropped below.
        at = torch.full_like(S, U)
        at[valid] = local
        keys = torch.cat([self.keys.index_select(0, slot_ids),
                          self.keys.new_zeros(1, self.key_dim)])                        # (U+1, M)
        decay, scale = self._combine_factors(at, valid, U)                             # (U+1,) x2
        hist = torch.cat([self.hist[slot_ids], self.hist.new_ones(1)]) * decay          # (U+1,)
        scale = scale[at]                                                # (E, k)
        # The first E-step sees the keys as they are, so its kappa K.q are the write's own.
        neighbour_dots = dots.gather(1, S)                               # (E, k)
        gamma_prev = torch.zeros_like(cond_scores)
        iters = 1 if self.update == "kaiser" else self.em_iters
        for it in range(iters):
            # E-step: posterior over S_y with the current estimates (eq. 1 restricted to S_y).
            logits = neighbour_dots + (hist[at] + self.beta).log()
            gamma = logits.masked_fill(~valid, -math.inf).softmax(-1)
            delta = gamma - gamma_prev                                   # (E, k)
            step = delta * scale
            hist = hist.index_put((at,), self._hist_statistic(delta) * scale, accumulate=True)
            if self.update == "em":
                keys = F.normalize(keys + self._pull(step, at, query, keys) / hist[:, None], dim=1)
                if it + 1 < iters:
                    neighbour_dots = self.kappa * torch.einsum("em,ekm->ek", query,
                                                               F.embedding(at, keys))
            gamma_prev = gamma
        if self.update == "kaiser":
            nearest = at[:, 0]                                           # S is sorted: column 0
            summed = keys.index_put((nearest,), query, accumulate=True)
            hit = torch.zeros(U + 1, dtype=torch.bool, device=keys.device)
            hit[nearest] = True
            keys = torch.where(hit[:, None], F.normalize(summed, dim=1), keys)
        self.keys[slot_ids] = keys[:U]
        self.hist[slot_ids] = hist[:U]
        touched[slot_ids] = True
        return touched

    @staticmethod
    def _pull(step, at, query, keys) -> torch.Tensor:
        """Sum of step_bj (q_b - K_u) over the (row b, neighbour j) pairs of each slot u; (U+1, M).
        Computed as W q - (row sums of W) K with the steps scattered into W (U+1, E): one matmul
        instead of (E, k, M) differences summed by index_put (several times faster on CPU), and
        no (K + pulls) - K cancellation, which the division by a tiny updated h would amplify."""
        rows = torch.arange(len(query), device=at.device)[:, None].expand_as(at)   # (E, k)
        weights = query.new_zeros(len(keys), len(query)).index_put_((at, rows), step,
                                                                    accumulate=True)  # (U+1, E)
        return weights @ query - weights.sum(1, keepdim=True) * keys

    def _hist_statistic(self, delta: torch.Tensor) -> torch.Tensor:
        """The histogram statistic of each (row, neighbour) from the posterior step ``delta``
        (E, k): its own step (eq. 5), or with em = "code" the row's step summed over its k
        neighbours, as the authors' code sums the posterior over that axis (entries past the
        valid neighbours go to the scratch row)."""
        if self.em == "paper":
            return delta
        return delta.sum(-1, keepdim=True).expand_as(delta)

    def _combine_factors(self, at, valid, U):
        """Per touched slot: the decay of its histogram and the weight of its rows' summed
        statistics. "averaged": n rows hitting a slot decay it n times and add their mean
        statistic times 1 + alpha + ... + alpha^(n-1) -- the expected histogram of eq. 5 applied
        row by row in a random order. "summed": decay once, add the sum (mini-batch EM)."""
        if self.combine == "summed":
            return torch.full((U + 1,), self.decay, device=at.device), at.new_ones(U + 1).float()
        rows = torch.zeros(U + 1, device=at.device).index_put((at,), valid.float(),
                                                               accumulate=True)   # (U+1,)
        rows[U] = 1.0  # the scratch row: any finite value
        decay = self.decay ** rows
        added = rows if self.decay == 1.0 else (1 - decay) / (1 - self.decay)
        return decay, added / rows

    def _replace_oldest(self, query, label, hist_mean, touched) -> torch.Tensor:
        written = torch.zeros(self.slots, dtype=torch.bool, device=self.keys.device)
        n = min(len(query), self.slots)
        if n == 0:
            return written
        order = torch.sort(-self.ages, stable=True).indices              # oldest first, low index
        order = order[torch.sort(touched[order].to(torch.uint8), stable=True).indices]  # untouched first
        slots = order[:n]
        self.keys[slots] = query[:n]
        self.values[slots] = label[:n]
        self.hist[slots] = hist_mean
        written[slots] = True
        return written

    # -- introspection ------------------------------------------------------------------------
    def prior(self) -> torch.Tensor:
        """p(c) = (h + beta) / sum (h + beta); (N,)."""
        mass = self.hist + self.beta
        return mass / mass.sum()

    def stats(self) -> dict[str, float]:
        real = self.values > 0.5
        prior = self.prior()
        entropy = float(-(prior * prior.log()).sum())
        real_mass = (self.hist * self.values)
        real_p = real_mass / real_mass.sum().clamp_min(1e-30)
        real_entropy = float(-(real_p[real_p > 0] * real_p[real_p > 0].log()).sum())
        return {"real_slots": float(real.sum()), "prior_perplexity": math.exp(entropy),
                "real_prior_perplexity": math.exp(real_entropy),
                "hist_total": float(self.hist.sum()), "max_age": float(self.ages.max()),
                "writes": float(self.write_count)}
