"""Denoising diagnostics for data whose injected (false-positive) training pairs are known.

In the random-noise setting (``data.noise_ratio`` > 0, or a prepared split with ``train_noise.npy``) every
training pair is flagged clean or injected. A model that denoises its training data should score the
injected pairs *below* the clean ones. Two numbers per scorer (backend alone, DDRM):

- ``noise_auc``: P(score of a random clean training pair > score of a random injected one), ties count
  one half (the Mann-Whitney AUC over all training pairs). 0.5 = the model cannot tell them apart;
  higher = injected pairs are pushed down.
- ``noise_top20_share``: the share of each user's top-20 items, ranked over *all* items with nothing
  masked, that are the user's own injected training pairs, averaged over users with at least one injected
  pair. Lower = less of the noise is reproduced as a recommendation.

``noise_train_share`` (the share of injected pairs among those users' training pairs) is reported beside
them as the scale of the top-20 share. Cost: one scoring pass over all users, O(users x items) time,
O(chunk x items) memory.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import mannwhitneyu

from .data.prepared import InteractionData
from .evaluation import ScoreFn

TOP_K = 20


def has_known_noise(data: InteractionData) -> bool:
    """True when the training pairs carry clean/injected flags and both kinds occur."""
    flags = data.train_noise
    return flags is not None and bool(flags.any()) and not bool(flags.all())


@torch.no_grad()
def noise_diagnostics(score_fn: ScoreFn, data: InteractionData, *, batch_size: int = 1024,
                      device: torch.device | str = "cpu", k: int = TOP_K) -> dict[str, float]:
    """``{"noise_auc", "noise_top20_share", "noise_train_share"}`` of ``score_fn`` on ``data``'s train split.

    ``score_fn``: users ``(B,)`` -> scores ``(B, n_items)``. Raises ValueError without known noise flags.
    """
    if not has_known_noise(data):
        raise ValueError(f"dataset {data.name!r} has no clean/injected flags on its training pairs")
    device = torch.device(device)
    train = data.split("train")
    # stored values: 1 = clean, 2 = injected (CSR keeps them aligned with the column order)
    flags = sp.csr_matrix((data.train_noise.astype(np.int8) + 1, (train[:, 0], train[:, 1])),
                          shape=(data.n_users, data.n_items))
    flags.sort_indices()
    clean_scores, injected_scores, shares = [], [], []
    users = np.flatnonzero(np.diff(flags.indptr) > 0)
    k = min(k, data.n_items)
    for start in range(0, len(users), batch_size):
        rows = users[start:start + batch_size]
        scores = score_fn(torch.from_numpy(rows).to(device)).float()
        sub = flags[rows]
        local = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
        pair_scores = scores[torch.from_numpy(local).to(device),
                             torch.from_numpy(sub.indices.astype(np.int64)).to(device)].cpu().numpy()
        injected = sub.data == 2
        clean_scores.append(pair_scores[~injected])
        injected_scores.append(pair_scores[injected])

        injected_dense = torch.zeros(scores.shape, dtype=torch.bool, device=device)
        injected_dense[torch.from_numpy(local[injected]).to(device),
                       torch.from_numpy(sub.indices[injected].astype(np.int64)).to(device)] = True
        top = torch.topk(scores, k, dim=1).indices
        per_user = injected_dense.gather(1, top).float().sum(dim=1) / k
        has_noise = injected_dense.any(dim=1)
        shares.append(per_user[has_noise].cpu().numpy())
    clean, noisy = np.concatenate(clean_scores), np.concatenate(injected_scores)
    auc = float(mannwhitneyu(clean, noisy, alternative="two-sided").statistic) / (len(clean) * len(noisy))
    noisy_users = np.unique(train[data.train_noise, 0])
    in_noisy_users = np.isin(train[:, 0], noisy_users)
    return {"noise_auc": auc, "noise_top20_share": float(np.concatenate(shares).mean()),
            "noise_train_share": float(data.train_noise[in_noisy_users].mean())}
