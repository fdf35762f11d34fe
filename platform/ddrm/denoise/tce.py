"""T-CE, truncated loss (Wang et al., "Denoising Implicit Feedback for Recommendation", WSDM 2021).

Original form (BCE on pointwise labels): at training step s, drop the fraction
``rate(s) = max_rate * min(1, s / num_gradual)`` of the *positive* interactions with the largest BCE loss
in the batch, then average the loss over what is kept — large-loss positives are likely false positives.

Adapted to BPR here: a training sample is a triple (u, i, j) built around one observed positive (u, i), so
the triple's BPR loss ``-log σ(ŷ_ui - ŷ_uj)`` plays the role of the positive's loss; the ``rate(s)`` share of
the batch's triples with the largest BPR loss is dropped (weight 0) and the rest are averaged. There is no
separate negative term to keep, unlike the BCE form, whose negatives are never dropped. ``s`` counts
training batches (persisted in the ``step`` buffer, so a resumed run keeps its schedule).

Config: ``backend.tce_max_rate`` (0.2) and ``backend.tce_num_gradual`` (30000 batches; DESIGN §4).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import register_rule


def drop_rate(step: int, max_rate: float, num_gradual: int) -> float:
    """``max_rate * min(1, step / num_gradual)``: ramps linearly from 0, then stays at ``max_rate``."""
    return max_rate * min(1.0, step / max(1, num_gradual))


@register_rule("tce")
class TruncatedLoss(nn.Module):
    def __init__(self, config, n_users: int = 0, n_items: int = 0) -> None:  # sizes unused: no helper models
        super().__init__()
        self.max_rate, self.num_gradual = config.tce_max_rate, config.tce_num_gradual
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
