"""MostPop: every user gets the same scores, each item's training popularity (number of users with it in train).

The evaluation's masking removes a user's own training (and, for test, validation) items from the ranking,
so the recommendation is the most popular items the user has not interacted with yet.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from ..params import ModelParams
from ..registry import register_model
from .closed_form import ClosedFormModel


class MostPopParams(ModelParams):
    """MostPop: no settings."""

    name: Literal["mostpop"] = "mostpop"


@register_model("mostpop", MostPopParams)
class MostPop(ClosedFormModel):
    def __init__(self, config: MostPopParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__(config, n_users, n_items, train)
        self.popularity: np.ndarray | None = None  # (I,) float32 training counts

    def fit_closed_form(self) -> None:
        self.popularity = np.asarray(self.train_matrix.sum(axis=0), dtype=np.float32).ravel()
        self.fitted = True

    def score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(B, I)`` history rows -> ``(B, I)`` popularity, the same row for every user."""
        return np.tile(self.popularity, (rows.shape[0], 1))
