"""Results committed before the config refactor (the old shape: ``backend.*`` with the loss plug-in's keys, and a
catch-all ``model.*`` with ``model.name: null`` for backend + DDRM) still import, rebuild and rerun on the new
code: every committed ``runs.csv`` row rebuilds its config in the new shape with the values it ran with,
``--import-runs`` logs the params a run of that config logs today (:func:`ddrm.legacy.upgrade_params`), and
every ``best_config.yaml`` of the tuned comparison loads with ``ddrm.config.load_config`` and trains."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT, make_interactions
from ddrm.config import Config, config_from_dict, flatten, load_config, parse_value
from ddrm.legacy import DENOISE_RENAMES
from ddrm.report.runs import config_of

RESULTS = REPO_ROOT / "docs" / "results"
OLD_RUNS = sorted(p for p in RESULTS.rglob("runs.csv") if "param.backend.name" in p.open().readline())
BEST_CONFIGS = sorted((RESULTS / "tuned_ml1m").glob("*/best_config.yaml"))
IMPORTED = ["readme_main_job/runs.csv",  # MF alone, + mean of liked items, + DDRM
            "tuned_ml1m/mf_ml1m_rce/runs.csv",  # a loss plug-in: backend.denoise / backend.rce_beta
            "tuned_ml1m/ease_ml1m/runs.csv"]  # a standalone model beside the unused backend columns
NEW_DENOISE = {new.partition(".")[2]: old for old, new in DENOISE_RENAMES.items()}  # "beta" -> "backend.rce_beta"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_same_values(old: Mapping[str, Any], config: Config) -> None:
    """Every setting of the new-shape ``config`` that the old-shape flat ``old`` holds has the old value: the
    model's own keys from ``backend.*`` (or, for a standalone model, ``model.*``), the plug-in's from
    ``backend.denoise`` / ``backend.tce_max_rate`` ..., and data, train, DDRM (when on) and the seed as they were."""
    standalone = old.get("model.name")
    assert config.model.name == (standalone or old["backend.name"])
    assert config.final_stage == ("model" if standalone else "ddrm" if old["ddrm.enabled"] else "backend")
    source = "model" if standalone else "backend"
    for key in type(config.model).model_fields:
        if f"{source}.{key}" in old:
            assert _plain(getattr(config.model, key)) == _plain(old[f"{source}.{key}"]), key
    assert config.denoise.name == ("none" if standalone else old["backend.denoise"])
    for key in type(config.denoise).model_fields:
        if key != "name":
            assert getattr(config.denoise, key) == old[NEW_DENOISE[key]], key
    assert config.ddrm.enabled == (False if standalone else old["ddrm.enabled"])
    sections = ["data", "train"] + (["ddrm"] if config.ddrm.enabled else [])
    for section in sections:
        for key in type(getattr(config, section)).model_fields:
            if f"{section}.{key}" in old and (section, key) != ("data", "dir"):
                assert _plain(getattr(getattr(config, section), key)) == _plain(old[f"{section}.{key}"]), key
    assert config.seed == old.get("seed", 0)


def old_params(row: pd.Series) -> dict[str, Any]:
    return {str(c)[len("param."):]: parse_value(v) for c, v in row.items() if str(c).startswith("param.")}


def test_the_committed_results_are_in_the_old_shape():
    """What this file checks exists: old-shape runs.csv files and best_config.yaml files are committed."""
    assert all((RESULTS / rel) in OLD_RUNS for rel in IMPORTED) and len(OLD_RUNS) > len(IMPORTED)
    assert any("backend" in yaml.safe_load(path.read_text()) for path in BEST_CONFIGS)


@pytest.mark.parametrize("path", OLD_RUNS, ids=[str(p.parent.relative_to(RESULTS)) for p in OLD_RUNS])
def test_every_row_of_a_committed_runs_csv_rebuilds_its_config_in_the_new_shape(path):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(frame)
    for _, row in frame.iterrows():
        nested = config_of(row)
        assert set(nested) == {"data", "model", "denoise", "ddrm", "train", "seed"} and "backend" not in nested
        assert "name" in nested["model"] and "name" in nested["denoise"]
        config = config_from_dict(nested)
        rebuilt = config.to_dict()
        rebuilt["data"].pop("dir")
        assert rebuilt == nested  # a fixed point: nothing of the old shape left
        check_same_values(old_params(row), config)


@pytest.mark.parametrize("rel", IMPORTED)
def test_a_committed_runs_csv_imports_with_the_params_its_runs_log_today(tmp_path, rel):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from ddrm.tracking import search_all_runs, start_parent_run
    from ddrm.tuning.importer import IMPORT_TAG, import_runs, read_runs_csv
    from ddrm.tuning.reuse import flat_params

    path = RESULTS / rel
    frame = read_runs_csv(path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = start_parent_run(uri, "legacy", "legacy-import", {"study": "legacy", "kind": "ablate"})
    assert import_runs(uri, parent, path) == len(frame)
    client = MlflowClient(uri)
    experiment = client.get_run(parent).info.experiment_id
    runs = {r.data.tags[IMPORT_TAG]: r for r in search_all_runs(client, [experiment], "tags.role = 'trial'")}
    assert len(runs) == len(frame)
    for _, row in frame.iterrows():
        run = runs[row["imported_from"] or f"{row['tracking_store']}#{row['run_id']}"]
        params = run.data.params
        assert not any(key.startswith("backend.") for key in params)  # every key upgraded to the new names
        config = config_from_dict(config_of(row))
        assert params == flat_params(config)  # what a run of this config logs today (--reuse-from matches it)
        check_same_values(old_params(row), config_from_dict(flatten_to_nested(params)))
        for metric in ("best_recall_at_20", "test_recall_at_20"):  # a trial ASHA stopped has no test metrics
            assert run.data.metrics.get(metric) == (float(row[metric]) if row[metric] else None)
        assert run.data.tags["variant"] == row["variant"] and run.info.status == "FINISHED"
    assert import_runs(uri, parent, path) == 0  # importing again changes nothing


def flatten_to_nested(params: Mapping[str, str]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, text in params.items():
        section, _, name = key.partition(".")
        if name:
            nested.setdefault(section, {})[name] = parse_value(text)
        else:
            nested[section] = parse_value(text)
    return nested


@pytest.mark.parametrize("path", BEST_CONFIGS, ids=[p.parent.name for p in BEST_CONFIGS])
def test_every_committed_best_config_loads_in_the_new_shape_with_its_values(path):
    raw = yaml.safe_load(path.read_text())
    config = load_config(path)
    assert set(config.to_dict()) == {"data", "model", "denoise", "ddrm", "train", "seed"}
    if "backend" in raw:  # written before the refactor
        check_same_values(flatten(raw), config)
        if config.final_stage != "model":  # an old --set key on the old file
            assert load_config(path, {"backend.lr": 0.5}).model.lr == 0.5


@pytest.mark.parametrize("search", ["mf_ml1m_rce", "lightgcn_ml1m_ddrm", "ease_ml1m"])
def test_a_committed_best_config_reruns_one_epoch_on_generated_data(tmp_path, search):
    """The dataset is swapped for a generated one (``data.name``) and every stage capped at one epoch."""
    from ddrm.data import write_prepared
    from ddrm.train import run

    write_prepared(tmp_path / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    path = RESULTS / "tuned_ml1m" / search / "best_config.yaml"
    config = load_config(path, {"data.name": "tiny", "train.max_epochs": 1, "train.threads": 1,
                                "train.device": "cpu", "train.precision": "fp32"})
    assert config.replace({"data.name": "ml-1m_noisy"}).to_flat_dict() == {
        **load_config(path).to_flat_dict(), "train.max_epochs": 1, "train.threads": 1, "train.device": "cpu",
        "train.precision": "fp32"}
    result = run(config, data_dir=tmp_path, progress=False, use_cache=False)
    assert 0 <= result.test["recall_at_20"] <= 1
    assert result.backend.epochs_run <= 1 and (result.ddrm is None or result.ddrm.epochs_run <= 1)
    assert (result.ddrm is not None) == config.ddrm.enabled


def test_the_tuned_best_configs_name_the_same_model_as_their_runs_csv_best_row():
    """best_config.yaml is its search's best runs.csv row: both rebuild to the same new-shape config."""
    from ddrm.report.runs import best_run

    for path in BEST_CONFIGS:
        runs_csv = path.parent / "runs.csv"
        if not runs_csv.is_file():
            continue
        best = best_run(pd.read_csv(runs_csv))  # numeric metrics; the row's params as written (strings):
        assert best is not None, runs_csv
        row = pd.read_csv(runs_csv, dtype=str, keep_default_na=False).loc[best.name]
        assert row["run_id"] == best["run_id"]
        assert f"run {row['run_id']} " in path.read_text().splitlines()[0]  # the header names the row's run
        rebuilt = config_from_dict(config_of(row)).to_flat_dict()
        loaded = load_config(path).to_flat_dict()
        own = ("data.dir", "train.threads")  # best_config.yaml states the threads its trial ran with
        assert {k: v for k, v in rebuilt.items() if k not in own} == {
            k: v for k, v in loaded.items() if k not in own}, path.parent.name
