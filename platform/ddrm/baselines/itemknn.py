"""ItemKNN: item-item cosine similarity with shrink, top-k neighbours per item (the common RecSys baseline).

With x_i the binary column of item i in the ``(U, I)`` training matrix:
``sim(j, i) = x_j·x_i / (‖x_j‖ ‖x_i‖ + shrink)`` (``model.knn_shrink``; 0 where the denominator is 0).
For each item i, column i of the sparse ``(I, I)`` matrix S keeps the ``model.knn_k`` items j ≠ i with the
largest sim(j, i) (ties: lower item id first; self-similarity is never kept; zero similarities are not
stored, they add nothing to a score). A user's scores are ``x_u · S``: item i scores the summed similarity of
the user's items among i's k neighbours.

S is built in blocks of columns (a dense ``(I, block)`` slice at a time, about ``BLOCK_ELEMENTS`` floats), so
memory stays O(I·k + BLOCK_ELEMENTS) also for large item counts.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..params import ModelParams
from ..registry import register_model
from .closed_form import ClosedFormModel

BLOCK_ELEMENTS = 1 << 23  # dense similarity entries per column block (64 MB of float64)


def top_k_mask(sim: np.ndarray, k: int) -> np.ndarray:
    """``(I, b)`` similarities -> ``(I, b)`` bool: per column the k largest entries, ties to the lowest row."""
    if k >= sim.shape[0]:
        return np.ones(sim.shape, dtype=bool)
    kth = -np.partition(-sim, k - 1, axis=0)[k - 1]  # (b,) k-th largest value per column
    above = sim > kth
    tied = sim == kth
    room = k - above.sum(axis=0)  # (b,) how many tied entries still fit
    return above | (tied & (np.cumsum(tied, axis=0) <= room))


def knn_similarity(x: sp.spmatrix, k: int, shrink: float, block_elements: int = BLOCK_ELEMENTS) -> sp.csr_matrix:
    """``(U, I)`` binary matrix -> ``(I, I)`` float32 CSR S, column i = item i's k most similar items."""
    x = sp.csc_matrix(x, dtype=np.float64)
    n_items = x.shape[1]
    xt = x.T.tocsr()  # (I, U)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel())  # (I,)
    k = min(k, n_items - 1)
    block = max(1, min(n_items, block_elements // max(1, n_items)))
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        stop = min(n_items, start + block)
        dots = (xt @ x[:, start:stop]).toarray()  # (I, b) co-occurrences
        denom = norms[:, None] * norms[None, start:stop] + shrink
        sim = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        local = np.arange(stop - start)
        sim[start + local, local] = -np.inf  # never one's own neighbour
        keep = top_k_mask(sim, k) & (sim > 0) if k > 0 else np.zeros(sim.shape, dtype=bool)
        r, c = np.nonzero(keep)
        rows.append(r)
        cols.append(c + start)
        vals.append(sim[r, c].astype(np.float32))
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return sp.csr_matrix((cat(vals, np.float32), (cat(rows, np.int64), cat(cols, np.int64))),
                         shape=(n_items, n_items))


class ItemKNNParams(ModelParams):
    """ItemKNN: cosine similarity with shrink, ``knn_k`` neighbours kept per item."""

    name: Literal["itemknn"] = "itemknn"
    knn_k: int = Field(default=400, ge=1)  # neighbours kept per item (DESIGN §4a's setting)
    knn_shrink: float = Field(default=10.0, ge=0, allow_inf_nan=False)  # x_i·x_j / (|x_i||x_j| + shrink)


@register_model("itemknn", ItemKNNParams)
class ItemKNN(ClosedFormModel):
    def __init__(self, config: ItemKNNParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__(config, n_users, n_items, train)
        self.similarity: sp.csr_matrix | None = None  # (I, I) S

    def fit_closed_form(self) -> None:
        self.similarity = knn_similarity(self.train_matrix, self.config.knn_k, self.config.knn_shrink)
        self.fitted = True

    def score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(B, I)`` history rows -> ``x_u · S`` ``(B, I)``."""
        return (rows @ self.similarity).toarray()
