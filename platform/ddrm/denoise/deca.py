"""DeCA, denoising by cross-model agreement (Wang et al., "Learning Robust Recommenders through
Cross-Model Agreement", WWW 2022).

The true preference ``r`` of a pair is latent; the backend models it, ``p = P(r=1 | u, i) = σ(ŷ_ui)``.
Training maximises an ELBO of the observed label ``y`` (1 for the triple's positive (u, i), 0 for its
sampled negative (u, j)):  ``E_{r~p}[log P(y | r)] - KL-agreement(p, g)``, where

* ``g = σ(a_u · a_i)`` is an auxiliary MF trained jointly; the agreement term
  ``α·KL(g‖p) + (1-α)·KL(p‖g)`` (Bernoulli KLs) makes the two models agree, which they do on clean pairs
  far more than on noisy ones (the paper's observation);
* the label model ``P(y | r)`` uses two helper MFs and alternates by training step (DeCA's iterative
  mode): **DP** steps (denoise positives) take ``P(y=1 | r=1) = 1``, ``P(y=1 | r=0) = h1_ui`` and replace
  ``log 0`` by ``-C1``; **DN** steps (denoise negatives) take ``P(y=1 | r=0) = 0``,
  ``P(y=1 | r=1) = h2_ui`` and replace ``log 0`` by ``-C2``. Per pair, with ``q = 1 - p``::

      DP  positive: -q·log h1            negative: -(q·log(1-h1) - C1·p)
      DN  positive: -(p·log h2 - C2·q)   negative: -p·log(1-h2)

Only the helper used in a step gets a gradient (h1 on DP steps, h2 on DN steps); the optimiser skips
parameters without one, so each helper is updated on its own steps, as in the original's separate
optimisers. The step counter is a buffer (a resumed run keeps the alternation).

**Adaptation to our BPR backends.** DeCA was written for models trained by pointwise BCE with sampled
negatives; its ELBO *replaces* that BCE. Here it replaces the backend's BPR data term: each BPR triple
supplies DeCA's positive (u, i) and its one sampled negative (u, j) (the original's negative-sampling
rate 1), the backend's score ``ŷ`` becomes a probability through ``σ``, and the loss is the mean over
the batch of the positive's plus the negative's term. The backend's own L2 (and SGL's contrastive term)
stay; the helpers are unregularised, as in the original. The pairwise BPR term itself is not kept: with
it, every observed positive would be pushed up regardless of the helpers, which is what DeCA undoes.

Config: ``backend.deca_c1`` (1000), ``backend.deca_c2`` (10), ``backend.deca_alpha`` (0.5): the original
code's defaults; its per-dataset settings use C1, C2 ∈ {1, 10, 100, 1000} and α ∈ {0, 0.5, 1}. The helpers
have the backend's ``dim`` and ``init_std``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.functional import logsigmoid

from ..params import BackendParams, DenoiseParams
from ..registry import register_denoise


def bernoulli_kl(logit_a: torch.Tensor, logit_b: torch.Tensor) -> torch.Tensor:
    """``KL(Bern(σ(a)) ‖ Bern(σ(b)))`` elementwise, computed from logits (stable for large |logit|)."""
    p = torch.sigmoid(logit_a)
    return (p * (logsigmoid(logit_a) - logsigmoid(logit_b))
            + (1 - p) * (logsigmoid(-logit_a) - logsigmoid(-logit_b)))


class PairMF(nn.Module):
    """A helper MF: ``logit(u, i) = a_u · b_i``."""

    def __init__(self, n_users: int, n_items: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        nn.init.normal_(self.users.weight, std=init_std)
        nn.init.normal_(self.items.weight, std=init_std)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.users(users) * self.items(items)).sum(-1)


class DeCAParams(DenoiseParams):
    name: Literal["deca"] = "deca"
    c1: float = Field(default=1000.0, ge=0)  # -log P(y=0 | r=1) in the positive-denoising (DP) steps
    c2: float = Field(default=10.0, ge=0)  # -log P(y=1 | r=0) in the negative-denoising (DN) steps
    alpha: float = Field(default=0.5, ge=0, le=1)  # weight of KL(g||p) against KL(p||g) in the agreement term


@register_denoise("deca", DeCAParams)
class CrossModelAgreementLoss(nn.Module):
    """The DeCA data term of a BPR batch (see the module docstring); owns the three helper MFs."""

    def __init__(self, config: DeCAParams, model: BackendParams, n_users: int, n_items: int) -> None:
        super().__init__()
        self.c1, self.c2, self.alpha = config.c1, config.c2, config.alpha
        self.agreement_model = PairMF(n_users, n_items, model.dim, model.init_std)  # g
        self.positive_noise = PairMF(n_users, n_items, model.dim, model.init_std)  # h1: P(y=1 | r=0), DP
        self.positive_keep = PairMF(n_users, n_items, model.dim, model.init_std)  # h2: P(y=1 | r=1), DN
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def agreement(self, logits: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``α·KL(g‖p) + (1-α)·KL(p‖g)`` per pair, ``(B,)``."""
        g = self.agreement_model(users, items)
        return self.alpha * bernoulli_kl(g, logits) + (1 - self.alpha) * bernoulli_kl(logits, g)

    def pair_terms(self, pos_logits: torch.Tensor, neg_logits: torch.Tensor, users: torch.Tensor,
                   pos: torch.Tensor, neg: torch.Tensor, denoise_positives: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative expected log-likelihoods ``(B,)`` of the positive and the negative pair (DP or DN)."""
        p_pos, p_neg = torch.sigmoid(pos_logits), torch.sigmoid(neg_logits)
        if denoise_positives:
            h_pos, h_neg = self.positive_noise(users, pos), self.positive_noise(users, neg)
            pos_term = -(1 - p_pos) * logsigmoid(h_pos)
            neg_term = -((1 - p_neg) * logsigmoid(-h_neg) - self.c1 * p_neg)
        else:
            h_pos, h_neg = self.positive_keep(users, pos), self.positive_keep(users, neg)
            pos_term = -(p_pos * logsigmoid(h_pos) - self.c2 * (1 - p_pos))
            neg_term = -p_neg * logsigmoid(-h_neg)
        return pos_term, neg_term

    def forward(self, losses: torch.Tensor, pos_scores: torch.Tensor, neg_scores: torch.Tensor | None = None,
                users: torch.Tensor | None = None, pos: torch.Tensor | None = None,
                neg: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's DeCA loss (the BPR ``losses`` are not used); DP on even steps, DN on odd ones."""
        if neg_scores is None or users is None or pos is None or neg is None:
            raise ValueError("DeCA needs the triple: neg_scores, users, pos and neg")
        denoise_positives = int(self.step) % 2 == 0
        pos_term, neg_term = self.pair_terms(pos_scores, neg_scores, users, pos, neg, denoise_positives)
        kl = self.agreement(pos_scores, users, pos) + self.agreement(neg_scores, users, neg)
        if self.training:
            self.step += 1
        return (kl + pos_term + neg_term).mean()
