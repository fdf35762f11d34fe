"""A search chooses on validation only (its trials never score the test split), and every run records its cost.

Unit tests of ``train.run(evaluate_test=...)`` and :class:`ddrm.loop.RunCost` on small generated data, then real
studies (local Ray, sqlite MLflow in a tmp dir): what a search's and an ablation's trial runs log, the reports,
replay and ``--import-runs``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_interactions
from ddrm.config import config_from_dict
from ddrm.data import write_prepared

BASE = {"data": {"name": "tiny"}, "train": {"epochs": 2, "batch_size": 64, "patience": 5, "threads": 1},
        "model": {"lr": 0.01}, "ddrm": {"hidden_dims": [8, 16], "steps": 4, "lr": 0.01}}


@pytest.fixture
def data_dir(tmp_path):
    train, valid, test = make_interactions(n_users=40, n_items=30, seed=1)
    write_prepared(tmp_path / "tiny", train, valid, test)
    write_prepared(tmp_path / "noisy", train, valid, test, train_noise=np.arange(len(train)) % 5 == 0)
    return tmp_path


def _without_test_and_times(value):
    """``RunResult.to_json()`` without ``test`` and the measured times (what must not depend on scoring test)."""
    if isinstance(value, dict):
        return {k: _without_test_and_times(v) for k, v in value.items()
                if k not in ("test", "seconds", "cpu_seconds", "cost", "wall_seconds")}
    if isinstance(value, list):
        return [_without_test_and_times(v) for v in value]
    return value


@pytest.mark.parametrize("overrides", [{}, {"ddrm.enabled": False}, {"data.name": "noisy"},
                                       {"model.name": "multivae", "model.hidden_dims": [16, 4], "model.batch_size": 8},
                                       {"model.name": "ease"}],
                         ids=["ddrm", "backend_alone", "known_noise", "multivae", "closed_form"])
def test_a_run_without_test_scores_no_test_split_and_is_otherwise_the_same(data_dir, overrides):
    import torch

    from ddrm import train

    config = config_from_dict(BASE).replace(overrides)
    scored = train.run(config, data_dir=data_dir, progress=False, use_cache=False)
    rng_scored = torch.get_rng_state()
    blind = train.run(config, data_dir=data_dir, progress=False, use_cache=False, evaluate_test=False)
    assert scored.test and scored.backend.test
    assert blind.test == {} and blind.backend.test == {} and (blind.ddrm is None or blind.ddrm.test == {})
    # training, validation, the selected epoch and the diagnostics do not depend on scoring test (evaluation
    # draws no random numbers: the generator state after the run is the same too)
    same = [json.dumps(_without_test_and_times(r.to_json()), sort_keys=True) for r in (blind, scored)]  # NaN == NaN
    assert same[0] == same[1]
    assert torch.equal(torch.get_rng_state(), rng_scored)
    if overrides.get("data.name") == "noisy":
        assert "ddrm_noise_auc" in blind.diagnostics  # training pairs only: computed without test


def test_a_cached_backend_trained_without_test_is_scored_on_test_when_a_later_run_needs_it(data_dir, tmp_path):
    from ddrm import train

    config = config_from_dict(BASE).replace({"ddrm.enabled": False})
    fresh = train.run(config, data_dir=data_dir, progress=False, use_cache=False)
    cache = tmp_path / "cache"
    searched = train.run(config, data_dir=data_dir, progress=False, cache_dir=cache, evaluate_test=False)
    assert not searched.backend.from_cache and searched.test == {}
    later = train.run(config, data_dir=data_dir, progress=False, cache_dir=cache)  # an ablation's trial
    assert later.backend.from_cache and later.test == fresh.test  # the cached best state, scored now
    again = train.run(config, data_dir=data_dir, progress=False, cache_dir=cache, evaluate_test=False)
    assert again.backend.from_cache and again.test == {}  # a hit never hands a search test metrics


def test_a_run_records_its_cost_and_a_cached_backend_counts_no_epochs(data_dir, tmp_path):
    from dataclasses import asdict

    from ddrm import train

    config = config_from_dict(BASE).replace({"train.epochs": 3, "ddrm.epochs": 2})
    cache = tmp_path / "cache"
    first = train.run(config, data_dir=data_dir, progress=False, cache_dir=cache)
    assert (first.backend.epochs_run, first.ddrm.epochs_run) == (3, 2)
    assert first.cost.epochs == 5 and not first.cost.backend_from_cache
    assert first.cost.wall_seconds >= first.backend.seconds + first.ddrm.seconds > 0
    assert first.cost.cpu_seconds > 0 and first.backend.cpu_seconds > 0 and first.ddrm.cpu_seconds > 0
    second = train.run(config, data_dir=data_dir, progress=False, cache_dir=cache)
    assert second.cost.backend_from_cache and second.cost.epochs == 2  # the backend's 3 epochs are not re-counted
    assert second.to_json()["cost"] == asdict(second.cost)
    model = train.run(config.replace({"model.name": "ease"}), data_dir=data_dir, progress=False)
    assert model.cost.epochs == 0 and not model.cost.backend_from_cache  # closed form: no training epoch
