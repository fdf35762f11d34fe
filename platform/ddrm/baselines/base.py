"""What the standalone models share: trained on batches of user ids, each user's training interactions as
a dense ``(B, I)`` 0/1 vector (:meth:`VectorModel.rows`) or as its nonzeros only (:meth:`VectorModel.sparse_rows`,
Mult-VAE's encoder), and ``train.precision`` for the models that declare :attr:`VectorModel.supports_bf16`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from pydantic import Field, field_validator

from ..loop import BatchKind, ModelBase
from ..params import TrainedParams
from ..precision import autocast


def dense_rows(matrix: sp.csr_matrix, users: torch.Tensor) -> torch.Tensor:
    """``(B, I)`` float rows of ``matrix`` for the user ids ``users`` (on their device)."""
    rows = matrix[users.cpu().numpy()]
    out = torch.zeros(rows.shape, dtype=torch.float32)
    local = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    out[torch.from_numpy(local), torch.from_numpy(rows.indices.astype(np.int64))] = 1.0
    return out.to(users.device)


class SparseRows(NamedTuple):
    """The nonzeros of ``B`` users' 0/1 training rows, row by row (on the users' device)."""

    items: torch.Tensor  # (nnz,) int64 item ids, sorted within each row
    rows: torch.Tensor  # (nnz,) int64 row (0..B-1) of each item
    offsets: torch.Tensor  # (B,) int64 start of each row in ``items`` (``embedding_bag``'s offsets)
    counts: torch.Tensor  # (B,) int64 items per row (0 for a user without training interactions)


def sparse_rows(matrix: sp.csr_matrix, users: torch.Tensor) -> SparseRows:
    """The rows of ``matrix`` for the user ids ``users`` as :class:`SparseRows`: the nonzeros of
    :func:`dense_rows` (every stored entry counts as a 1, as there); ``matrix`` must hold no duplicates."""
    rows = matrix[users.cpu().numpy()]
    counts = np.diff(rows.indptr).astype(np.int64)
    device = users.device
    return SparseRows(items=torch.from_numpy(rows.indices.astype(np.int64)).to(device),
                      rows=torch.from_numpy(np.repeat(np.arange(len(counts), dtype=np.int64), counts)).to(device),
                      offsets=torch.from_numpy(rows.indptr[:-1].astype(np.int64)).to(device),
                      counts=torch.from_numpy(counts).to(device))


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
    ``scorer()``; :meth:`rows` gives the users' training interaction vectors, :meth:`sparse_rows` their nonzeros.

    ``supports_bf16``: the model runs its MLPs under :meth:`autocast` (bf16 when the ``model`` stage runs at
    ``train.precision: bf16``, see :mod:`ddrm.precision`); ``precision`` is set by the stage (``ddrm.train``),
    ``fp32`` unless the model supports bf16 and bf16 was asked for.
    """

    batch_kind = BatchKind.USERS
    supports_bf16: bool = False
    precision: str = "fp32"

    def __init__(self, config: VectorModelParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.train_matrix = train.tocsr()
        if not self.train_matrix.has_canonical_format:  # sparse_rows needs each (user, item) once
            self.train_matrix = self.train_matrix.copy()
            self.train_matrix.sum_duplicates()

    def rows(self, users: torch.Tensor) -> torch.Tensor:
        """``(B,)`` user ids -> ``(B, I)`` 0/1 training interactions."""
        return dense_rows(self.train_matrix, users)

    def sparse_rows(self, users: torch.Tensor) -> SparseRows:
        """``(B,)`` user ids -> the nonzeros of :meth:`rows` (:class:`SparseRows`)."""
        return sparse_rows(self.train_matrix, users)

    def autocast(self, device: torch.device | str) -> AbstractContextManager:
        """A context running eligible ops at :attr:`precision` (``nullcontext`` for fp32; bf16 autocast for bf16)."""
        return autocast(self.precision, device)
