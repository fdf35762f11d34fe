"""What the standalone models share: trained on batches of user ids, each user's training interactions as
a dense ``(B, I)`` 0/1 vector."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..config import ModelConfig
from ..loop import BatchKind, ModelBase


def dense_rows(matrix: sp.csr_matrix, users: torch.Tensor) -> torch.Tensor:
    """``(B, I)`` float rows of ``matrix`` for the user ids ``users`` (on their device)."""
    rows = matrix[users.cpu().numpy()]
    out = torch.zeros(rows.shape, dtype=torch.float32)
    local = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    out[torch.from_numpy(local), torch.from_numpy(rows.indices.astype(np.int64))] = 1.0
    return out.to(users.device)


class VectorModel(ModelBase):
    """Base of the standalone models: ``loss(users)`` on user-id batches (``batch_kind = BatchKind.USERS``) and
    ``scorer()``; :meth:`rows` gives the users' training interaction vectors."""

    batch_kind = BatchKind.USERS

    def __init__(self, config: ModelConfig, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.train_matrix = train.tocsr()

    def rows(self, users: torch.Tensor) -> torch.Tensor:
        """``(B,)`` user ids -> ``(B, I)`` 0/1 training interactions."""
        return dense_rows(self.train_matrix, users)
