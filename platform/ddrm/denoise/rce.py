"""R-CE, reweighted loss (Wang et al., "Denoising Implicit Feedback for Recommendation", WSDM 2021).

Original form (BCE): a positive's loss is multiplied by ``σ(ŷ_ui)^β`` (the model's own, detached,
prediction), a negative's by ``(1 - σ(ŷ_uj))^β`` — hard positives, which are likely false positives, count
less. Adapted to BPR here: the triple (u, i, j) exists because of its positive, so the whole BPR loss of
the triple is weighted by ``σ(ŷ_ui)^β`` (detached); there is no separate negative weight. The weighted
losses are averaged over the batch (weights are not renormalised, as in the original).

Config: ``backend.rce_beta`` (β, default 0.25; the paper searches {0.05, 0.1, 0.25, 0.5, 1.0}).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..params import BackendParams, DenoiseParams
from ..registry import register_denoise


class RCEParams(DenoiseParams):
    name: Literal["rce"] = "rce"
    beta: float = Field(default=0.25, ge=0)  # weight sigma(score_ui)^beta


@register_denoise("rce", RCEParams)
class ReweightedLoss(nn.Module):
    def __init__(self, config: RCEParams, model: BackendParams, n_users: int, n_items: int) -> None:
        super().__init__()  # model and sizes unused: no helper models
        self.beta = config.beta

    def weights(self, pos_scores: torch.Tensor) -> torch.Tensor:
        """``σ(ŷ_ui)^β``, detached: ``(B,)`` in (0, 1]."""
        return torch.sigmoid(pos_scores.detach()).pow(self.beta)

    def forward(self, losses: torch.Tensor, pos_scores: torch.Tensor, *triple: torch.Tensor) -> torch.Tensor:
        return (self.weights(pos_scores) * losses).mean()
