"""MF-BPR: plain matrix factorisation trained with BPR.

``backend.layers`` > 0 propagates the trained MF embeddings over ``D^-1/2 A D^-1/2`` when they are
handed out (the reference DDRM code does this for MF); training itself never propagates.
``backend.checkpoint`` loads the reference code's pretrained MF (see :mod:`.checkpoint`).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..params import BackendParams, Flag
from ..registry import register_model
from .base import Backend, propagate
from .checkpoint import load_ego_embeddings


class MFParams(BackendParams):
    """MF-BPR's settings: the shared backend keys, no propagation by default, and optionally sparse gradients."""

    name: Literal["mf"] = "mf"
    layers: int = Field(default=0, ge=0)
    # sparse embedding gradients (only the batch's rows) and torch.optim.SparseAdam, a lazy Adam whose moments move
    # only for those rows; false: dense gradients and Adam over every row (the paper's optimiser)
    sparse_grad: Flag = False

    @property
    def sparse_embeddings(self) -> bool:
        return self.sparse_grad


@register_model("mf", MFParams)
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
