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


def test_a_resumed_trial_adds_what_it_spent_before_its_checkpoint():
    from types import SimpleNamespace

    from ddrm.loop import RunCost
    from ddrm.tuning.trainable import TrialCost

    first = TrialCost()
    for epoch in (1, 2, 3):  # the backend trained inside the trial, then DDRM's epoch 1 checkpointed
        first.observe(SimpleNamespace(stage="backend", epoch=epoch))
    first.observe(SimpleNamespace(stage="ddrm", epoch=1))
    assert first.so_far()["cost_epochs"] == 4
    state = first.state("ddrm")
    assert state["other_epochs"] == 3 and state["cpu_seconds"] >= 0 and state["wall_seconds"] >= 0
    # the retry loads the backend from the cache and goes on with DDRM's epoch counter (2, 3)
    second = TrialCost({**state, "wall_seconds": 10.0, "cpu_seconds": 20.0})
    second.observe(SimpleNamespace(stage="ddrm", epoch=3))
    assert second.so_far()["cost_epochs"] == 6 and second.so_far()["cost_cpu_seconds"] >= 20.0
    final = second.final(RunCost(wall_seconds=1.0, cpu_seconds=2.0, epochs=3, backend_from_cache=True))
    assert final == {"cost_wall_seconds": 11.0, "cost_cpu_seconds": 22.0, "cost_epochs": 6.0,
                     "cost_backend_from_cache": 1.0}


def test_the_best_config_of_a_search_is_chosen_on_validation_alone(tmp_path):
    import pandas as pd

    from ddrm.report.runs import best_run, write_best_config

    frame = pd.DataFrame({"run_id": ["a", "b", "c"], "best_recall_at_20": [0.1, 0.3, None],
                          "test_recall_at_20": [0.5, 0.1, None], "param.model.name": ["mf"] * 3,
                          "param.seed": ["0"] * 3, "param.data.name": ["tiny"] * 3})
    assert best_run(frame)["run_id"] == "b"  # the higher test of "a" plays no part; "c" never finished
    assert best_run(frame.drop(columns="test_recall_at_20"))["run_id"] == "b"  # a search: no test column at all
    path = write_best_config(frame.drop(columns="test_recall_at_20"), tmp_path, {"tags": {"kind": "tune"}})
    header = path.read_text().splitlines()[0]
    assert "run b" in header and "valid 0.3000" in header and "test" not in header


def test_the_cost_line_counts_each_run_once_and_says_what_it_left_out():
    import pandas as pd

    from ddrm.report.cost import cost_line, study_cost

    frame = pd.DataFrame({"cost_wall_seconds": [3600.0, 1800.0, 7200.0, None],
                          "cost_cpu_seconds": [7200.0, 3600.0, 9999.0, None], "cost_epochs": [10, 5, 99, None],
                          "reused_from": ["", "", "sqlite:///a.db#r1", ""]})
    assert study_cost(frame) == {"runs": 2, "epochs": 15, "cpu_hours": 3.0, "wall_hours": 1.5, "replayed": 1,
                                 "unrecorded": 1}
    assert cost_line(frame) == ("cost: 2 runs, 15 trial-epochs, 3.000 CPU-hours, 1.500 wall-hours (not counted: "
                                "1 replayed (cost paid by their source runs); 1 without a cost record).")
    assert cost_line(pd.DataFrame({"test_recall_at_20": [0.1]})) is None  # a store from before costs were logged


# ------------------------------------------------------------------------------ real studies (Ray + MLflow)
STUDY_BASE = ("base:\n  data: {name: tiny}\n  train: {epochs: 3, batch_size: 64, patience: 5}\n"
              "  model: {lr: 0.01}\n  ddrm: {hidden_dims: [8, 16], steps: 4, lr: 0.01}\n")


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """In one store: an ablation (backend alone vs DDRM, seed 0) and a grid search with ASHA over DDRM's lr and
    steps (4 trials); then the ablation again in a second store, replayed from the first (``--reuse-from``)."""
    pytest.importorskip("ray")
    from conftest import local_ray
    from ddrm.tuning.runner import run_ablation, run_search
    from ddrm.tuning.spec import load_ablation_spec, load_search_spec

    tmp = tmp_path_factory.mktemp("protocol")
    train, valid, test = make_interactions(n_users=40, n_items=30, seed=1)
    write_prepared(tmp / "data" / "tiny", train, valid, test)
    dirs = {"data_dir": str(tmp / "data"), "storage": str(tmp / "ray"), "tracking_uri": f"sqlite:///{tmp / 'm.db'}"}
    (tmp / "abl.yaml").write_text("name: abl\n" + STUDY_BASE + "seeds: [0]\nvariants:\n  alone: {ddrm.enabled: false}\n"
                                  "  ddrm: {}\nreference: alone\nresources: {cpu: 1}\nmax_concurrent: 2\n")
    (tmp / "grid.yaml").write_text("name: srch\nmode: grid\nseeds: [0]\n" + STUDY_BASE
                                   + "space:\n  ddrm.lr: {type: choice, values: [0.01, 0.0001]}\n"
                                   "  ddrm.steps: {type: choice, values: [2, 4]}\n"
                                   "scheduler: {type: asha, grace_period: 1, max_t: 3, reduction_factor: 2}\n"
                                   "max_concurrent: 2\nresources: {cpu: 1}\n")
    replayed = {**dirs, "storage": str(tmp / "ray2"), "tracking_uri": f"sqlite:///{tmp / 'm2.db'}"}
    with local_ray(tmp / "cache"):
        ablation = run_ablation(load_ablation_spec(tmp / "abl.yaml"), **dirs)
        search = run_search(load_search_spec(tmp / "grid.yaml"), **dirs)
        again = run_ablation(load_ablation_spec(tmp / "abl.yaml"), **replayed, reuse_from=[dirs["tracking_uri"]])
    return {"dirs": dirs, "replayed": replayed, "tmp": tmp, "ablation": ablation, "search": search, "again": again}


def _trial_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, [r for r in runs if r.data.tags.get("role") == "trial"]


def test_a_search_trial_logs_no_test_metric_and_its_cost_with_every_epoch(studies):
    client, kids = _trial_runs(studies["dirs"]["tracking_uri"], "srch")
    assert len(kids) == 4 and studies["search"]["finished"] >= 1 and "test" not in studies["search"]["best"]
    for kid in kids:
        assert kid.info.status == "FINISHED"
        assert not [name for name in kid.data.metrics if name.startswith("test_")], kid.info.run_name
        metrics = kid.data.metrics
        # the backend was pretrained by the driver: the trial's epochs are DDRM's, up to where it stopped (ASHA
        # may stop a trial after any epoch: its last logged cost is its cost)
        assert metrics["cost_epochs"] == metrics["epoch"] and metrics["cost_cpu_seconds"] > 0
        assert metrics["cost_wall_seconds"] > 0
        curve = client.get_metric_history(kid.info.run_id, "cost_epochs")
        assert sorted({(m.step, m.value) for m in curve}) == [  # per epoch (the final report repeats the last)
            (e, float(e)) for e in range(1, int(metrics["epoch"]) + 1)]
        if "best_epoch" in metrics:  # trained to the end: the final report
            assert metrics["cost_backend_from_cache"] == 1.0


def test_a_search_report_shows_validation_only_and_the_studys_cost(studies):
    import pandas as pd

    report = studies["dirs"]["storage"] + "/srch/report"
    table = pd.read_csv(f"{report}/table.csv")
    runs = pd.read_csv(f"{report}/runs.csv")
    assert not [c for c in table.columns if "test" in c] and "best_recall_at_20_mean" in table.columns
    assert not [c for c in runs.columns if c.startswith("test_")]
    assert {"cost_wall_seconds", "cost_cpu_seconds", "cost_epochs", "cost_backend_from_cache"} <= set(runs.columns)
    text = open(f"{report}/table.md").read()
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert "valid R@20" in header and "test" not in header
    assert (f"cost: 4 runs, {int(runs['cost_epochs'].sum())} trial-epochs, "
            f"{runs['cost_cpu_seconds'].sum() / 3600:.3f} CPU-hours") in text
    best = open(f"{report}/best_config.yaml").read().splitlines()[0]
    chosen = runs.loc[runs["best_recall_at_20"].idxmax()]
    assert f"run {chosen['run_id']} " in best and "test" not in best


def test_an_ablation_still_scores_test_and_records_its_cost(studies):
    import pandas as pd

    _, kids = _trial_runs(studies["dirs"]["tracking_uri"], "abl")
    by_variant = {k.data.tags["variant"]: k.data.metrics for k in kids}
    for metrics in by_variant.values():
        assert "test_recall_at_20" in metrics and metrics["cost_cpu_seconds"] > 0
        assert metrics["cost_backend_from_cache"] == 1.0  # shared by both variants: pretrained by the driver
    assert by_variant["ddrm"]["cost_epochs"] == 3 and by_variant["alone"]["cost_epochs"] == 0
    runs = pd.read_csv(studies["dirs"]["storage"] + "/abl/report/runs.csv")
    assert {"test_recall_at_20", "cost_epochs"} <= set(runs.columns)
    text = open(studies["dirs"]["storage"] + "/abl/report/table.md").read()
    assert "| R@10 | R@20 |" in text and "cost: 2 runs, 3 trial-epochs" in text


def test_a_replayed_run_carries_its_sources_cost_and_is_not_counted_again(studies):
    _, source = _trial_runs(studies["dirs"]["tracking_uri"], "abl")
    _, kids = _trial_runs(studies["replayed"]["tracking_uri"], "abl")
    assert studies["again"]["finished"] == 2
    source_cost = {k.data.tags["variant"]: k.data.metrics["cost_cpu_seconds"] for k in source}
    for kid in kids:
        assert kid.data.tags["reused_from"].startswith(studies["dirs"]["tracking_uri"])
        assert kid.data.metrics["cost_cpu_seconds"] == source_cost[kid.data.tags["variant"]]
    text = open(studies["replayed"]["storage"] + "/abl/report/table.md").read()
    assert "cost: 0 runs, 0 trial-epochs, 0.000 CPU-hours, 0.000 wall-hours (not counted: 2 replayed" in text


def test_a_search_trial_is_never_replayed_into_an_ablation(studies):
    from ddrm.tuning.plan import trial_key
    from ddrm.tuning.reuse import explain_misses, find_reusable
    from ddrm.tuning.spec import load_ablation_spec

    spec = load_ablation_spec(studies["tmp"] / "abl.yaml")  # its ddrm variant is a grid point: lr 0.01, steps 4
    trials = [(v, s, c) for (v, s), c in spec.configs().items() if v == "ddrm"]
    key, uri = trial_key("ddrm", 0), studies["dirs"]["tracking_uri"]
    blind = find_reusable(trials, [uri], with_test=False)  # the latest run of that config: the search's trial
    assert not any(k.startswith("test_") for k in blind[key]["final"])
    found = find_reusable(trials, [uri])  # an ablation's: only a run that scored test (the ablation's own)
    assert found[key]["final"]["test_recall_at_20"] >= 0
    assert "no test metrics (a search's trial)" in explain_misses(trials, [uri], {})[key]


def test_import_runs_carries_the_cost(studies, tmp_path):
    from mlflow.tracking import MlflowClient

    from ddrm import tracking
    from ddrm.tuning.importer import import_runs

    runs_csv = studies["dirs"]["storage"] + "/srch/report/runs.csv"
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    parent = tracking.start_parent_run(uri, "srch", "key", {"study": "srch", "kind": "tune"})
    assert import_runs(uri, parent, runs_csv) == 4
    client = MlflowClient(uri)
    _, original = _trial_runs(studies["dirs"]["tracking_uri"], "srch")
    _, imported = _trial_runs(uri, "srch")
    assert sorted(r.data.metrics["cost_cpu_seconds"] for r in imported) == pytest.approx(
        sorted(r.data.metrics["cost_cpu_seconds"] for r in original), rel=1e-6)
    assert all(not any(k.startswith("test_") for k in r.data.metrics) for r in imported)
    assert all(r.data.tags["imported_from"] for r in imported) and client.get_run(parent).info.run_id == parent
