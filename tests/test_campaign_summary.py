"""campaign.md's pieces from a campaign record alone (fast: no Ray, no training)."""

from __future__ import annotations

import json

import pandas as pd

from ddrm.campaign.estimate import probe_key
from ddrm.campaign.summary import campaign_markdown, estimate_cell
from ddrm.config import load_config


def test_the_estimate_sits_beside_the_recorded_cost_as_a_ratio():
    assert estimate_cell({"cpu_hours": 0.5}, 0.6) == "0.50 (1.20x)"
    assert estimate_cell({"cpu_hours": 0.5}, None) == "0.50"
    assert estimate_cell(None, 0.6) == "–"


def test_a_ddrm_probe_is_keyed_by_its_precision():
    fp32 = load_config(None, {"model.name": "mf", "ddrm.enabled": True})
    assert probe_key(fp32) == "mf+none+ddrm"
    assert probe_key(fp32.replace({"train.precision": "bf16"})) == "mf+none+ddrm@bf16"
    alone = load_config(None, {"model.name": "mf", "ddrm.enabled": False, "train.precision": "bf16"})
    assert probe_key(alone) == "mf+none+alone"  # bf16 changes only the denoisers


def test_a_campaign_stopped_part_way_lists_its_stages_data_and_cost(tmp_path):
    stage = tmp_path / "stages" / "mf"
    stage.mkdir(parents=True)
    pd.DataFrame({"cost_epochs": [10, 20], "cost_cpu_seconds": [1800.0, 1800.0]}).to_csv(stage / "runs.csv", index=False)
    record = {"campaign": "tuned", "dataset": "d", "budget": 40, "search_seed": 0, "table_seeds": [1, 2],
              "data": {"name": "d", "split": "random (seed 0)", "users": 1000, "items": 200, "train": 7000,
                       "valid": 1000, "test": 2000},
              "stages": {"mf": {"kind": "search", "mode": "tpe", "finished": 2, "errored": 1,
                                "best_valid": {"recall_at_20": 0.1234}, "imported_from": None},
                         "mostpop": {"kind": "fixed", "trials": 0}},
              "tables": {}, "estimate": {"cpu_hours": 2.0, "stages": {"mf": {"cpu_hours": 0.8}}}}
    (tmp_path / "campaign.json").write_text(json.dumps(record))
    text = campaign_markdown(tmp_path)
    assert "Data: `d`, split random (seed 0); 1,000 users x 200 items; train / valid / test 7,000 / 1,000 / 2,000" in text
    assert "| mf | tpe | 2 (1) | 2 | 30 | 1.00 | 0.80 (1.25x) | 0.1234 | – |" in text
    assert "| mostpop | fixed |" in text
    assert "estimates 2.00 CPU-hours for the whole campaign" in text
    assert "recorded cost 1.00 CPU-hours" in text
    assert "the trials trained here 1.00 against 0.80 estimated when each search started (1.25x)" in text


def test_the_summary_lists_the_declared_rows_and_names_a_dataset_whose_table_has_not_run(tmp_path):
    from ddrm.campaign.summary import across_datasets

    done, running = tmp_path / "done", tmp_path / "running"
    for out in (done, running):
        out.mkdir()
        (out / "campaign.json").write_text(json.dumps({"tables": {}, "data": {"split": "random (seed 0)"}}))
    (done / "tables" / "t").mkdir(parents=True)
    table = pd.DataFrame({"model": ["mf"], "variant": ["alone"], "test_recall_at_20_mean": [0.1],
                          "test_recall_at_20_std": [0.01], "test_ndcg_at_20_mean": [0.05],
                          "test_ndcg_at_20_std": [0.002]})
    table.to_csv(done / "tables" / "t" / "table.csv", index=False)
    text = across_datasets({"a": done, "b": running}, "t", ["mf/alone", "mf/ddrm"])
    lines = text.splitlines()
    assert [line.split(" | ")[0] for line in lines if line.startswith("| mf/")] == ["| mf/alone", "| mf/ddrm"]
    alone = next(line for line in lines if line.startswith("| mf/alone"))
    assert alone.count("–") == 2 and "0.1" in alone  # dataset a has it, b has no table yet
    assert "No t results yet for b " in text
