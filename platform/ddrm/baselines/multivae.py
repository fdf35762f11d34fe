"""Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018).

A user's training-interaction vector x ∈ {0,1}^I is L2-normalised, dropped out (``model.dropout``) and
encoded by an MLP (tanh) to a Gaussian q(z|x) = N(mu, diag(sigma²)) of width ``hidden_dims[-1]``; the
decoder (the mirrored MLP) gives logits over all items, and the loss is the multinomial log-likelihood
``-sum_i x_i log softmax(logits)_i`` plus ``beta * KL(q(z|x) || N(0, I))``, with
``beta = min(model.anneal_cap, step / model.anneal_steps)`` after ``step`` batches (the paper's code: 0.2 and
200,000, so beta reaches its cap after 40,000 batches). Scores
at evaluation use z = mu and no dropout. Batches are users (``model.batch_size``, 500 in the paper).

Sparse input: the encoder's first layer is computed from the user's nonzeros only,
``sum_{i in items(u)} w_i W[:, i] + b`` (``embedding_bag`` over the batch's CSR rows) with
``w_i = x_i / ||x|| * mask_i / (1 - p)``, instead of the dense ``(B, I) @ (I, h1)`` product: the same function
(scores and, at ``dropout`` 0, losses and gradients equal the dense computation to float rounding), at
O(nnz * h1) instead of O(B * I * h1) per batch forward and backward (the weight's gradient is still a dense
(h1, I) tensor, as Adam needs it). The dropout mask is drawn over the nonzeros only (a dropped zero is
zero), so with ``dropout`` > 0 it is the same distribution as the dense ``F.dropout`` of the whole row but
not the same random draws (nor are the later draws of the batch, which follow it in the generator). The
likelihood term gathers the log-probabilities of the user's items instead of multiplying by the dense row.
The parameters are those of the dense model (``encoder.0`` is still an ``nn.Linear(I, h1)``): checkpoints load
either way.

``train.precision: bf16`` (:mod:`ddrm.precision`): the encoder's layers after the first and the decoder run
under bf16 autocast and their outputs are cast back to fp32, so the KL, the reparameterisation, the
log-softmax and likelihood and the scores are fp32; the sparse first layer (O(nnz * h1)) stays fp32.
"""

from __future__ import annotations

from typing import Literal

import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from ..diffusion.denoiser import mlp
from ..registry import register_model
from .base import SparseRows, VectorModel, VectorModelParams


class MultiVAEParams(VectorModelParams):
    """Mult-VAE: items -> hidden_dims (the last is the latent size), KL weight annealed to ``anneal_cap``."""

    name: Literal["multivae"] = "multivae"
    anneal_cap: float = Field(default=0.2, ge=0)  # final KL weight beta
    anneal_steps: int = Field(default=200000, ge=1)  # beta = min(anneal_cap, batches / anneal_steps)


@register_model("multivae", MultiVAEParams)
class MultiVAE(VectorModel):
    supports_bf16 = True

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

    def input_weights(self, rows: SparseRows) -> torch.Tensor:
        """``(nnz,)`` weights of the users' items in the first layer: the L2-normalised 0/1 row's value
        ``1 / sqrt(n_u)``, in training times the input-dropout mask rescaled by ``1 / (1 - dropout)``."""
        values = (1.0 / torch.sqrt(rows.counts.to(self.encoder[0].weight.dtype))).repeat_interleave(rows.counts)
        return nn.functional.dropout(values, self.config.dropout, training=self.training)

    def encode(self, rows: SparseRows) -> tuple[torch.Tensor, torch.Tensor]:
        """The users' training rows -> mu, logvar ``(B, latent)`` in fp32 (dropout only in training)."""
        first = self.encoder[0]
        h = nn.functional.embedding_bag(rows.items, first.weight.t(), rows.offsets, mode="sum",
                                        per_sample_weights=self.input_weights(rows)) + first.bias
        with self.autocast(h.device):
            h = self.encoder[1:](h)
        h = h.float()
        return h[:, :self.latent], h[:, self.latent:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent)`` -> ``(B, I)`` fp32 item logits."""
        with self.autocast(z.device):
            logits = self.decoder(z)
        return logits.float()

    def kl_weight(self) -> float:
        return min(self.config.anneal_cap, int(self.anneal_step) / self.config.anneal_steps)

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        """Negative ELBO (multinomial likelihood, annealed KL) averaged over the batch's users."""
        rows = self.sparse_rows(users)
        mu, logvar = self.encode(rows)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        log_probs = torch.log_softmax(self.decode(z), dim=1)
        nll = -log_probs[rows.rows, rows.items].sum() / len(users)  # = -(log_probs * x).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
        beta = self.kl_weight()
        self.anneal_step += 1
        return nll + beta * kl

    @torch.no_grad()
    def scorer(self):
        """``users (B,) -> (B, I)`` logits from the posterior mean."""

        def score(users: torch.Tensor) -> torch.Tensor:
            mu, _ = self.encode(self.sparse_rows(users))
            return self.decode(mu)

        return score
