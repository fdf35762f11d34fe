"""backend.sparse_grad: MF with sparse embedding gradients and SparseAdam (a lazy Adam)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_interactions
from ddrm.config import load_config
from ddrm.data import write_prepared
from ddrm.data.prepared import load_prepared
from ddrm.errors import ConfigError
from ddrm.train import backend_cache_key, backend_optimizer, build_backend, run


@pytest.fixture()
def tiny(tmp_path):
    train, valid, test = make_interactions(n_users=60, n_items=40, seed=1)
    write_prepared(tmp_path / "tiny", train, valid, test)
    return tmp_path


def _config(**overrides):
    return load_config(None, {"data.name": "tiny", "ddrm.enabled": False, "train.epochs": 3, "backend.lr": 0.01,
                              **overrides})


def _rows_moved_by_second_step(config, data) -> list[int]:
    """Item rows that change in a second step on other items than the first step's."""
    backend = build_backend(config, data, torch.device("cpu"))
    optimizer = backend_optimizer(backend, config)
    for users, pos, neg in ((torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])),
                            (torch.tensor([0, 1]), torch.tensor([6, 7]), torch.tensor([8, 9]))):
        before = backend.item_emb.weight.detach().clone()
        optimizer.zero_grad()
        backend.loss(users, pos, neg).backward()
        optimizer.step()
    return (backend.item_emb.weight.detach() != before).any(dim=1).nonzero().flatten().tolist()


def test_a_sparse_step_moves_only_the_rows_of_its_batch(tiny):
    data = load_prepared("tiny", tiny)
    sparse = _config(**{"backend.sparse_grad": True})
    assert isinstance(backend_optimizer(build_backend(sparse, data, torch.device("cpu")), sparse),
                      torch.optim.SparseAdam)
    assert _rows_moved_by_second_step(sparse, data) == [6, 7, 8, 9]  # lazy: the first batch's rows rest
    assert _rows_moved_by_second_step(_config(), data) == [2, 3, 4, 5, 6, 7, 8, 9]  # dense Adam: momentum


def test_sparse_and_dense_runs_both_train_to_finite_metrics_and_are_cached_apart(tiny):
    results = {}
    for sparse in (False, True):
        config = _config(**{"backend.sparse_grad": sparse})
        results[sparse] = run(config, data_dir=tiny, use_cache=False, progress=False)
        assert all(math.isfinite(v) for v in results[sparse].test.values())
    data = load_prepared("tiny", tiny)
    assert backend_cache_key(_config(), data) != backend_cache_key(_config(**{"backend.sparse_grad": True}), data)
    assert isinstance(backend_optimizer(build_backend(_config(), data, torch.device("cpu")), _config()),
                      torch.optim.Adam)


@pytest.mark.parametrize("overrides, fragment", [
    ({"model.name": "lightgcn"}, r"unknown config key 'model\.sparse_grad'.*lightgcn"),  # MF's key, not LightGCN's
    ({"denoise.name": "deca"}, r"model\.sparse_grad.*deca"),
    ({"model.sparse_grad": "yes"}, r"model\.sparse_grad.*'yes'"),
])
def test_sparse_grad_outside_plain_mf_is_one_config_error(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, {"model.sparse_grad": True, **overrides})
