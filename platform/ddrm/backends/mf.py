"""MF-BPR: plain matrix factorisation trained with BPR.

``backend.layers`` > 0 propagates the trained MF embeddings over ``D^-1/2 A D^-1/2`` when they are
handed out (the reference DDRM code does this for MF); training itself never propagates.
``backend.checkpoint`` loads the reference code's pretrained MF (see :mod:`.checkpoint`).
"""

from __future__ import annotations

import torch

from ..registry import register_backend
from .base import Backend, propagate
from .checkpoint import load_ego_embeddings


@register_backend("mf")
class MF(Backend):
    def train_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.layers == 0:
            return self.user_emb.weight, self.item_emb.weight
        return propagate(self.graph, self.user_emb.weight, self.item_emb.weight, self.config.layers,
                         self.config.pooling)

    def load_checkpoint(self, path: str) -> None:
        """Load ego embeddings from a reference state dict (any layout of :mod:`.checkpoint`)."""
        load_ego_embeddings(self, path)
