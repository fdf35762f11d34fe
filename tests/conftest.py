"""Shared fixtures: the read-only ../shared/datasets folder (skips cleanly when absent) and small generated data."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_datasets_dir() -> Path:
    """``$DDRM_SHARED_DATASETS`` or ``<repo>/../shared/datasets``."""
    return Path(os.environ.get("DDRM_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


@pytest.fixture
def shared_datasets() -> Path:
    path = shared_datasets_dir()
    if not (path / "ml-1m_noisy" / "train_list.npy").is_file():
        pytest.skip(f"shared datasets not found at {path} (set DDRM_SHARED_DATASETS)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own backend-embedding cache; no test writes to ~/.cache."""
    monkeypatch.setenv("DDRM_CACHE_DIR", str(tmp_path_factory.mktemp("ddrm_cache")))


def make_interactions(n_users: int = 60, n_items: int = 40, per_user: int = 12, seed: int = 0):
    """Random disjoint train/valid/test pairs with a planted cluster structure (int64 (N, 2))."""
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, 4, size=n_users)
    item_cluster = np.arange(n_items) % 4
    train, valid, test = [], [], []
    for u in range(n_users):
        liked = np.flatnonzero(item_cluster == clusters[u])
        others = np.flatnonzero(item_cluster != clusters[u])
        k_in = min(len(liked), int(per_user * 0.8))
        items = np.concatenate([rng.choice(liked, k_in, replace=False),
                                rng.choice(others, per_user - k_in, replace=False)])
        rng.shuffle(items)
        n_train = int(len(items) * 0.6)
        n_valid = int(len(items) * 0.2)
        train += [(u, i) for i in items[:n_train]]
        valid += [(u, i) for i in items[n_train:n_train + n_valid]]
        test += [(u, i) for i in items[n_train + n_valid:]]
    as_array = lambda rows: np.asarray(rows, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    return as_array(train), as_array(valid), as_array(test)


@pytest.fixture
def tiny_dataset_dir(tmp_path) -> Path:
    """A data dir holding one small prepared split named ``tiny``."""
    from ddrm.data import write_prepared

    train, valid, test = make_interactions()
    write_prepared(tmp_path / "tiny", train, valid, test)
    return tmp_path


def fit_fixed_batch(model, data, steps: int, lr: float = 0.01, seed: int = 1) -> list[float]:
    """Train ``model.loss`` on one fixed BPR epoch-sized batch; returns the losses (for "loss decreases")."""
    import torch

    from ddrm.data.sampling import BPRSampler

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    u, i, j = (torch.from_numpy(a) for a in BPRSampler(data.csr("train"), seed=seed).sample())
    losses = []
    for _ in range(steps):
        loss = model.loss(u, i, j)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def assert_learns_and_scores_all_items(model, data, steps: int) -> None:
    """Loss falls by >20 % on a fixed batch, and eval-mode scores cover every item, finite."""
    import torch

    losses = fit_fixed_batch(model, data, steps)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    model.eval()
    scores = model.scorer()(torch.arange(data.n_users))
    assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()


@contextlib.contextmanager
def local_ray(cache_dir: Path):
    """A local Ray with 2 CPUs (never joining another cluster) and the backend cache at ``cache_dir``; shut down
    on exit. For module-scoped study fixtures, where the function-scoped cache fixture does not apply."""
    import ray

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DDRM_CACHE_DIR", str(cache_dir))
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
