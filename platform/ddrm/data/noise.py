"""Random-noise setting on a prepared split (DESIGN §2, Fig. 3): add sampled unobserved pairs.

For each user with training data, ``round(ratio * |train_u|)`` items the user never interacted with
(in any split) are added to train and ``round(ratio * |valid_u|)`` to valid; test is untouched. The
injected training rows are flagged in ``train_noise`` so diagnostics can tell them apart.
"""

from __future__ import annotations

import numpy as np

from .prepared import InteractionData
from .split import _round_half_up, sample_unobserved


def inject_random_noise(data: InteractionData, ratio: float, seed: int = 0) -> InteractionData:
    """A new :class:`InteractionData` with ``ratio`` random false positives in train and valid."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"noise ratio must be in [0, 1], got {ratio}")
    if ratio == 0:
        return data
    n_items = np.int64(data.n_items)
    observed = np.concatenate([a[:, 0] * n_items + a[:, 1] for a in (data.train, data.valid, data.test)])
    n_train = np.bincount(data.train[:, 0], minlength=data.n_users)
    n_valid = np.bincount(data.valid[:, 0], minlength=data.n_users)
    users = np.flatnonzero(n_train > 0).astype(np.int64)
    k_train = _round_half_up(ratio * n_train[users]).astype(np.int64)
    k_valid = _round_half_up(ratio * n_valid[users]).astype(np.int64)
    u, i = sample_unobserved(np.random.default_rng(seed), users, k_train + k_valid,
                             np.arange(data.n_items, dtype=np.int64), observed, int(n_items))
    order = np.argsort(u, kind="stable")
    u, i = u[order], i[order]
    owner = np.searchsorted(users, u)
    rank = np.arange(len(u)) - np.searchsorted(u, u)  # position within the user's (sorted) group
    to_train = rank < k_train[owner]
    added_train = np.stack([u[to_train], i[to_train]], axis=1)
    added_valid = np.stack([u[~to_train], i[~to_train]], axis=1)
    old_flags = data.train_noise if data.train_noise is not None else np.zeros(len(data.train), dtype=bool)
    meta = {**data.meta, "noise_kind": "random", "noise_ratio": ratio, "noise_seed": seed}
    return InteractionData(
        name=f"{data.name}+random{ratio:g}", path=data.path, n_users=data.n_users, n_items=data.n_items,
        train=np.concatenate([data.train, added_train]), valid=np.concatenate([data.valid, added_valid]),
        test=data.test, train_noise=np.concatenate([old_flags, np.ones(len(added_train), dtype=bool)]), meta=meta)
