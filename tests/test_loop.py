"""The loop's parts (ddrm.loop): stop rules in priority order, early-stopping state as the resume ``track``,
every registered model on the model contract with its batch kind."""

import math

import pytest
import torch

from ddrm.backends.base import Backend
from ddrm.loop import BatchKind, EarlyStopping, ModelBase, StopRules
from ddrm.params import BackendParams
from ddrm.registry import get_model, model_names, model_params

TRACK_KEYS = ["best_score", "best_epoch", "best_state", "best_valid", "stale", "history", "epoch", "stopped",
              "stop_reason"]  # a resume snapshot's ``track`` (checkpoints written by earlier versions hold these)


def test_stop_rules_apply_epochs_then_patience_then_time_budget():
    rules = StopRules(epochs=5, patience=2, time_budget_minutes=1.0)
    assert rules.reason(5, stale=2, elapsed=120.0) == "epochs"
    assert rules.reason(3, stale=2, elapsed=120.0) == "patience"
    assert rules.reason(3, stale=1, elapsed=60.0) == "time_budget"
    assert rules.reason(3, stale=1, elapsed=59.0) is None
    assert StopRules(epochs=5, patience=2).reason(3, stale=1, elapsed=1e9) is None  # no budget set


def test_early_stopping_keeps_the_best_and_resumes_from_its_dict():
    rules = StopRules(epochs=10, patience=2)
    stopping = EarlyStopping()
    taken = []
    for epoch, score in enumerate([0.1, 0.3, 0.2, 0.25], start=1):
        stopping.observe(epoch, 1.0 / epoch, {"recall_at_20": score}, float(epoch), rules,
                         lambda e=epoch: taken.append(e) or {"w": torch.tensor(float(e))})
    assert taken == [1, 2] and stopping.best_epoch == 2 and stopping.best_state["w"].item() == 2.0
    assert stopping.stopped and stopping.stop_reason == "patience" and stopping.stale == 2
    assert [h["epoch"] for h in stopping.history] == [1, 2, 3, 4] and stopping.history[0]["seconds"] == 1.0
    track = stopping.as_dict()
    assert list(track) == TRACK_KEYS
    assert EarlyStopping(**track) == stopping
    fresh = EarlyStopping().as_dict()
    assert fresh["best_score"] == -math.inf and fresh["stop_reason"] == "epochs" and not fresh["stopped"]


@pytest.mark.parametrize("name", [n for n in model_names() if issubclass(model_params(n), BackendParams)])
def test_backends_follow_the_model_contract_on_bpr_triples(name):
    cls = get_model(name)
    assert issubclass(cls, Backend) and issubclass(cls, ModelBase) and cls.batch_kind is BatchKind.TRIPLES


def test_standalone_models_declare_their_batch_kind():
    kinds = {name: get_model(name).batch_kind for name in model_names()}
    assert all(issubclass(get_model(name), ModelBase) for name in model_names())
    assert {n for n, k in kinds.items() if k is BatchKind.NONE} == {"ease", "itemknn", "mostpop"}
    assert {n for n, k in kinds.items() if k is BatchKind.USERS} == {"cdae", "diffrec", "multivae"}
    assert kinds["adagcl"] is BatchKind.TRIPLES and get_model("adagcl").bpr_sampling == "interaction"
    assert get_model("adagcl").training_step is not ModelBase.training_step  # its own three updates per batch


def test_the_backend_cache_is_the_folder_a_caller_passes(tiny_dataset_dir, tmp_path):
    from ddrm import cache
    from ddrm.config import config_from_dict
    from ddrm.train import backend_cache_key, fit_backend, load_dataset, run

    config = config_from_dict({"data": {"name": "tiny"}, "ddrm": {"enabled": False},
                               "train": {"epochs": 1, "batch_size": 64}})
    data = load_dataset(config, tiny_dataset_dir)
    folder = tmp_path / "given"
    _, first = fit_backend(config, data, torch.device("cpu"), progress=False, cache_dir=folder)
    key = backend_cache_key(config, data)
    assert not first.from_cache and cache.has_entry(key, folder) and not cache.has_entry(key)  # not $DDRM_CACHE_DIR
    assert run(config, data=data, progress=False, cache_dir=folder).info["backend_from_cache"]
    assert not run(config, data=data, progress=False).info["backend_from_cache"]  # the default folder: empty
