"""Every number traceable: runs.csv per report, a search's best_config.yaml that reruns to the same metrics."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

ray = pytest.importorskip("ray")

from conftest import make_interactions  # noqa: E402
from ddrm.cli import main  # noqa: E402
from ddrm.codeversion import code_fingerprint  # noqa: E402
from ddrm.config import config_from_dict  # noqa: E402
from ddrm.host import host_tags  # noqa: E402
from ddrm.config import load_config  # noqa: E402
from ddrm.data import write_prepared  # noqa: E402
from ddrm.tuning.runner import run_search  # noqa: E402
from ddrm.tuning.spec import load_search_spec  # noqa: E402

SPEC = """name: tiny_search
mode: grid
num_samples: 1
seeds: [0]
metric: recall_at_20
base:
  data: {name: tiny}
  train: {epochs: 2, batch_size: 64, patience: 5}
  model: {name: mf, lr: 0.01}
  ddrm: {hidden_dims: [8, 16], lr: 0.01}
space:
  ddrm.steps: {type: choice, values: [2, 5]}
  ddrm.hidden_dims: {type: choice, values: [[8, 16], [4, 8]]}
scheduler: {type: fifo}
max_concurrent: 2
resources: {cpu: 1, gpu: 0}
"""


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_search_report_has_runs_csv_and_a_best_config_that_reruns_to_the_same_metrics(ray_local, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    (tmp_path / "space.yaml").write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_search(load_search_spec(tmp_path / "space.yaml"), storage=str(tmp_path / "ray"),
                         tracking_uri=uri, data_dir=str(tmp_path / "data"))
    assert summary["finished"] == 4

    assert main(["report", "tiny_search", "--tracking-uri", uri, "--out", "report"]) == 0
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert len(runs) == 4 and runs["run_id"].is_unique  # every trial of a search is a row
    assert set(runs["tracking_store"]) == {"sqlite:///mlflow.db"}  # relative, not this machine's path
    assert set(runs["code_fingerprint"]) == {code_fingerprint(config_from_dict({"model": {"name": "mf"}}))}
    # the host every trial ran on: the same seed can round differently on another CPU model
    assert runs[["cpu_model", "cpu_capability", "torch_version"]].drop_duplicates().to_dict("records") == [host_tags()]
    assert f"Measured on: {host_tags()['cpu_model']} ({host_tags()['cpu_capability']}" in (
        tmp_path / "report" / "table.md").read_text()
    assert {"param.ddrm.steps", "param.seed", "best_recall_at_20", "cost_cpu_seconds"} <= set(runs.columns)
    assert not any(c.startswith("test_") for c in runs.columns)  # a search's trials score no test split
    assert not any(str(tmp_path) in str(v) for v in runs.to_numpy().ravel())

    best = runs.loc[runs["best_recall_at_20"].idxmax()]
    path = tmp_path / "report" / "best_config.yaml"
    config = load_config(path)
    assert config.ddrm.steps == best["param.ddrm.steps"] and config.train.threads == 1
    assert list(config.ddrm.hidden_dims) == yaml.safe_load(best["param.ddrm.hidden_dims"])

    out = tmp_path / "rerun"
    assert main(["train", "--config", str(path), "--data-dir", "data", "--out", str(out), "--quiet"]) == 0
    rerun = json.loads((out / "metrics.json").read_text())
    for metric in ("recall_at_20", "ndcg_at_20", "recall_at_10"):  # the rerun selects the same epoch
        assert rerun["valid"][metric] == pytest.approx(best[f"best_{metric}"], abs=1e-7)
    assert rerun["test"]["recall_at_20"] >= 0  # `ddrm train` scores test: a single run is what a user looks at
    assert os.path.isfile(tmp_path / "report" / "table.md")


def test_max_epochs_caps_every_stage_and_marks_the_run(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    (tmp_path / "abl.yaml").write_text(
        "name: smoke\nbase:\n  data: {name: tiny}\n  train: {epochs: 50, batch_size: 64, patience: 50}\n"
        "  model: {name: mf, lr: 0.01}\n  ddrm: {hidden_dims: [8, 16], steps: 3, lr: 0.01, epochs: 40}\nseeds: [0]\n"
        "variants:\n  alone: {ddrm.enabled: false}\n  ddrm: {}\nreference: alone\nresources: {cpu: 1}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["ablate", "abl.yaml", "--data-dir", "data", "--tracking-uri", uri, "--storage", "ray",
                 "--max-epochs", "2"]) == 0
    runs = pd.read_csv(tmp_path / "ray" / "smoke" / "report" / "runs.csv")
    assert sorted(runs["variant"]) == ["alone (capped at 2 epochs)", "ddrm (capped at 2 epochs)"]
    assert set(runs["param.train.max_epochs"]) == {2}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for run_id in runs["run_id"]:
        epochs = [m.step for m in client.get_metric_history(run_id, "valid_recall_at_20")]
        assert max(epochs) <= 2  # the backend's 50 and DDRM's 40 epochs are capped
    table = (tmp_path / "ray" / "smoke" / "report" / "table.md").read_text()
    assert "alone (capped at 2 epochs) (reference)" in table
