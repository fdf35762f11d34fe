"""A campaign stage imports an earlier search's runs.csv (spec ``imports``): only the rows that are the stage's
experiment, without test columns, counted toward the budget and told to the searcher; a rerun trains nothing; bad
``imports`` entries are refused with one line; the committed ML-1M searches import into campaigns/tuned.yaml."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from campaign_spaces import SPACE_DDRM, SPACE_EASE, SPACE_MF
from conftest import REPO_ROOT, local_ray, make_interactions

from ddrm.campaign.imports import is_test_column, select_rows
from ddrm.campaign.run import search_spec
from ddrm.campaign.spec import load_campaign
from ddrm.cli import main
from ddrm.config import config_from_dict
from ddrm.data import write_prepared
from ddrm.errors import ConfigError
from ddrm.report.runs import config_of

CAMPAIGN = """name: imp
budget: 3
search_seed: 0
table_seeds: [1]
stages:
  mf: {space: mf.yaml}
  ease: {space: ease.yaml}
  mf_ddrm: {space: ddrm.yaml, inherit: {mf: ["model.*"]}}
  mostpop: {fixed: {model: {name: mostpop}}}
imports:
  tiny: {mf: old/mf/runs.csv, ease: old/ease/runs.csv, mf_ddrm: old/ddrm/runs.csv}
"""
METRICS = [f"{kind}_at_{k}" for kind in ("recall", "ndcg") for k in (10, 20, 50, 100)]
CHOSEN_LR = 0.01  # the old MF row with the best validation value: the backend the mf stage chooses


def _row(n: int, params: dict[str, Any], valid: float, model: str = "mf") -> dict[str, Any]:
    """One finished trial of an old search's runs.csv, with test columns (the old protocol scored test)."""
    row: dict[str, Any] = {"model": model, "variant": f"trial{n}", "seed": params.get("seed", 0), "run_id": f"old{n}",
                           "tracking_store": "sqlite:///old/mlruns.db", "git_commit": "", "code_fingerprint": "",
                           "reused_from": "", "imported_from": "", "epoch": 2, "best_epoch": 2}
    for prefix, value in (("best_", valid), ("valid_", valid), ("test_", valid / 2)):
        row.update({prefix + m: value for m in METRICS})
    row.update({f"param.{k}": v for k, v in params.items()})
    return row


def _old_mf(lr: float, dim: int = 8, seed: int = 0) -> dict[str, Any]:
    """Old config shape (``backend.*``), as the hand-run ML-1M searches logged it."""
    return {"backend.name": "mf", "backend.dim": dim, "backend.lr": lr, "backend.denoise": "none", "model.name": None,
            "ddrm.enabled": False, "train.epochs": 2, "train.patience": 2, "train.threads": None,
            "data.name": "tiny", "data.dir": "/elsewhere/data", "seed": seed}


def _ddrm(lr: float, bpr_weight: float) -> dict[str, Any]:
    """New config shape."""
    return {"model.name": "mf", "model.dim": 8, "model.lr": lr, "ddrm.enabled": True, "ddrm.steps": 3,
            "ddrm.hidden_dims": "[8, 16]", "ddrm.epochs": 2, "ddrm.bpr_weight": bpr_weight, "train.epochs": 2,
            "train.patience": 2, "train.threads": 1, "data.name": "tiny", "seed": 0}


def _ease(ease_lambda: int) -> dict[str, Any]:
    return {"model.name": "ease", "model.ease_lambda": ease_lambda, "ddrm.enabled": False, "data.name": "tiny",
            "seed": 0}


OLD_SEARCHES = {
    "mf": [_row(1, _old_mf(CHOSEN_LR), 1.0), _row(2, _old_mf(0.005), 0.3),
           _row(3, _old_mf(0.5), 0.2),  # lr outside the space
           _row(4, _old_mf(0.02, dim=16), 0.2),  # another model.dim: not this stage's experiment
           _row(5, _old_mf(0.02, seed=1), 0.2)],  # not the search seed
    "ddrm": [_row(1, _ddrm(CHOSEN_LR, 0.5), 0.4),
             _row(2, _ddrm(0.005, 0.5), 0.4)],  # DDRM on another backend than the chosen one
    "ease": [_row(1, _ease(10), 0.3, "ease"), _row(2, _ease(10), 0.3, "ease"),  # one grid point twice
             _row(3, _ease(50), 0.3, "ease")],  # outside the grid
}


def _write_campaign(folder: Path, text: str = CAMPAIGN) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, space in (("mf.yaml", SPACE_MF), ("ddrm.yaml", SPACE_DDRM), ("ease.yaml", SPACE_EASE)):
        (folder / name).write_text(space)
    for name, rows in OLD_SEARCHES.items():
        (folder / "old" / name).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(folder / "old" / name / "runs.csv", index=False)
    (folder / "imp.yaml").write_text(text)
    return folder / "imp.yaml"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("runs.csv"))}


def _run(spec: Path, data: Path, out: Path, storage: Path) -> None:
    assert main(["campaign", "run", str(spec), "--dataset", "tiny", "--data-dir", str(data), "--out", str(out),
                 "--storage", str(storage), "--no-probe"]) == 0


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """One campaign run that imports three old searches, then a rerun on a "new machine" (the committed campaign
    folder only); yields ``(out, moved, first printed, rerun printed, old files' digests before)``."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("campaign_import")
    write_prepared(tmp / "data" / "tiny", *make_interactions())
    spec = _write_campaign(tmp / "spec")
    before = _digest(tmp / "spec" / "old")
    out, moved = tmp / "out", tmp / "committed"
    with local_ray(tmp / "cache"), pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)  # MLflow's artifacts folder is relative to the working directory
        with contextlib.redirect_stdout(io.StringIO()) as first:
            _run(spec, tmp / "data", out, tmp / "ray")
        shutil.copytree(out, moved, ignore=shutil.ignore_patterns("mlruns.db"))
        with contextlib.redirect_stdout(io.StringIO()) as rerun:
            _run(spec, tmp / "data", moved, tmp / "ray2")
        yield out, moved, first.getvalue(), rerun.getvalue(), before, tmp


@pytest.mark.slow
def test_only_the_rows_of_the_stages_experiment_are_imported_and_the_others_are_reported(imported):
    out, _, printed, _, _, _ = imported
    lines = {line.split(":")[0]: line for line in printed.splitlines() if line.startswith("stage ")}
    assert lines["stage mf"].startswith("stage mf: importing 2 of 5 rows of spec/old/mf/runs.csv (test columns "
                                        "dropped); 3 left out")
    assert "1: outside the stage's space on model.lr (e.g. model.lr 0.5)" in lines["stage mf"]
    assert "1: not the stage's experiment: model.dim differ from its base (e.g. model.dim 16 here, 8 in the " \
           "stage)" in lines["stage mf"]
    assert "1: seed 1, not the search's [0]" in lines["stage mf"]
    chosen = yaml.safe_load((out / "stages" / "mf" / "chosen_config.yaml").read_text())
    assert chosen["model"]["lr"] == pytest.approx(CHOSEN_LR)  # the imported best: DDRM rows on it are the stage's
    assert "importing 1 of 2 rows" in lines["stage mf_ddrm"]
    assert "1: not the stage's experiment: model.lr differ from its base (e.g. model.lr 0.005 here, 0.01 in the " \
           "stage)" in lines["stage mf_ddrm"]
    assert "importing 1 of 3 rows" in lines["stage ease"] and "1: repeats a grid point already imported" in \
        lines["stage ease"] and "1: outside the stage's space on model.ease_lambda" in lines["stage ease"]


@pytest.mark.slow
def test_imported_trials_count_toward_the_budget_and_the_records_show_no_test_metric(imported):
    out, _, printed, _, before, tmp = imported
    assert "2 finished trial(s) of imp-tiny-mf are told to the searcher without training; 1 left to run" in printed
    assert "1 finished trial(s) of imp-tiny-mf_ddrm are told to the searcher without training; 2 left" in printed
    assert "1 finished trial(s) of imp-tiny-ease are kept without training; 1 grid point(s) left" in printed
    for stage, trials, kept in (("mf", 3, 2), ("mf_ddrm", 3, 1), ("ease", 2, 1)):
        runs = pd.read_csv(out / "stages" / stage / "runs.csv")
        assert len(runs) == trials  # topped up to the budget (a grid: its points), not beyond
        assert not [c for c in runs.columns if is_test_column(c)]  # a search's record shows no test metric
        assert runs["imported_from"].notna().sum() == kept
        assert not any("test" in c for c in pd.read_csv(out / "stages" / stage / "table.csv").columns)
    mf = pd.read_csv(out / "stages" / "mf" / "runs.csv")
    old = mf[mf["imported_from"] == "sqlite:///old/mlruns.db#old1"]
    assert old["valid_recall_at_20"].tolist() == [1.0] and old["param.model.lr"].tolist() == [CHOSEN_LR]
    record = json.loads((out / "campaign.json").read_text())
    assert record["stages"]["mf"]["imported_search"] == {
        "file": "spec/old/mf/runs.csv", "rows": 2, "rows_in_file": 5,
        "left_out": {"outside the stage's space on model.lr (e.g. model.lr 0.5)": 1,
                     "not the stage's experiment: model.dim differ from its base (e.g. model.dim 16 here, 8 in the "
                     "stage)": 1,
                     "seed 1, not the search's [0]": 1}}
    assert record["stages"]["mf"]["trials"] == 3
    summary = (out / "campaign.md").read_text()
    assert "## Imported searches" in summary and "| mf | `spec/old/mf/runs.csv` | 2 | 5 |" in summary
    assert "| ease | `spec/old/ease/runs.csv` | 1 | 3 |" in summary
    assert _digest(tmp / "spec" / "old") == before  # the old records stay as committed


@pytest.mark.slow
def test_a_rerun_from_the_committed_folder_trains_none_of_the_imported_trials(imported):
    out, moved, _, printed, _, _ = imported
    assert "3 finished trial(s) of imp-tiny-mf are told to the searcher without training; 0 left" in printed
    assert "3 finished trial(s) of imp-tiny-mf_ddrm are told to the searcher without training; 0 left" in printed
    assert "2 finished trial(s) of imp-tiny-ease are kept without training; 0 grid point(s) left" in printed
    assert "imported 0 finished trial(s) from spec/old/mf/runs.csv" in printed  # already in the stage's own file
    for stage in ("mf", "mf_ddrm", "ease"):
        first, again = (pd.read_csv(f / "stages" / stage / "runs.csv") for f in (out, moved))
        assert sorted(again["valid_recall_at_20"]) == sorted(first["valid_recall_at_20"])
        assert not [c for c in again.columns if is_test_column(c)]


def test_plan_names_each_stages_import(tmp_path, capsys):
    write_prepared(tmp_path / "data" / "tiny", *make_interactions())
    spec = _write_campaign(tmp_path / "spec")
    assert main(["campaign", "plan", str(spec), "--dataset", "tiny", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "out"), "--no-probe"]) == 0
    printed = capsys.readouterr().out
    assert "tpe, 3 trials" in printed and "; imports old/mf/runs.csv" in printed
    assert "; imports old/ddrm/runs.csv" in printed and printed.count("; imports") == 3


@pytest.mark.parametrize("change, fragment", [
    (("{mf: old/mf/runs.csv,", "{nope: old/mf/runs.csv,"), "imports.tiny.nope: 'nope' is not a stage"),
    (("{mf: old/mf/runs.csv,", "{mf: old/gone.csv,"), "imports.tiny.mf: old/gone.csv does not exist"),
    (("{mf: old/mf/runs.csv,", "{mostpop: old/mf/runs.csv,"),
     "imports.tiny.mostpop: stage 'mostpop' is fixed (nothing searched)"),
])
def test_bad_imports_are_refused_with_one_line(tmp_path, capsys, change, fragment):
    spec = _write_campaign(tmp_path / "spec", CAMPAIGN.replace(*change))
    with pytest.raises(ConfigError) as error:
        load_campaign(spec)
    assert fragment in str(error.value) and len(str(error.value).splitlines()) == 1
    assert main(["campaign", "plan", str(spec), "--dataset", "tiny", "--out", str(tmp_path / "out"),
                 "--no-probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------- the committed ML-1M searches (no data needed)
TUNED = REPO_ROOT / "campaigns" / "tuned.yaml"
OLD = REPO_ROOT / "docs" / "results" / "tuned_ml1m"


def test_the_tuned_campaign_validates_with_its_ml1m_imports():
    spec = load_campaign(TUNED)
    imports = spec.imports["ml-1m_noisy"]
    assert set(imports) == set(spec.stages) - {"mostpop"}  # every searched stage has an earlier ML-1M search
    assert all((TUNED.parent / path).is_file() for path in imports.values())


@pytest.mark.parametrize("stage", ["mf", "lightgcn", "sgl", "multivae", "diffrec", "ease", "itemknn"])
def test_a_committed_search_imports_whole_into_its_stage_without_test_columns(stage):
    """The earlier searches had the campaign's spaces and bases: every row is the stage's experiment."""
    spec = load_campaign(TUNED)
    search = search_spec(spec, stage, "ml-1m_noisy", {})
    selection = select_rows(TUNED.parent / spec.imports["ml-1m_noisy"][stage], search)
    assert len(selection.rows) == selection.total and not selection.left_out
    assert not [c for c in selection.rows.columns if is_test_column(c)]


def test_a_plug_in_search_imports_only_on_the_backend_its_stage_inherits():
    """DDRM on the tuned MF: the MF search's best row (8 significant digits in runs.csv) is the backend every
    row of the DDRM search ran on; on another backend none of them is the stage's experiment."""
    from ddrm.report.runs import best_run

    spec = load_campaign(TUNED)
    backend_runs = pd.read_csv(OLD / "mf_ml1m_backend" / "runs.csv", dtype=str, keep_default_na=False)
    best = backend_runs.loc[best_run(pd.read_csv(OLD / "mf_ml1m_backend" / "runs.csv")).name]
    chosen = {"mf": config_from_dict(config_of(best))}
    selection = select_rows(OLD / "mf_ml1m_ddrm" / "runs.csv", search_spec(spec, "mf_ddrm", "ml-1m_noisy", chosen))
    assert len(selection.rows) == selection.total == 40
    other = {"mf": chosen["mf"].replace({"model.lr": 0.004})}
    selection = select_rows(OLD / "mf_ml1m_ddrm" / "runs.csv", search_spec(spec, "mf_ddrm", "ml-1m_noisy", other))
    assert len(selection.rows) == 0 and list(selection.left_out.values()) == [40]
    assert next(iter(selection.left_out)).startswith("not the stage's experiment: model.lr differ from its base")
