"""CDAE (Wu et al., "Collaborative Denoising Auto-Encoders for Top-N Recommender Systems", WSDM 2016).

The user's training-interaction vector x ∈ {0,1}^I is corrupted by dropout (``model.dropout``, rescaled by
1/(1-q)), encoded together with a per-user latent vector V_u: ``h = sigmoid(W x~ + V_u + b)`` of width
``model.hidden_dims[-1]``, and decoded to item logits ``W' h + b'``. The loss is the binary cross-entropy
between the logits and the uncorrupted x, summed over all items and averaged over the batch's users (the
full-vector form; the paper also allows sampled negatives). Scores use the uncorrupted input.
"""

from __future__ import annotations

from typing import Literal

import scipy.sparse as sp
import torch
from torch import nn

from ..registry import register_model
from .base import VectorModel, VectorModelParams


class CDAEParams(VectorModelParams):
    """CDAE: one hidden layer of ``hidden_dims[-1]`` units with a user embedding."""

    name: Literal["cdae"] = "cdae"


@register_model("cdae", CDAEParams)
class CDAE(VectorModel):
    def __init__(self, config: CDAEParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__(config, n_users, n_items, train)
        hidden = int(config.hidden_dims[-1])
        self.encoder = nn.Linear(n_items, hidden)
        self.user_node = nn.Embedding(n_users, hidden)
        self.decoder = nn.Linear(hidden, n_items)
        for layer in (self.encoder, self.decoder):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.user_node.weight, std=0.01)

    def logits(self, users: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` users and ``(B, I)`` (corrupted) input -> ``(B, I)`` item logits."""
        hidden = torch.sigmoid(self.encoder(x) + self.user_node(users))
        return self.decoder(hidden)

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        x = self.rows(users)
        corrupted = nn.functional.dropout(x, self.config.dropout, training=True)
        bce = nn.functional.binary_cross_entropy_with_logits(self.logits(users, corrupted), x, reduction="none")
        return bce.sum(dim=1).mean()

    @torch.no_grad()
    def scorer(self):
        return lambda users: self.logits(users, self.rows(users))
