"""Denoising diagnostics: AUC of clean vs injected training pairs, injected share of the unmasked top-20."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_interactions
from ddrm.config import Config
from ddrm.data.noise import inject_random_noise
from ddrm.data.prepared import InteractionData
from ddrm.diagnostics import has_known_noise, noise_diagnostics
from ddrm.train import run


def noisy_data(ratio: float = 0.3, seed: int = 0) -> InteractionData:
    train, valid, test = make_interactions(n_users=50, n_items=60, per_user=15, seed=seed)
    clean = InteractionData(name="tiny", path=Path("."), n_users=50, n_items=60, train=train, valid=valid, test=test)
    return inject_random_noise(clean, ratio, seed=seed)


def table_scorer(table: np.ndarray):
    scores = torch.from_numpy(table).float()
    return lambda users: scores[users]


def brute_force(table: np.ndarray, data: InteractionData, k: int = 20) -> dict[str, float]:
    """Direct pairwise AUC and per-user top-k shares (no ranks, no chunks)."""
    u, i = data.train[:, 0], data.train[:, 1]
    clean, noisy = table[u[~data.train_noise], i[~data.train_noise]], table[u[data.train_noise], i[data.train_noise]]
    auc = ((clean[:, None] > noisy[None, :]).sum() + 0.5 * (clean[:, None] == noisy[None, :]).sum()) / (
        len(clean) * len(noisy))
    shares = []
    for user in np.unique(u[data.train_noise]):
        injected = set(i[(u == user) & data.train_noise])
        top = np.argsort(-table[user], kind="stable")[:k]
        shares.append(len(injected & set(top)) / k)
    return {"noise_auc": auc, "noise_top20_share": float(np.mean(shares))}


def test_matches_brute_force_on_random_scores_with_ties():
    data = noisy_data()
    rng = np.random.default_rng(3)
    table = np.round(rng.normal(size=(data.n_users, data.n_items)), 1)  # many ties
    got = noise_diagnostics(table_scorer(table), data, batch_size=7)
    want = brute_force(table, data)
    assert got["noise_auc"] == pytest.approx(want["noise_auc"], abs=1e-9)
    # top-k with ties may break differently from argsort; use distinct scores for the share check
    table = rng.permutation(data.n_users * data.n_items).reshape(data.n_users, data.n_items).astype(float)
    assert noise_diagnostics(table_scorer(table), data)["noise_top20_share"] == pytest.approx(
        brute_force(table, data)["noise_top20_share"])


def test_direction_perfect_denoiser_vs_memoriser():
    data = noisy_data()
    u, i = data.train[:, 0], data.train[:, 1]
    denoiser = np.zeros((data.n_users, data.n_items))
    denoiser[u[~data.train_noise], i[~data.train_noise]] = 1.0  # clean pairs on top, injected at the bottom
    denoiser[u[data.train_noise], i[data.train_noise]] = -1.0
    memoriser = np.zeros((data.n_users, data.n_items))
    memoriser[u[data.train_noise], i[data.train_noise]] = 1.0  # injected pairs on top
    good = noise_diagnostics(table_scorer(denoiser), data)
    bad = noise_diagnostics(table_scorer(memoriser), data)
    assert good["noise_auc"] == 1.0 and good["noise_top20_share"] == 0.0
    assert bad["noise_auc"] == 0.0 and bad["noise_top20_share"] > 0.0
    assert 0 < good["noise_train_share"] < 1 and good["noise_train_share"] == bad["noise_train_share"]


def test_needs_known_noise():
    clean = noisy_data(ratio=0.0)
    assert not has_known_noise(clean)
    with pytest.raises(ValueError, match="no clean/injected flags"):
        noise_diagnostics(table_scorer(np.zeros((clean.n_users, clean.n_items))), clean)


def test_run_reports_diagnostics_for_backend_and_ddrm_only_with_known_noise(tiny_dataset_dir):
    config = Config().replace({"data.name": "tiny", "data.noise_ratio": 0.2, "train.epochs": 2,
                               "train.batch_size": 64, "ddrm.hidden_dims": [8, 16], "ddrm.steps": 3})
    result = run(config, data_dir=tiny_dataset_dir, progress=False, use_cache=False)
    assert set(result.diagnostics) == {"backend_noise_auc", "backend_noise_top20_share", "ddrm_noise_auc",
                                       "ddrm_noise_top20_share", "noise_train_share"}
    assert all(0.0 <= v <= 1.0 for v in result.diagnostics.values())
    assert result.to_json()["diagnostics"] == result.diagnostics
    clean = run(config.replace({"data.noise_ratio": 0.0, "ddrm.enabled": False}), data_dir=tiny_dataset_dir,
                progress=False, use_cache=False)
    assert clean.diagnostics == {} and "diagnostics" not in clean.to_json()
