"""``ddrm.stats``: the one mean ± std rule over seeds (sample std; one seed: std undefined, never 0)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ddrm.stats import format_mean_std, mean_std, seed_stats


def test_one_seed_has_a_mean_and_no_std():
    mean, std = mean_std([0.12])
    assert mean == 0.12 and math.isnan(std)
    assert format_mean_std(mean, std) == "0.1200"  # the value alone, no "± 0.0000" and no "± nan"
    assert seed_stats([0.12]) == {"mean": 0.12, "std": None, "values": [0.12]}


def test_two_seeds_give_the_sample_std():
    mean, std = mean_std([0.10, 0.12])
    assert mean == pytest.approx(0.11) and std == pytest.approx(np.std([0.10, 0.12], ddof=1))
    assert std == pytest.approx(0.0141421356)  # ddof=1, not the population std (0.01)
    assert format_mean_std(mean, std) == "0.1100 ± 0.0141"
    assert format_mean_std(mean, std, digits=2) == "0.11 ± 0.01"


def test_identical_seeds_have_a_zero_std_not_an_undefined_one():
    mean, std = mean_std([0.2, 0.2])
    assert mean == 0.2 and std == 0.0 and format_mean_std(mean, std) == "0.2000 ± 0.0000"


def test_missing_values_are_not_seeds():
    assert mean_std([0.1, float("nan"), None, 0.3]) == pytest.approx((0.2, np.std([0.1, 0.3], ddof=1)))
    mean, std = mean_std(pd.Series([0.3, np.nan]))  # a pandas column with a missing seed: one value left
    assert mean == 0.3 and math.isnan(std)
    assert seed_stats([None, 0.3])["values"] == [0.3]


def test_no_value_leaves_both_undefined():
    for empty in ([], [float("nan")], [None]):
        mean, std = mean_std(empty)
        assert math.isnan(mean) and math.isnan(std)
    assert format_mean_std(float("nan"), float("nan")) == "–"
    assert seed_stats([]) == {"mean": None, "std": None, "values": []}


def test_seed_stats_are_strict_json():
    text = json.dumps({"one": seed_stats([0.5]), "two": seed_stats([0.5, 0.7])}, allow_nan=False)
    loaded = json.loads(text)
    assert loaded["one"]["std"] is None and loaded["two"]["std"] == pytest.approx(0.1414213562)


def test_every_table_shows_one_seed_the_same_way():
    """The report's table, the ablation summary and bench/seed_table agree on a single seed."""
    import importlib.util
    from pathlib import Path

    from ddrm.report.table import markdown, summarize

    frame = pd.DataFrame({"model": ["mf"] * 3, "variant": ["two", "two", "one"], "seed": [0, 1, 0],
                          "test_recall_at_20": [0.10, 0.12, 0.2]})
    report = markdown(summarize(frame, None, ["test_recall_at_20"]), ["test_recall_at_20"], None)
    assert "| mf | one | 1 | 0.2000 |" in report and "| mf | two | 2 | 0.1100 ± 0.0141 |" in report

    path = Path(__file__).resolve().parents[1] / "bench" / "seed_table.py"
    spec = importlib.util.spec_from_file_location("seed_table_for_stats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = dict.fromkeys(module.METRICS, 0.2)
    bench = module.markdown_table({"one": [{"seed": 0, "test": metrics, "best_epoch": 3}]})
    assert "| one | 1 | 0.2000 | 0.2000 | 0.2000 | 0.2000 | 3 |" in bench


def test_the_ablation_summary_gives_one_seed_no_std_and_is_strict_json(tmp_path):
    """``ddrm ablate``'s per-variant stats (no Ray: the rows as Tune returns them) follow the same rule."""
    from ddrm.tuning.plan import StudyPlan, trial_key
    from ddrm.tuning.runner import ablation_table
    from ddrm.tuning.spec import load_ablation_spec

    path = tmp_path / "abl.yaml"
    path.write_text("name: abl\nbase:\n  data: {name: tiny}\nseeds: [0, 1]\n"
                    "variants:\n  full: {}\n  item_only: {ddrm.denoise_users: false}\n")
    spec = load_ablation_spec(path)
    plan = StudyPlan(base=spec.base, trials={trial_key(v, s): c for (v, s), c in spec.configs().items()})
    test = {"full": {0: 0.10, 1: 0.12}, "item_only": {0: 0.2}}  # item_only's seed 1 failed
    rows = [{"config": {"variant": v, "seed": s}, "done": s in test[v], "error": None if s in test[v] else "boom",
             "metrics": {f"test_{m}": test[v][s] for m in ("recall_at_10", "recall_at_20", "ndcg_at_10",
                                                          "ndcg_at_20")} if s in test[v] else {}}
            for v in ("full", "item_only") for s in (0, 1)]
    text, stats = ablation_table(spec, plan, rows)
    assert stats["item_only"]["test"]["recall_at_20"] == {"mean": 0.2, "std": None, "values": [0.2]}
    assert stats["item_only"]["failed"] == 1
    assert stats["full"]["test"]["recall_at_20"]["std"] == pytest.approx(np.std([0.10, 0.12], ddof=1))
    assert json.loads(json.dumps(stats, allow_nan=False)) == stats
    assert "| item_only | 1 | 0.2000 |" in text and "0.1100 ± 0.0141" in text
