import math

import numpy as np
import pytest
import torch

from conftest import make_interactions
from ddrm.data import write_prepared, load_prepared
from ddrm.evaluation import evaluate


def brute_force(scores: np.ndarray, data, split: str, k: int):
    """Per-user loops, straight from the definitions (DESIGN §3)."""
    masked = {"valid": [data.train], "test": [data.train, data.valid]}[split]
    truth_pairs = data.split(split)
    recalls, ndcgs = [], []
    for u in range(data.n_users):
        truth = set(truth_pairs[truth_pairs[:, 0] == u, 1].tolist())
        if not truth:
            continue
        row = scores[u].astype(np.float64).copy()
        for pairs in masked:
            row[pairs[pairs[:, 0] == u, 1]] = -np.inf
        ranked = sorted(range(data.n_items), key=lambda i: (-row[i], i))[:k]
        hits = [1.0 if i in truth else 0.0 for i in ranked]
        recalls.append(sum(hits) / len(truth))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(truth), k)))
        ndcgs.append(dcg / idcg)
    return float(np.mean(recalls)), float(np.mean(ndcgs)), len(recalls)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_matches_brute_force(tmp_path, seed, split):
    train, valid, test = make_interactions(n_users=37, n_items=29, per_user=10, seed=seed)
    write_prepared(tmp_path / "d", train, valid, test)
    data = load_prepared("d", tmp_path)
    rng = np.random.default_rng(seed)
    scores = rng.random((data.n_users, data.n_items)).astype(np.float32)  # distinct: no ties
    table = torch.from_numpy(scores)
    metrics = evaluate(lambda users: table[users], data, split, ks=(5, 10, 20), batch_size=7)
    for k in (5, 10, 20):
        recall, ndcg, n_users = brute_force(scores, data, split, k)
        assert metrics[f"recall_at_{k}"] == pytest.approx(recall, abs=1e-6)
        assert metrics[f"ndcg_at_{k}"] == pytest.approx(ndcg, abs=1e-6)
        assert metrics["n_users"] == n_users


def test_masked_items_never_count_and_perfect_scores_give_one(tmp_path):
    train, valid, test = make_interactions(n_users=20, n_items=30, seed=4)
    write_prepared(tmp_path / "d", train, valid, test)
    data = load_prepared("d", tmp_path)
    # score training items highest: after masking they must not occupy the top-K
    oracle = np.zeros((data.n_users, data.n_items), dtype=np.float32)
    oracle[train[:, 0], train[:, 1]] = 10.0
    oracle[valid[:, 0], valid[:, 1]] = 9.0
    oracle[test[:, 0], test[:, 1]] = 5.0
    table = torch.from_numpy(oracle)
    metrics = evaluate(lambda u: table[u], data, "test", ks=(10,), batch_size=6)
    assert metrics["recall_at_10"] == pytest.approx(1.0)
    assert metrics["ndcg_at_10"] == pytest.approx(1.0)
    valid_metrics = evaluate(lambda u: table[u], data, "valid", ks=(10,))
    assert valid_metrics["recall_at_10"] == pytest.approx(1.0)


def test_per_user_output_and_shape_check(tmp_path):
    train, valid, test = make_interactions(n_users=15, n_items=25, seed=5)
    write_prepared(tmp_path / "d", train, valid, test)
    data = load_prepared("d", tmp_path)
    table = torch.rand(data.n_users, data.n_items)
    means, per_user = evaluate(lambda u: table[u], data, "test", ks=(10,), per_user=True)
    assert per_user["recall_at_10"].shape == (means["n_users"],)
    assert np.isclose(per_user["recall_at_10"].mean(), means["recall_at_10"])
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda u: table[u, :3], data, "test")
