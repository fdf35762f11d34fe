"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): a closed-form item-item model.

With X the binary ``(U, I)`` training matrix and λ = ``model.ease_lambda``:
``P = (XᵀX + λI)⁻¹`` and ``B = I − P·diag(1/diag P)``, i.e. ``B_ij = −P_ij / P_jj`` off the diagonal and
``B_jj = 0``; a user's scores are ``x_u · B`` (``(B, I) @ (I, I)``). P is computed in float64 through a
Cholesky factorisation (XᵀX + λI is symmetric positive definite for λ > 0); B is kept in float32.

Memory: dense ``(I, I)`` float64 matrices (about three at the peak), so a dataset with more than
``model.ease_max_items`` items is refused with a ConfigError before anything is allocated.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from scipy.linalg import lapack

from ..errors import ConfigError
from ..params import ModelParams
from ..registry import register_model
from .closed_form import ClosedFormModel


def dense_gb(n_items: int) -> float:
    """GB of one dense ``(n_items, n_items)`` float64 matrix."""
    return n_items * n_items * 8 / 1e9


def ease_weights(x: sp.spmatrix, lam: float) -> np.ndarray:
    """``(U, I)`` binary matrix, λ > 0 -> ``(I, I)`` float64 B (zero diagonal) of EASE."""
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)  # (I, I) co-occurrence counts
    gram[np.diag_indices_from(gram)] += lam
    # gram is symmetric: its transpose is a Fortran-ordered view LAPACK can factor in place (no copy)
    factor, info = lapack.dpotrf(gram.T, lower=False, clean=True, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky of XᵀX + λI failed (info {info})")
    p, info = lapack.dpotri(factor, lower=False, overwrite_c=True)  # upper triangle of P
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverting XᵀX + λI failed (info {info})")
    upper = np.triu(p, 1)
    p = np.triu(p)
    p += upper.T  # symmetric P
    del upper
    p /= -np.diag(p)[None, :]  # B_ij = -P_ij / P_jj
    np.fill_diagonal(p, 0.0)
    return p


class EASEParams(ModelParams):
    """EASE: one L2 weight; refuses datasets with more than ``ease_max_items`` items (dense items² matrices)."""

    name: Literal["ease"] = "ease"
    ease_lambda: float = Field(default=500.0, gt=0, allow_inf_nan=False)  # P = (XᵀX + λI)^-1 (Steck 2019: ML-20M)
    ease_max_items: int = Field(default=20000, ge=1)  # dense items² float64 matrices, 3.2 GB each at 20000


@register_model("ease", EASEParams)
class EASE(ClosedFormModel):
    def __init__(self, config: EASEParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        bound = config.ease_max_items
        if n_items > bound:  # before any allocation
            raise ConfigError(
                f"config key 'model.ease_max_items': {bound} is below this dataset's {n_items} items; EASE needs "
                f"dense n_items x n_items float64 matrices (about 3 at the peak): {n_items} items = "
                f"{dense_gb(n_items):.1f} GB each > the bound {bound} items = {dense_gb(bound):.1f} GB each; "
                f"raise model.ease_max_items if the machine has the memory, or use model.name=itemknn")
        super().__init__(config, n_users, n_items, train)
        self.weights: np.ndarray | None = None  # (I, I) float32 B

    def fit_closed_form(self) -> None:
        self.weights = ease_weights(self.train_matrix, self.config.ease_lambda).astype(np.float32)
        self.fitted = True

    def score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """``(B, I)`` history rows -> ``x_u · B`` ``(B, I)``."""
        return np.asarray(rows @ self.weights)
