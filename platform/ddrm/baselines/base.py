"""What the standalone models share: trained on batches of user ids, each user's training interactions as
a dense ``(B, I)`` 0/1 vector."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from pydantic import Field, field_validator

from ..loop import BatchKind, ModelBase
from ..params import TrainedParams


def dense_rows(matrix: sp.csr_matrix, users: torch.Tensor) -> torch.Tensor:
    """``(B, I)`` float rows of ``matrix`` for the user ids ``users`` (on their device)."""
    rows = matrix[users.cpu().numpy()]
    out = torch.zeros(rows.shape, dtype=torch.float32)
    local = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    out[torch.from_numpy(local), torch.from_numpy(rows.indices.astype(np.int64))] = 1.0
    return out.to(users.device)


class VectorModelParams(TrainedParams):
    """What the user-vector models share: hidden widths, input dropout and users per batch."""

    hidden_dims: tuple[int, ...] = Field(default=(600, 200), min_length=1)
    dropout: float = Field(default=0.5, ge=0, lt=1)  # input dropout on the user's interaction vector
    batch_size: int = Field(default=500, ge=1)  # users per batch

    @field_validator("hidden_dims")
    @classmethod
    def _positive_widths(cls, dims: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 1 for d in dims):
            raise ValueError(f"hidden_dims {list(dims)}: every width must be an integer >= 1")
        return dims


class VectorModel(ModelBase):
    """Base of the standalone models: ``loss(users)`` on user-id batches (``batch_kind = BatchKind.USERS``) and
    ``scorer()``; :meth:`rows` gives the users' training interaction vectors."""

    batch_kind = BatchKind.USERS

    def __init__(self, config: VectorModelParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.train_matrix = train.tocsr()

    def rows(self, users: torch.Tensor) -> torch.Tensor:
        """``(B,)`` user ids -> ``(B, I)`` 0/1 training interactions."""
        return dense_rows(self.train_matrix, users)
