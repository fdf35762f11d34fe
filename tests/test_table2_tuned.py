"""Every row of ablations/table2_tuned.yaml is the best config its search chose (its committed
best_config.yaml): the searched keys, and for a backend row the whole tuned backend."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO_ROOT
from ddrm.config import config_from_dict
from ddrm.legacy import rename_flat_keys
from ddrm.tuning.spec import load_ablation_spec

SPEC = REPO_ROOT / "ablations" / "table2_tuned.yaml"
RESULTS = REPO_ROOT / "docs" / "results" / "tuned_ml1m"
# (model, variant) -> the search whose best config the row is
SOURCES = {
    ("mf", "alone"): "mf_ml1m_backend", ("mf", "mean_of_liked_items"): "mf_ml1m_mean",
    ("mf", "tuned_ddrm"): "mf_ml1m_ddrm", ("mf", "tuned_tce"): "mf_ml1m_tce",
    ("lightgcn", "alone"): "lightgcn_ml1m_backend", ("lightgcn", "mean_of_liked_items"): "lightgcn_ml1m_mean",
    ("lightgcn", "tuned_ddrm"): "lightgcn_ml1m_ddrm", ("lightgcn", "tuned_tce"): "lightgcn_ml1m_tce",
    ("sgl", "alone"): "sgl_ml1m_backend", ("sgl", "mean_of_liked_items"): "sgl_ml1m_mean",
    ("sgl", "tuned_ddrm"): "sgl_ml1m_ddrm", ("sgl", "tuned_tce"): "sgl_ml1m_tce",
    ("ease", "tuned"): "ease_ml1m", ("itemknn", "tuned"): "itemknn_ml1m",
    ("multivae", "tuned"): "multivae_ml1m", ("diffrec", "tuned"): "diffrec_ml1m",
}


def _rows():
    spec = load_ablation_spec(SPEC)
    return spec, [tuple(name.split("/")) for name in spec.variants]


def test_every_row_names_its_search_and_the_spec_tests_against_the_backend_and_ease():
    spec, rows = _rows()
    assert spec.reference == "alone" and spec.baseline == ("ease/tuned",) and spec.seeds == (0, 1, 2, 3, 4)
    unknown = [row for row in rows if row not in SOURCES and row != ("mostpop", "tuned")]
    assert not unknown, f"rows without a search in SOURCES: {unknown}"


@pytest.mark.parametrize("row", [r for r in SOURCES], ids=["/".join(r) for r in SOURCES])
def test_a_row_is_its_searchs_best_config(row):
    spec, rows = _rows()
    if row not in rows:
        pytest.skip(f"{'/'.join(row)}: not in the table yet (its search is pending)")
    best_file = RESULTS / SOURCES[row] / "best_config.yaml"
    assert best_file.is_file(), f"{'/'.join(row)} is in the table but {best_file} is not committed"
    best = config_from_dict(yaml.safe_load(best_file.read_text())).to_flat_dict()
    searched = yaml.safe_load((REPO_ROOT / "search_spaces" / f"{SOURCES[row]}.yaml").read_text())
    mine = spec.configs()[("/".join(row), 0)].to_flat_dict()
    keys = list(rename_flat_keys(searched["space"])) + ["train.precision"]
    if spec.configs()[("/".join(row), 0)].final_stage != "model":  # a backend row: the whole tuned backend
        keys += [k for k in best if k.startswith("model.")]
    differing = {k: (mine[k], best[k]) for k in keys if mine[k] != best[k]}
    assert not differing, f"{'/'.join(row)} differs from {best_file}: {differing}"


@pytest.mark.parametrize("row", [r for r in SOURCES], ids=["/".join(r) for r in SOURCES])
def test_a_rows_seed_0_run_reproduces_its_searchs_best_trial(row):
    """Seed 0 of a table row is its search's best config rerun in a fresh trial: the same metrics as that search's
    best trial (both committed runs.csv files; the best trial named in best_config.yaml's header) — test metrics
    where the search logged them (searches run before they stopped scoring test), else the validation metrics of
    the selected epoch."""
    import pandas as pd

    table = REPO_ROOT / "docs" / "results" / "table2_tuned" / "runs.csv"
    best_file = RESULTS / SOURCES[row] / "best_config.yaml"
    if not table.is_file() or not best_file.is_file():
        pytest.skip(f"{'/'.join(row)}: no committed table runs or search result yet")
    runs = pd.read_csv(table)
    mine = runs[(runs["model"] == row[0]) & (runs["variant"] == row[1]) & (runs["seed"] == 0)]
    if mine.empty:
        pytest.skip(f"{'/'.join(row)}: seed 0 not in {table} yet")
    best_run = best_file.read_text().split("run ", 1)[1].split(" ", 1)[0]
    search = pd.read_csv(RESULTS / SOURCES[row] / "runs.csv")
    best = search[search["run_id"] == best_run]
    assert len(best) == 1, f"the best trial {best_run} of {best_file} is not in its runs.csv"
    compared = ("test_recall_at_20", "test_ndcg_at_20")
    if not set(compared) <= set(search.columns):  # a search scores no test split
        compared = ("best_recall_at_20", "best_ndcg_at_20")
    for metric in compared:
        assert mine[metric].iloc[0] == pytest.approx(best[metric].iloc[0], rel=1e-6), (
            f"{'/'.join(row)} seed 0 {metric} {mine[metric].iloc[0]} != its search's best {best[metric].iloc[0]}")
