"""What the closed-form standalone models share (EASE, ItemKNN, MostPop): nothing is learnt by gradient steps.

``batch_kind = BatchKind.NONE`` tells :func:`ddrm.train.fit_model` to build no optimiser and run no epochs: it calls
:meth:`ClosedFormModel.fit_closed_form` once and evaluates at epoch 0 (validation, then test) with the same
full-ranking evaluation and masking as every other model. The fitted matrices are plain numpy / scipy
attributes, not parameters or buffers: the model's ``state_dict`` is empty, and refitting is deterministic.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..loop import BatchKind, ModelBase
from ..params import ModelParams


class ClosedFormModel(ModelBase):
    """Base: ``X`` = the binary ``(n_users, n_items)`` training matrix (float32 CSR, a pair repeated in the
    split counts once); subclasses implement :meth:`fit_closed_form` and :meth:`score_rows`."""

    batch_kind = BatchKind.NONE  # fit_model: no optimiser, no epochs

    def __init__(self, config: ModelParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        x = sp.csr_matrix(train, dtype=np.float32, copy=True)
        x.sum_duplicates()
        x.eliminate_zeros()
        x.data[:] = 1.0
        x.sort_indices()
        self.train_matrix: sp.csr_matrix = x
        self.fitted = False

    def fit_closed_form(self) -> None:
        """Compute the model from ``self.train_matrix`` (sets ``self.fitted``)."""
        raise NotImplementedError

    def score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(B, I)`` binary history rows -> ``(B, I)`` float32 scores."""
        raise NotImplementedError

    def scorer(self):
        """``users (B,) -> (B, I)`` float32 scores on the users' device (fits first if not yet fitted)."""
        if not self.fitted:
            self.fit_closed_form()

        def score(users: torch.Tensor) -> torch.Tensor:
            rows = self.train_matrix[users.cpu().numpy()]
            scores = np.ascontiguousarray(self.score_rows(rows), dtype=np.float32)
            return torch.from_numpy(scores).to(users.device)

        return score
