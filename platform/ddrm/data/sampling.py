"""BPR triple sampling (DESIGN §1, Alg. 1), vectorised with numpy.

One epoch = one triple per training interaction. Two ways to pick the positive pair:

- ``user`` (DESIGN Alg. 1, the reference code): ``u`` uniform over users with training items, ``i``
  uniform over u's training items;
- ``interaction``: every training pair once per epoch in random order (heavy users weigh more).

``j`` is uniform over items u never interacted with in training (rejection sampling against the
sorted training keys).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch


SAMPLING_MODES = ("user", "interaction")


class BPRSampler:
    """Draws ``(users, pos, neg)`` int64 arrays of shape ``(n_train,)`` per epoch."""

    def __init__(self, train: sp.csr_matrix, seed: int = 0, mode: str = "user") -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {mode!r}")
        self.mode = mode
        self.n_users, self.n_items = train.shape
        self.indptr = train.indptr.astype(np.int64)
        self.indices = train.indices.astype(np.int64)
        self.degree = np.diff(self.indptr)
        self.active_users = np.flatnonzero(self.degree > 0)
        if (self.degree >= self.n_items).any():
            full = int(np.flatnonzero(self.degree >= self.n_items)[0])
            raise ValueError(f"user {full} interacted with every item: no negative can be sampled")
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), self.degree)
        self.keys = rows * self.n_items + self.indices  # sorted because CSR rows/indices are sorted
        self.n_train = int(self.indptr[-1])
        self.rng = np.random.default_rng(seed)

    def is_train(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Bool mask: whether each (user, item) is a training interaction."""
        keys = users * self.n_items + items
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == keys

    def sample(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` triples (default: one per training interaction)."""
        n = self.n_train if n is None else n
        if self.mode == "interaction":
            rows = self.rng.permutation(self.n_train)[:n] if n <= self.n_train else self.rng.integers(0, self.n_train, n)
            users, pos = self.keys[rows] // self.n_items, self.indices[rows]
        else:
            users = self.active_users[self.rng.integers(0, len(self.active_users), size=n)]
            offsets = (self.rng.random(n) * self.degree[users]).astype(np.int64)
            pos = self.indices[self.indptr[users] + offsets]
        neg = self.rng.integers(0, self.n_items, size=n)
        bad = np.flatnonzero(self.is_train(users, neg))
        while len(bad):
            neg[bad] = self.rng.integers(0, self.n_items, size=len(bad))
            bad = bad[self.is_train(users[bad], neg[bad])]
        return users, pos, neg

    def batches(self, batch_size: int, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch of ``(users, pos, neg)`` LongTensor batches."""
        users, pos, neg = self.sample()
        u, p, g = (torch.from_numpy(a).to(device) for a in (users, pos, neg))
        for start in range(0, len(users), batch_size):
            yield u[start:start + batch_size], p[start:start + batch_size], g[start:start + batch_size]


class UserBatchSampler:
    """Batches of user ids for models trained on whole interaction vectors (Mult-VAE, CDAE, DiffRec):
    every user with training interactions once per epoch, in a fresh random order. Same interface as
    :class:`BPRSampler` (``rng``, ``n_train``, ``batches``); batches are 1-tuples ``(users,)``."""

    def __init__(self, train: sp.csr_matrix, seed: int = 0) -> None:
        self.users = np.flatnonzero(np.diff(train.indptr) > 0).astype(np.int64)
        self.n_train = len(self.users)
        self.rng = np.random.default_rng(seed)

    def batches(self, batch_size: int, device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor]]:
        order = torch.from_numpy(self.rng.permutation(self.users)).to(device)
        for start in range(0, len(order), batch_size):
            yield (order[start:start + batch_size],)
