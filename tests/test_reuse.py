"""Reusing finished trials (``ddrm ablate --reuse-from``): matching by the complete config, and the replay."""

from __future__ import annotations

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from ddrm.codeversion import run_tags
from ddrm.config import config_from_dict
from ddrm.errors import ConfigError
from ddrm.tuning.reuse import check_source, explain_misses, find_reusable, flat_params, replay, trial_key

CONFIG = {"data": {"name": "tiny"}, "ddrm": {"steps": 4}}


def log_trial(uri: str, config, status: str = "FINISHED", valid=(0.1, 0.3, 0.2), code: dict | None = None) -> str:
    """A trial run as the study callback writes it: params, code tags, per-epoch valid_* and loss, final best/test.
    ``code``: the code tags to write instead of this checkout's."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("earlier") or client.get_experiment(client.create_experiment("earlier"))
    tags = code if code is not None else run_tags(config)
    run = client.create_run(experiment.experiment_id, tags={"role": "trial", "variant": "full", "seed": "0", **tags})
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in flat_params(config).items()]
    metrics = [Metric(name, value, 0, epoch) for epoch, r in enumerate(valid, start=1)
               for name, value in (("valid_recall_at_20", r), ("loss", 1.0 / epoch), ("epoch", epoch))]
    metrics += [Metric("best_recall_at_20", max(valid), 0, len(valid)), Metric("best_epoch", 2, 0, len(valid)),
                Metric("diag_ddrm_noise_auc", 0.7, 0, len(valid))]
    metrics += [Metric(f"test_{name}", 0.25, 0, len(valid)) for name in ("recall_at_10", "recall_at_20",
                                                                          "ndcg_at_10", "ndcg_at_20")]
    client.log_batch(run_id, params=params, metrics=metrics)
    client.set_terminated(run_id, status=status)
    return run_id


def test_a_trial_with_exactly_the_same_config_is_found_and_replayed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'earlier.db'}"
    config = config_from_dict(CONFIG)
    run_id = log_trial(uri, config)
    log_trial(uri, config.replace({"seed": 1}), status="FAILED")  # a failed run is never reused
    other_seed = config.replace({"seed": 1})
    other_threads = config.replace({"train.threads": 3})
    found = find_reusable([("full", 0, config), ("full", 1, other_seed), ("x", 0, other_threads)], [uri])
    assert list(found) == [trial_key("full", 0)]  # any differing key (seed, threads) is no match
    record = found[trial_key("full", 0)]
    assert record["source"] == f"{uri}#{run_id}"
    assert record["history"] == [{"epoch": 1, "recall_at_20": 0.1, "loss": 1.0},
                                 {"epoch": 2, "recall_at_20": 0.3, "loss": 0.5},
                                 {"epoch": 3, "recall_at_20": 0.2, "loss": pytest.approx(1 / 3)}]
    final = record["final"]
    assert final["done"] is True and final["epoch"] == 3 and final["test_recall_at_20"] == 0.25
    assert final["recall_at_20"] == final["best_recall_at_20"] == 0.3  # the selected epoch's validation
    assert final["diag_ddrm_noise_auc"] == 0.7 and final["best_epoch"] == 2
    reported = []
    replay(record, reported.append)
    assert reported == record["history"] + [record["final"]]


def test_the_trainable_replays_a_reused_trial_without_training(monkeypatch, tmp_path):
    from ray import tune

    from ddrm.tuning.trainable import ddrm_trainable

    record = {"source": "x#y", "history": [{"epoch": 1, "loss": 0.5, "recall_at_20": 0.1}],
              "final": {"epoch": 1, "done": True, "test_recall_at_20": 0.2}}
    reported = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reported.append(metrics))
    from ddrm.tuning.plan import StudyPlan

    plan = StudyPlan(CONFIG, data_dir=str(tmp_path / "absent"), cache_dir=str(tmp_path / "cache"),
                     reuse={trial_key("full", 0): record})
    ddrm_trainable({"variant": "full", "seed": 0}, plan=plan)  # training would fail: no data there
    assert reported == record["history"] + [record["final"]]


def test_a_missing_reuse_store_is_one_error_and_is_not_created(tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(ConfigError, match=r"--reuse-from sqlite:///.*nope.db: no such MLflow database file"):
        check_source(f"sqlite:///{path}")
    assert not path.exists()


def test_a_run_from_other_code_is_not_replayed_and_the_miss_is_explained(tmp_path):
    uri = f"sqlite:///{tmp_path / 'earlier.db'}"
    config = config_from_dict(CONFIG)
    log_trial(uri, config, code={"code_fingerprint": "0123456789abcdef"})  # same config, other source
    log_trial(uri, config.replace({"seed": 1}), code={})  # a run from before fingerprints
    trials = [("full", 0, config), ("full", 1, config.replace({"seed": 1})),
              ("x", 0, config.replace({"ddrm.steps": 7}))]
    found = find_reusable(trials, [uri])
    assert found == {}
    why = explain_misses(trials, [uri], found)
    assert "same config but other code: code_fingerprint 0123456789abcdef" in why[trial_key("full", 0)]
    assert "predates code fingerprints" in why[trial_key("full", 1)]
    assert "ddrm.steps (7 here vs 4)" in why[trial_key("x", 0)]
