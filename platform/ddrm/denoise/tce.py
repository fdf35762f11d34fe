"""T-CE, truncated loss (Wang et al., "Denoising Implicit Feedback for Recommendation", WSDM 2021).

Original form (BCE on pointwise labels): at training step s, drop the fraction
``rate(s) = max_rate * min(1, s / num_gradual)`` of the *positive* interactions with the largest BCE loss
in the batch, then average the loss over what is kept — large-loss positives are likely false positives.

Adapted to BPR here: a training sample is a triple (u, i, j) built around one observed positive (u, i), so
the triple's BPR loss ``-log σ(ŷ_ui - ŷ_uj)`` plays the role of the positive's loss; the ``rate(s)`` share of
the batch's triples with the largest BPR loss is dropped (weight 0) and the rest are averaged. There is no
separate negative term to keep, unlike the BCE form, whose negatives are never dropped. ``s`` counts
training batches (persisted in the ``step`` buffer, so a resumed run keeps its schedule).

Config: ``denoise.name: tce`` with ``denoise.max_rate`` (0.2) and ``denoise.num_gradual`` (30000 batches; DESIGN §4).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..params import BackendParams, DenoiseParams
from ..registry import register_denoise


def drop_rate(step: int, max_rate: float, num_gradual: int) -> float:
    """``max_rate * min(1, step / num_gradual)``: ramps linearly from 0, then stays at ``max_rate``."""
    return max_rate * min(1.0, step / max(1, num_gradual))


class TCEParams(DenoiseParams):
    name: Literal["tce"] = "tce"
    max_rate: float = Field(default=0.2, ge=0, lt=1)  # final share of the batch's largest-loss triples dropped
    num_gradual: int = Field(default=30000, ge=1)  # batches over which the drop rate ramps up from 0


@register_denoise("tce", TCEParams)
class TruncatedLoss(nn.Module):
    def __init__(self, config: TCEParams, model: BackendParams, n_users: int, n_items: int) -> None:
        super().__init__()  # model and sizes unused: no helper models
        self.max_rate, self.num_gradual = config.max_rate, config.num_gradual
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """``(B,)`` 0/1 weights keeping the ``1 - rate`` share of triples with the smallest loss."""
        rate = drop_rate(int(self.step), self.max_rate, self.num_gradual)
        n_keep = len(losses) - int(math.floor(rate * len(losses)))
        keep = torch.zeros_like(losses)
        keep[torch.argsort(losses.detach(), stable=True)[:max(1, n_keep)]] = 1.0
        return keep

    def forward(self, losses: torch.Tensor, pos_scores: torch.Tensor, *triple: torch.Tensor) -> torch.Tensor:
        """Per-triple BPR losses ``(B,)`` -> the mean over the kept triples; advances the step in training."""
        weights = self.weights(losses)
        if self.training:
            self.step += 1
        return (weights * losses).sum() / weights.sum()
