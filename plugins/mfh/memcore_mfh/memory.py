"""The CI memory M (n × w) with its addresser R, and a small bank of real exemplars.

M is learned by gradient, as in the paper: f_ci = π·M (eq. 4) is differentiable in M, and the
reconstruction, adversarial and diversity losses all reach M through it. So M is an
``nn.Parameter`` (optimised by G's Adam and historically averaged with the rest of G), while the
bookkeeping around it — which slots the addresser chose lately — is state written outside
autograd through the memory protocol (staged in the forward, committed after the G phase), so it
is checkpointed, copied verbatim into the EMA generator and logged as memory statistics.

Two ways to address M:

* ``"gumbel"`` (the paper): R (an MLP) maps the encoded CI feature to n logits; a Gumbel-softmax
  sample at temperature τ in straight-through hard mode gives a one-hot π forward and the soft
  sample's gradient backward (eq. 3).
* ``"nearest"`` (the ablation of Table 4 / Fig. 8): the nearest slot in L2, VQ-VAE style, with the
  straight-through estimator and the codebook + commitment losses (stop-gradient updates of M).
* ``"random"`` (an ablation, not in the paper): a uniformly random slot per image, ignoring the
  image; it measures what the learned addresser adds over no addressing at all.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import memcore


def gumbel_address(logits: torch.Tensor, tau: float, hard: bool = True) -> torch.Tensor:
    """π (B, n) from addresser logits: one-hot forward, soft Gumbel-softmax gradient (eq. 3)."""
    return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=-1)


class CIMemory(memcore.Memory):
    """n learned CI features of width w; remembers the last ``window`` addressed slots."""

    sync, write_at = "gather", "after_G"
    learns_by_gradient = True  # M and R are trained through the read (eq. 3, 4)

    def __init__(self, slots: int, width: int, query_dim: int, hidden: int, addressing: str,
                 window: int = 1024, seed: int = 0):
        super().__init__(seed=seed)
        self.addressing = addressing
        self.slots = nn.Parameter(torch.randn(slots, width))                 # M: (n, w)
        self.addresser = nn.Sequential(nn.Linear(query_dim, hidden), nn.LeakyReLU(0.2),
                                       nn.Linear(hidden, slots))             # R: f̃_ci -> n logits
        self.register_buffer("recent", torch.full((window,), -1, dtype=torch.long))
        self.register_buffer("head", torch.zeros((), dtype=torch.long))
        self.tau = 1.0  # set from the step by the generator before every phase (derived, not state)

    @property
    def num_slots(self) -> int:
        return self.slots.shape[0]

    def read(self, pi: torch.Tensor) -> torch.Tensor:
        """f_ci = π·M (eq. 4): (B, n) @ (n, w) -> (B, w)."""
        return pi @ self.slots

    def read_slots(self, index: torch.Tensor) -> torch.Tensor:
        """The CI features of given slots (B,) -> (B, w)."""
        return self.slots[index]

    def probabilities(self, query: torch.Tensor) -> torch.Tensor:
        """The soft address p(slot | image) (B, n): softmax(R(f̃_ci)) for Gumbel addressing, a
        softmax of minus the slot distances for nearest, uniform for random."""
        if self.addressing == "gumbel":
            return self.addresser(query).softmax(-1)
        if self.addressing == "nearest":
            return (-torch.cdist(query, self.slots)).softmax(-1)
        return query.new_full((len(query), self.num_slots), 1 / self.num_slots)

    def forward(self, query: torch.Tensor) -> dict[str, torch.Tensor]:
        """Address M with the encoded CI features f̃_ci (B, query_dim)."""
        extra = query.new_zeros(())
        if self.addressing == "gumbel":
            logits = self.addresser(query)                                   # (B, n)
            pi = gumbel_address(logits, self.tau, hard=True)
            f_ci = self.read(pi)
            probs = logits.softmax(-1)
        elif self.addressing == "nearest":
            distance = torch.cdist(query, self.slots)                        # (B, n)
            index = distance.argmin(-1)
            chosen = self.slots[index]
            # VQ-VAE: the codebook term moves M, the commitment term the encoder (β = 0.25);
            # a loss of the G phase (weight train.block_loss_weights["mfh-vq"], default 1)
            extra = F.mse_loss(chosen, query.detach()) + 0.25 * F.mse_loss(query, chosen.detach())
            memcore.add_loss(self, "mfh-vq", extra)
            f_ci = query + (chosen - query).detach()
            pi = F.one_hot(index, self.num_slots).to(query.dtype)                 # (B, n)
            probs = (-distance).softmax(-1)
        else:
            index = torch.randint(self.num_slots, (len(query),), device=query.device)
            pi = F.one_hot(index, self.num_slots).to(query.dtype)
            f_ci, probs = self.read(pi), self.probabilities(query)
        self.stage(slot=pi.argmax(-1))
        return {"f_ci": f_ci, "pi": pi, "probs": probs, "vq_loss": extra}

    def write(self, items, generator) -> None:
        slot = items["slot"][-len(self.recent):]
        where = (self.head + torch.arange(len(slot), device=slot.device)) % len(self.recent)
        self.recent[where] = slot
        self.head.copy_((self.head + len(slot)) % len(self.recent))

    def usage(self) -> torch.Tensor:
        """Hits per slot among the last ``window`` addressed images (n,)."""
        seen = self.recent[self.recent >= 0]
        return torch.bincount(seen, minlength=self.num_slots)

    def stats(self) -> dict[str, float]:
        out = memcore.slot_statistics(self.usage())
        out["tau"] = float(self.tau)
        return out


class ExemplarBank(memcore.Memory):
    """The latest real training images, for sampling during training without a given exemplar.

    Sample grids and metrics call ``sample_latent`` without a condition; the generator then takes
    one-shot exemplars from here (K = 1, as at inference), so training grids show what one-shot
    generation from single images looks like. Copied verbatim into the EMA generator.
    """

    sync, write_at = "gather", "after_G"

    def __init__(self, size: int, channels: int, resolution: int):
        super().__init__()
        self.register_buffer("images", torch.zeros(size, channels, resolution, resolution))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("head", torch.zeros((), dtype=torch.long))

    def write(self, items, generator) -> None:
        images, labels = items["image"][-len(self.labels):], items["label"][-len(self.labels):]
        where = (self.head + torch.arange(len(labels), device=labels.device)) % len(self.labels)
        self.images[where] = images
        self.labels[where] = labels
        self.head.copy_((self.head + len(labels)) % len(self.labels))

    def filled(self) -> int:
        return int((self.labels >= 0).sum())

    def stats(self) -> dict[str, float]:
        return {}
