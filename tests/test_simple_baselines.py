"""Simple strong baselines (DESIGN §4a): EASE, ItemKNN and MostPop as closed-form standalone models.

Each is checked against a direct implementation of its formula, runs through ``ddrm.train.run`` with the
shared evaluation (one epoch-0 evaluation, no optimiser), and rejects bad settings with one ConfigError.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import make_interactions
from ddrm.baselines.itemknn import knn_similarity
from ddrm.cli import main
from ddrm.config import config_from_dict
from ddrm.registry import model_params
from ddrm.data.prepared import load_prepared
from ddrm.errors import ConfigError
from ddrm.registry import get_model
from ddrm.train import run


def binary_matrix(n_users: int = 30, n_items: int = 25, density: float = 0.2, seed: int = 0) -> sp.csr_matrix:
    """A random 0/1 ``(n_users, n_items)`` CSR with one item nobody has (a zero column)."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[:, -1] = 0.0
    return sp.csr_matrix(dense)


def fitted(name: str, x: sp.csr_matrix, **settings):
    model = get_model(name)(model_params(name)(**settings), x.shape[0], x.shape[1], x)
    model.fit_closed_form()
    return model


def all_scores(model, n_users: int) -> np.ndarray:
    return model.scorer()(torch.arange(n_users)).numpy()


# --- EASE -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.5, 10.0, 500.0])
def test_ease_equals_the_closed_form(lam):
    x = binary_matrix()
    model = fitted("ease", x, ease_lambda=lam)
    dense = x.toarray().astype(np.float64)
    p = np.linalg.inv(dense.T @ dense + lam * np.eye(dense.shape[1]))
    b = np.eye(dense.shape[1]) - p @ np.diag(1.0 / np.diag(p))  # Steck 2019, eq. 8
    np.fill_diagonal(b, 0.0)
    assert np.allclose(model.weights, b, rtol=1e-4, atol=1e-6)
    assert np.all(np.diag(model.weights) == 0)
    assert np.allclose(all_scores(model, x.shape[0]), dense @ b, rtol=1e-4, atol=1e-5)


def test_repeated_training_pairs_count_once():
    x = binary_matrix()
    doubled = x.copy()
    doubled.data[:] = 2.0  # what InteractionData.csr gives for a pair listed twice
    for name in ("ease", "itemknn", "mostpop"):
        assert np.array_equal(all_scores(fitted(name, x), 30), all_scores(fitted(name, doubled), 30)), name


# --- ItemKNN --------------------------------------------------------------------------------------------

def brute_force_knn(x: sp.csr_matrix, k: int, shrink: float) -> np.ndarray:
    """S[j, i] = sim(j, i) for the k items j != i most similar to i (ties: lower j first), loop by loop."""
    dense = x.toarray().astype(np.float64)
    n_items = dense.shape[1]
    norms = [math.sqrt(float(dense[:, i] @ dense[:, i])) for i in range(n_items)]
    s = np.zeros((n_items, n_items))
    for i in range(n_items):
        sims = {}
        for j in range(n_items):
            if j == i:
                continue
            denom = norms[j] * norms[i] + shrink
            sims[j] = float(dense[:, j] @ dense[:, i]) / denom if denom > 0 else 0.0
        for j in sorted(sims, key=lambda j: (-sims[j], j))[:k]:
            s[j, i] = sims[j]
    return s


@pytest.mark.parametrize("k,shrink", [(1, 0.0), (3, 0.0), (5, 10.0), (24, 2.5), (100, 1.0)])
def test_itemknn_equals_a_brute_force_loop(k, shrink):
    x = binary_matrix(density=0.15, seed=k)  # sparse enough for many tied similarities
    expected = brute_force_knn(x, k, shrink)
    model = fitted("itemknn", x, knn_k=k, knn_shrink=shrink)
    assert np.allclose(model.similarity.toarray(), expected, rtol=1e-6, atol=0)
    assert np.all(model.similarity.diagonal() == 0)
    assert np.allclose(all_scores(model, x.shape[0]), x.toarray() @ expected, rtol=1e-5, atol=1e-6)
    # column blocks (as for large item counts) give the same matrix
    blocked = knn_similarity(x, k, shrink, block_elements=2 * x.shape[1])
    assert np.array_equal(blocked.toarray(), model.similarity.toarray())


def test_itemknn_keeps_at_most_k_neighbours_per_item():
    x = binary_matrix(n_users=80, n_items=40, density=0.3, seed=3)
    s = fitted("itemknn", x, knn_k=4, knn_shrink=1.0).similarity.tocsc()
    assert np.diff(s.indptr).max() <= 4


# --- MostPop --------------------------------------------------------------------------------------------

def test_mostpop_ranks_by_train_counts():
    train, _, _ = make_interactions()
    n_users, n_items = int(train[:, 0].max()) + 1, int(train[:, 1].max()) + 1
    x = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (train[:, 0], train[:, 1])), shape=(n_users, n_items))
    counts = np.bincount(train[:, 1], minlength=n_items)
    scores = all_scores(fitted("mostpop", x), n_users)
    assert np.array_equal(scores, np.tile(counts.astype(np.float32), (n_users, 1)))
    order = np.argsort(-scores[0], kind="stable")
    assert np.all(np.diff(counts[order]) <= 0)  # ranking = descending train popularity


# --- through ddrm.train.run -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ease", "itemknn", "mostpop"])
def test_runs_through_train_run(tiny_dataset_dir, name):
    config = config_from_dict({"data": {"name": "tiny", "dir": str(tiny_dataset_dir)}, "model": {"name": name},
                               "train": {"threads": 1}})
    events = []
    result = run(config, callback=events.append, progress=False)
    stage = result.backend
    assert [(e.stage, e.epoch) for e in events] == [("model", 0)]
    assert stage.best_epoch == 0 and stage.epochs_run == 0 and stage.stop_reason == "closed_form"
    assert len(stage.history) == 1 and stage.valid == result.valid and stage.test == result.test
    for split in (result.valid, result.test):
        assert all(math.isfinite(v) for v in split.values()) and 0 <= split["recall_at_20"] <= 1
    assert events[0].state() == {"stage": "model"}  # a resumed (Tune) trial just refits
    assert result.to_json()["model"]["stop_reason"] == "closed_form"


def test_cli_trains_a_closed_form_model(tiny_dataset_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "ease", "--dataset", "tiny", "--data-dir", str(tiny_dataset_dir),
                 "--set", "model.ease_lambda=50", "--out", str(out), "--quiet"]) == 0
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["config"]["model"]["ease_lambda"] == 50.0 and 0 <= payload["test"]["recall_at_20"] <= 1


# --- bad settings ---------------------------------------------------------------------------------------

def test_ease_memory_bound_is_a_config_error_and_nothing_is_written(tiny_dataset_dir, tmp_path, capsys):
    config = config_from_dict({"data": {"name": "tiny", "dir": str(tiny_dataset_dir)},
                               "model": {"name": "ease", "ease_max_items": 10}})
    with pytest.raises(ConfigError, match="model.ease_max_items") as info:
        run(config, progress=False)
    assert "40 items" in str(info.value) and "GB" in str(info.value)
    out = tmp_path / "run"
    assert main(["train", "--model", "ease", "--dataset", "tiny", "--data-dir", str(tiny_dataset_dir),
                 "--set", "model.ease_max_items=10", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "model.ease_max_items" in err and len(err.splitlines()) == 1
    # no file written (the CLI may already have created --out, empty, when it checked that it can write there)
    assert not out.exists() or not any(out.iterdir())


def test_ease_refuses_before_allocating():
    """50,000 items would need 20 GB per dense matrix: refused at construction, long before any allocation."""
    x = sp.csr_matrix((3, 50_000), dtype=np.float32)
    with pytest.raises(ConfigError, match=r"50000 items = 20\.0 GB"):
        get_model("ease")(model_params("ease")(), 3, 50_000, x)


@pytest.mark.parametrize("key,value", [
    ("knn_k", 0), ("knn_k", -3), ("knn_k", 2.5), ("knn_shrink", -1.0), ("knn_shrink", float("inf")),
    ("ease_lambda", 0.0), ("ease_lambda", -5.0), ("ease_lambda", float("nan")), ("ease_lambda", float("inf")),
    ("ease_max_items", 0),
])
def test_bad_settings_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        config_from_dict({"model": {"name": "ease", key: value}})


# --- the shipped data (DESIGN §4a) ----------------------------------------------------------------------

@pytest.mark.dataset
def test_ease_reaches_the_reference_on_ml1m_noisy(shared_datasets):
    """DESIGN §4a: EASE at λ 1200 (chosen there on valid R@20) gives test R@20 .1335 on ml-1m_noisy; ~5 s."""
    start = time.perf_counter()
    data = load_prepared("ml-1m_noisy", shared_datasets)
    config = config_from_dict({"data": {"name": "ml-1m_noisy"}, "model": {"name": "ease", "ease_lambda": 1200},
                               "train": {"threads": 1}})
    result = run(config, data=data, progress=False)
    assert result.test["recall_at_20"] >= 0.133
    assert time.perf_counter() - start < 60
