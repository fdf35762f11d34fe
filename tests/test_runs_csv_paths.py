"""runs.csv carries no machine's absolute path: the store, the data dir and the provenance tags are made relative."""

from __future__ import annotations

import math

import pandas as pd

from ddrm.report.runs import relative_source, runs_table


def test_provenance_tags_and_store_are_written_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    earlier = f"sqlite:///{tmp_path / 'docs' / 'fig4' / 'mlruns.db'}"
    frame = pd.DataFrame({
        "model": ["mf", "mf", "mf"], "variant": ["both", "both", "item_only"], "seed": [0, 1, 0],
        "run_id": ["a", "b", "c"],
        "reused_from": [f"{earlier}#r0", "", None],
        "imported_from": ["", "sqlite:///mlruns.db#r9", None],
        "param.data.dir": [str(tmp_path / "data"), "data", "None"],
        "test_recall_at_20": [0.1, 0.2, 0.3]})
    runs = runs_table(frame, f"sqlite:///{tmp_path / 'store.db'}")
    assert runs["reused_from"].tolist()[:2] == ["sqlite:///docs/fig4/mlruns.db#r0", ""]
    assert pd.isna(runs["reused_from"].iloc[2])
    assert runs["imported_from"].tolist()[1] == "sqlite:///mlruns.db#r9"  # already relative: unchanged
    assert set(runs["tracking_store"]) == {"sqlite:///store.db"}
    assert runs["param.data.dir"].tolist()[0] == "data"
    assert not any(str(tmp_path) in str(v) for v in runs.to_numpy().ravel())


def test_a_tag_without_a_run_id_or_a_server_uri_is_left_as_it_is():
    assert relative_source("not-a-source") == "not-a-source"
    assert relative_source("http://mlflow:5000#abc") == "http://mlflow:5000#abc"
    assert math.isnan(relative_source(float("nan")))  # a missing tag (NaN) passes through
