"""Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018).

A user's training-interaction vector x ∈ {0,1}^I is L2-normalised, dropped out (``model.dropout``) and
encoded by an MLP (tanh) to a Gaussian q(z|x) = N(mu, diag(sigma²)) of width ``hidden_dims[-1]``; the
decoder (the mirrored MLP) gives logits over all items, and the loss is the multinomial log-likelihood
``-sum_i x_i log softmax(logits)_i`` plus ``beta * KL(q(z|x) || N(0, I))``, with
``beta = min(model.anneal_cap, step / model.anneal_steps)`` after ``step`` batches (the paper's code: 0.2 and
200,000, so beta reaches its cap after 40,000 batches). Scores
at evaluation use z = mu and no dropout. Batches are users (``model.batch_size``, 500 in the paper).
"""

from __future__ import annotations

from typing import Literal

import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from ..diffusion.denoiser import mlp
from ..registry import register_model
from .base import VectorModel, VectorModelParams


class MultiVAEParams(VectorModelParams):
    """Mult-VAE: items -> hidden_dims (the last is the latent size), KL weight annealed to ``anneal_cap``."""

    name: Literal["multivae"] = "multivae"
    anneal_cap: float = Field(default=0.2, ge=0)  # final KL weight beta
    anneal_steps: int = Field(default=200000, ge=1)  # beta = min(anneal_cap, batches / anneal_steps)


@register_model("multivae", MultiVAEParams)
class MultiVAE(VectorModel):
    def __init__(self, config: MultiVAEParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__(config, n_users, n_items, train)
        dims = [n_items, *[int(h) for h in config.hidden_dims]]
        self.latent = dims[-1]
        self.encoder = mlp(dims[:-1] + [2 * self.latent], "tanh")
        self.decoder = mlp(list(reversed(dims)), "tanh")
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.normal_(module.bias, std=0.001)
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, I)`` interactions -> mu, logvar ``(B, latent)`` (dropout only in training)."""
        x = nn.functional.normalize(x, dim=1)
        x = nn.functional.dropout(x, self.config.dropout, training=self.training)
        h = self.encoder(x)
        return h[:, :self.latent], h[:, self.latent:]

    def kl_weight(self) -> float:
        return min(self.config.anneal_cap, int(self.anneal_step) / self.config.anneal_steps)

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        """Negative ELBO (multinomial likelihood, annealed KL) averaged over the batch's users."""
        x = self.rows(users)
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        log_probs = torch.log_softmax(self.decoder(z), dim=1)
        nll = -(log_probs * x).sum(dim=1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
        beta = self.kl_weight()
        self.anneal_step += 1
        return nll + beta * kl

    @torch.no_grad()
    def scorer(self):
        """``users (B,) -> (B, I)`` logits from the posterior mean."""

        def score(users: torch.Tensor) -> torch.Tensor:
            mu, _ = self.encode(self.rows(users))
            return self.decoder(mu)

        return score
