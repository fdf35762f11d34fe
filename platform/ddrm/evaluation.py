"""Full-ranking Recall@K / NDCG@K (DESIGN §3), chunked over users.

Every item is ranked for every evaluated user; items the user interacted with in the masked splits
(train; train + valid when scoring test) can never be recommended. Memory is O(chunk x items).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .data.prepared import InteractionData
from .metrics import CUTOFFS, metric_name

DEFAULT_KS: tuple[int, ...] = CUTOFFS
ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # users (B,) -> scores (B, n_items)

MASKED_SPLITS = {"valid": ("train",), "test": ("train", "valid")}




def _dense_rows(matrix: sp.csr_matrix, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Boolean ``(len(rows), n_items)`` tensor of the nonzeros of ``matrix[rows]``."""
    sub = matrix[rows]
    out = torch.zeros(sub.shape, dtype=torch.bool, device=device)
    row_idx = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    out[torch.from_numpy(row_idx).to(device), torch.from_numpy(sub.indices.astype(np.int64)).to(device)] = True
    return out


def rank_metrics(
    scores: torch.Tensor, truth: torch.Tensor, exclude: torch.Tensor | None, ks: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Per-user metrics for one chunk.

    scores: (B, I) float; truth: (B, I) bool ground truth (each row non-empty); exclude: (B, I) bool
    items never to recommend. Returns ``{name: (B,) tensor}``.
    """
    scores = scores.float()
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    k_max = min(max(ks), scores.shape[1])
    top = torch.topk(scores, k_max, dim=1).indices
    hits = truth.gather(1, top).float()  # (B, k_max)
    n_true = truth.sum(dim=1).float()
    discounts = 1.0 / torch.log2(torch.arange(2, k_max + 2, device=scores.device, dtype=torch.float32))
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        kk = min(k, k_max)
        out[metric_name("recall", k)] = hits[:, :kk].sum(dim=1) / n_true
        dcg = (hits[:, :kk] * discounts[:kk]).sum(dim=1)
        ideal_len = torch.clamp(n_true, max=kk).long()
        idcg = torch.cumsum(discounts[:kk], dim=0)[ideal_len - 1]
        out[metric_name("ndcg", k)] = dcg / idcg
    return out


@torch.no_grad()
def evaluate(
    score_fn: ScoreFn,
    data: InteractionData,
    split: str = "valid",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    per_user: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """Mean metrics over users with a non-empty ``split`` ground truth.

    Returns ``{"recall_at_10": ..., "ndcg_at_10": ..., "n_users": N}``; with ``per_user`` also the
    per-user arrays (keyed likewise, plus ``"users"``) for significance tests.
    """
    if split not in MASKED_SPLITS:
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    device = torch.device(device)
    truth_csr = data.csr(split)
    mask_csr = sum((data.csr(s) for s in MASKED_SPLITS[split][1:]), data.csr(MASKED_SPLITS[split][0]))
    mask_csr = sp.csr_matrix(mask_csr)
    users = np.flatnonzero(np.diff(truth_csr.indptr) > 0)
    collected: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(users), batch_size):
        rows = users[start:start + batch_size]
        user_tensor = torch.from_numpy(rows).to(device)
        scores = score_fn(user_tensor)
        if scores.shape != (len(rows), data.n_items):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {(len(rows), data.n_items)}")
        chunk = rank_metrics(scores, _dense_rows(truth_csr, rows, device), _dense_rows(mask_csr, rows, device), ks)
        for name, values in chunk.items():
            collected.setdefault(name, []).append(values.cpu())
    arrays = {name: torch.cat(parts).numpy() for name, parts in collected.items()}
    means: dict[str, float] = {name: float(values.mean()) for name, values in arrays.items()}
    means["n_users"] = int(len(users))
    if per_user:
        arrays["users"] = users
        return means, arrays
    return means
