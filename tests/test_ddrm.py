"""Tiny DDRM train + infer on generated data."""

import numpy as np
import pytest
import torch

from conftest import assert_learns_and_scores_all_items

from ddrm.config import Config
from ddrm.data import load_prepared
from ddrm.data.sampling import BPRSampler
from ddrm.diffusion.ddrm import DDRM
from ddrm.train import build_backend, fit_backend, fit_ddrm, run

FAST = {"train.epochs": 3, "train.batch_size": 64, "train.patience": 5, "backend.lr": 0.01,
        "ddrm.hidden_dims": [16, 32], "ddrm.steps": 5, "ddrm.lr": 0.01}


def tiny_config(**extra) -> Config:
    return Config().replace({"data.name": "tiny", **FAST, **extra})


def test_sampler_draws_valid_triples(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    sampler = BPRSampler(data.csr("train"), seed=0)
    users, pos, neg = sampler.sample()
    assert len(users) == len(data.train)
    assert sampler.is_train(users, pos).all()
    assert not sampler.is_train(users, neg).any()
    again = BPRSampler(data.csr("train"), seed=0).sample()
    assert all(np.array_equal(a, b) for a, b in zip((users, pos, neg), again))


def test_end_to_end_run_is_deterministic_and_uses_the_cache(tiny_dataset_dir):
    config = tiny_config()
    first = run(config, data_dir=tiny_dataset_dir, progress=False)
    second = run(config, data_dir=tiny_dataset_dir, progress=False)
    assert not first.backend.from_cache and second.backend.from_cache
    assert first.test == second.test
    for key in ("recall_at_10", "recall_at_20", "ndcg_at_10", "ndcg_at_20"):
        assert 0.0 <= first.test[key] <= 1.0
    assert first.ddrm is not None and first.ddrm.history and first.info["reverse_steps"] == 5


def test_ddrm_loss_decreases_and_scores_rank_all_items(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    config = tiny_config(**{"train.epochs": 15, "ddrm.epochs": 0})
    backend, _ = fit_backend(config, data, torch.device("cpu"), progress=False)
    torch.manual_seed(0)
    model = DDRM(config.ddrm, backend, data.csr("train"), seed=0)
    assert_learns_and_scores_all_items(model, data, steps=60)


def test_inference_steps_zero_is_the_mean_of_liked_items(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    config = tiny_config(**{"ddrm.inference_steps": 0})
    backend, _ = fit_backend(config, data, torch.device("cpu"), progress=False)
    model, result = fit_ddrm(config, data, backend, torch.device("cpu"), progress=False)
    assert result.epochs_run == 0  # nothing to train
    user_emb, item_emb = backend.embeddings()
    users = torch.arange(data.n_users)
    expected = torch.zeros(data.n_users, item_emb.shape[1])
    for u in range(data.n_users):
        items = data.train[data.train[:, 0] == u, 1]
        expected[u] = item_emb[items].mean(0)
    scores = model.scorer()(users)
    assert torch.allclose(scores, expected @ item_emb.T, atol=1e-5)


def test_item_only_and_noise_start(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    base = tiny_config()
    backend = build_backend(base, data, torch.device("cpu"))
    item_only = DDRM(base.replace({"ddrm.denoise_users": False}).ddrm, backend, data.csr("train"))
    assert item_only.user_denoiser is None
    u, i, j = (torch.from_numpy(a) for a in BPRSampler(data.csr("train"), 0).sample(32))
    item_only.loss(u, i, j).backward()  # trains without a user denoiser
    # noise start ignores the history: two different histories give the same start
    noise_cfg = base.replace({"ddrm.inference_start": "noise"}).ddrm
    model = DDRM(noise_cfg, backend, data.csr("train")).eval()
    users = torch.tensor([0, 1])
    noise = torch.randn(2, backend.config.dim)
    a = model.denoise_users(users, torch.zeros(2, backend.config.dim), noise)
    b = model.denoise_users(users, torch.ones(2, backend.config.dim) * 5, noise)
    assert torch.equal(a, b)
    mean_model = DDRM(base.ddrm, backend, data.csr("train")).eval()
    c = mean_model.denoise_users(users, torch.zeros(2, backend.config.dim), noise)
    d = mean_model.denoise_users(users, torch.ones(2, backend.config.dim) * 5, noise)
    assert not torch.equal(c, d)


def test_joint_fine_tuning_updates_the_backend_and_frozen_does_not(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    for freeze in (True, False):
        config = tiny_config(**{"ddrm.freeze_backend": freeze, "train.epochs": 2})
        backend, _ = fit_backend(config, data, torch.device("cpu"), progress=False)
        before = backend.user_emb.weight.detach().clone()
        model, _ = fit_ddrm(config, data, backend, torch.device("cpu"), progress=False)
        after = model.backend_embeddings()[0]
        assert torch.equal(backend.user_emb.weight, before)  # the cached backend object is never modified
        changed = not torch.allclose(after, before)
        assert changed is (not freeze)


def test_loss_weighting_extremes(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    base = tiny_config()
    backend = build_backend(base, data, torch.device("cpu"))
    u, i, j = (torch.from_numpy(a) for a in BPRSampler(data.csr("train"), 0).sample(64))
    values = {}
    for lam, gamma in ((1.0, 0.0), (0.0, 0.0), (0.5, 0.0), (0.5, 2.0)):
        torch.manual_seed(0)
        model = DDRM(base.replace({"ddrm.bpr_weight": lam, "ddrm.reweight_power": gamma}).ddrm, backend,
                     data.csr("train"))
        torch.manual_seed(1)
        values[(lam, gamma)] = model.loss(u, i, j).item()
    # lambda interpolates linearly between pure BPR and pure reconstruction (same noise, same weights)
    assert values[(0.5, 0.0)] == pytest.approx((values[(1.0, 0.0)] + values[(0.0, 0.0)]) / 2, rel=1e-5)
    # sigmoid(.)^gamma < 1 shrinks the loss
    assert values[(0.5, 2.0)] < values[(0.5, 0.0)]


def test_resume_from_a_snapshot_ends_like_an_uninterrupted_run(tiny_dataset_dir):
    config = tiny_config(**{"train.epochs": 4, "train.patience": 10})
    full = run(config, data_dir=tiny_dataset_dir, progress=False)
    snapshots = []

    def keep(event):
        if event.stage == "ddrm" and event.epoch == 2:
            snapshots.append(event.state())

    run(config, data_dir=tiny_dataset_dir, progress=False, callback=keep)
    assert snapshots and snapshots[0]["stage"] == "ddrm"
    resumed = run(config, data_dir=tiny_dataset_dir, progress=False, resume=snapshots[0])
    assert resumed.test == full.test
    assert [h["epoch"] for h in resumed.ddrm.history] == [1, 2, 3, 4]


def test_random_noise_injection(tiny_dataset_dir):
    from ddrm.data.noise import inject_random_noise
    from ddrm.train import load_dataset

    data = load_prepared("tiny", tiny_dataset_dir)
    noisy = inject_random_noise(data, 0.5, seed=3)
    added = noisy.train[len(data.train):]
    assert noisy.train_noise.sum() == len(added) and not noisy.train_noise[: len(data.train)].any()
    per_user = np.bincount(data.train[:, 0], minlength=data.n_users)
    assert len(added) == sum(int(np.floor(0.5 * c + 0.5)) for c in per_user if c)
    observed = {tuple(p) for p in np.concatenate([data.train, data.valid, data.test]).tolist()}
    injected = {tuple(p) for p in np.concatenate([added, noisy.valid[len(data.valid):]]).tolist()}
    assert not observed & injected  # only unobserved pairs
    assert np.array_equal(noisy.test, data.test)
    again = load_dataset(tiny_config(**{"data.noise_ratio": 0.5, "data.noise_seed": 3}), tiny_dataset_dir)
    assert np.array_equal(again.train, noisy.train) and again.fingerprint() != data.fingerprint()


def test_input_dropout_keeps_the_expectation_and_is_off_in_eval():
    from ddrm.diffusion.denoiser import InputDropout

    torch.manual_seed(0)
    dropout, x = InputDropout(0.3), torch.ones(20000, 64)
    y = dropout(x)
    assert abs(float((y == 0).float().mean()) - 0.3) < 0.005  # drop rate p
    assert abs(float(y.mean()) - 1.0) < 0.01 and torch.unique(y).tolist() == pytest.approx([0.0, 1.0 / 0.7])
    dropout.eval()
    assert torch.equal(dropout(x), x) and torch.equal(InputDropout(0.0)(x), x)


def test_time_budget_stops_each_stage_at_its_first_evaluation_past_it(tiny_dataset_dir):
    unlimited = run(tiny_config(**{"train.epochs": 4, "train.patience": 10}), data_dir=tiny_dataset_dir,
                    progress=False)
    assert unlimited.backend.stop_reason == "epochs" and unlimited.backend.epochs_run == 4
    budget = tiny_config(**{"train.epochs": 4, "train.patience": 10, "train.time_budget_minutes": 1e-9})
    stopped = run(budget, data_dir=tiny_dataset_dir, progress=False)
    for stage in (stopped.backend, stopped.ddrm):
        assert stage.stop_reason == "time_budget" and stage.epochs_run == 1 and len(stage.history) == 1
    # a budget-stopped backend is not the full run: it never answers for the unlimited config in the cache
    assert not stopped.backend.from_cache
    patience = run(tiny_config(**{"train.epochs": 50, "train.patience": 1, "ddrm.epochs": 50}),
                   data_dir=tiny_dataset_dir, progress=False)
    assert patience.backend.stop_reason == "patience" and patience.backend.epochs_run < 50
