"""The plan's estimate from records (fast: no Ray, no training; probe.json written by hand for this host):
imported rows count toward a stage's trials and only the trials left are estimated; a table row's epochs come from
its stage's chosen trial when the search finished; a search's epochs per trial are calibrated by other datasets'
finished searches of the stage (or the earlier search it imports), never by its own records; campaign.md's ratio
compares the recorded cost with the estimate of the same trials, frozen when the stage started (an older record's
for the stages it had started; a re-plan for a part its launch's plan stood in on stages chosen since)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from campaign_spaces import SPACE_EASE

from ddrm.campaign.estimate import asha_expected_epochs, backend_key
from ddrm.campaign.frozen import (LAUNCH, OLDER, REPLANNED, carry_frozen, freeze_at_start, judged, stale,
                                  with_frozen)
from ddrm.campaign.imports import select_rows
from ddrm.campaign.plan import format_plan, plan_campaign, stand_in_configs
from ddrm.campaign.records import ChosenTrials
from ddrm.campaign.run import _write_chosen, best_config, search_spec
from ddrm.campaign.spec import load_campaign
from ddrm.campaign.summary import campaign_markdown, estimate_cell
from ddrm.config import load_config
from ddrm.host import host_tags

# ASHA with grace 2, max_t 20, halving: 2 + 2/2 + 4/4 + 8/8 + 4/16 = 5.25 epochs per trial
SPACE_MF = """mode: tpe
base: {model: {name: mf, dim: 8}, ddrm: {enabled: false}, train: {epochs: 20, patience: 2, threads: 1}}
space:
  model.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-1}
scheduler: {type: asha, grace_period: 2, max_t: 20, reduction_factor: 2}
"""
# DDRM capped at 4 epochs: 1 + 1/2 + 2/4 = 2 per trial; its backend (MF, 20 epochs) pretrained once by the driver
SPACE_DDRM = """mode: tpe
base: {ddrm: {enabled: true, steps: 3, hidden_dims: [8, 16], epochs: 4}, train: {epochs: 20, patience: 2, threads: 1}}
space:
  ddrm.bpr_weight: {type: uniform, low: 0.1, high: 0.9}
scheduler: {type: asha, grace_period: 1, max_t: 4, reduction_factor: 2}
"""
MF_PER_TRIAL, DDRM_PER_TRIAL = 5.25, 2.0
CAMPAIGN = """name: est
budget: 6
search_seed: 0
table_seeds: [1, 2]
stages:
  mf: {space: mf.yaml}
  ease: {space: ease.yaml}
  mf_ddrm: {space: ddrm.yaml, inherit: {mf: ["model.*"]}}
tables:
  main:
    reference: alone
    rows: {mf/alone: mf, mf/ddrm: mf_ddrm, ease/tuned: ease}
"""
IMPORTS = """imports:
  tiny: {mf: old/mf/runs.csv, mf_ddrm: old/ddrm/runs.csv}
"""
# seconds per epoch on this "host": MF 10 s, DDRM 100 s (its backend 10 s), EASE 1 s per fit
PROBES = {"tiny:mf+none+alone": {"backend": 10.0, "total": 11.0},
          "tiny:mf+none+ddrm": {"backend": 10.0, "ddrm": 100.0, "total": 120.0},
          "tiny:ease+none+alone": {"model": 1.0, "total": 2.0}}
CHOSEN_LR = 0.01
METRICS = [f"{kind}_at_{k}" for kind in ("recall", "ndcg") for k in (10, 20, 50, 100)]


def _row(n: int, params: dict[str, Any], epoch: int, valid: float | None = 0.1, ended: bool = True,
         cost: float | None = None) -> dict[str, Any]:
    """One trial of a runs.csv: ``epoch`` trained epochs; ``ended`` (trained to the end: ``best_*`` and
    ``best_epoch``) or stopped by ASHA; ``cost``: its ``cost_cpu_seconds`` (and ``cost_epochs``)."""
    row: dict[str, Any] = {"model": params["model.name"], "variant": f"trial{n}", "seed": params["seed"],
                           "run_id": f"run{n}", "tracking_store": "sqlite:///x/mlruns.db", "git_commit": "",
                           "code_fingerprint": "", "reused_from": "", "imported_from": "", "epoch": epoch,
                           "best_epoch": max(0, epoch - 2) if ended else None}
    row.update({f"valid_{m}": valid for m in METRICS})
    row.update({f"best_{m}": (valid if ended else None) for m in METRICS})
    if cost is not None:
        row.update(cost_cpu_seconds=cost, cost_epochs=epoch, cost_backend_from_cache=0.0 if ended else None)
    row.update({f"param.{k}": v for k, v in params.items()})
    return row


def _mf(lr: float, epochs: int = 20) -> dict[str, Any]:
    return {"model.name": "mf", "model.dim": 8, "model.lr": lr, "ddrm.enabled": False, "train.epochs": epochs,
            "train.patience": 2, "train.threads": 1, "data.name": "tiny", "seed": 0}


def _ddrm(lr: float, bpr_weight: float) -> dict[str, Any]:
    return {"model.name": "mf", "model.dim": 8, "model.lr": lr, "ddrm.enabled": True, "ddrm.steps": 3,
            "ddrm.hidden_dims": "[8, 16]", "ddrm.epochs": 4, "ddrm.bpr_weight": bpr_weight, "train.epochs": 20,
            "train.patience": 2, "train.threads": 1, "data.name": "tiny", "seed": 0}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _campaign(tmp: Path, text: str = CAMPAIGN) -> Path:
    """The spec folder: the campaign, its spaces and the old searches it may import (4 MF rows inside the space,
    one outside; 2 DDRM rows on the best old MF backend, 1 on another)."""
    folder = tmp / "spec"
    folder.mkdir(parents=True, exist_ok=True)
    for name, space in (("mf.yaml", SPACE_MF), ("ddrm.yaml", SPACE_DDRM), ("ease.yaml", SPACE_EASE)):
        (folder / name).write_text(space)
    _write_csv(folder / "old" / "mf" / "runs.csv",
               [_row(1, _mf(CHOSEN_LR), 8, valid=0.9), _row(2, _mf(0.005), 2, ended=False),
                _row(3, _mf(0.02), 4), _row(4, _mf(0.003), 2, ended=False),
                _row(5, _mf(0.5), 20)])  # lr outside the space: not imported
    _write_csv(folder / "old" / "ddrm" / "runs.csv",
               [_row(1, _ddrm(CHOSEN_LR, 0.5), 4), _row(2, _ddrm(CHOSEN_LR, 0.3), 1, ended=False),
                _row(3, _ddrm(0.005, 0.5), 4)])
    (folder / "est.yaml").write_text(text)
    return folder / "est.yaml"


def _probes(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps({"host": json.dumps(host_tags(), sort_keys=True), "probes": PROBES}))


def _plan(spec_path: Path, out: Path) -> dict[str, Any]:
    _probes(out)
    return plan_campaign(load_campaign(spec_path), "tiny", out, probe=True)


def _choose(out: Path, spec_path: Path, stage: str, params: dict[str, Any], chosen: dict | None = None) -> None:
    """Write ``stage``'s chosen config as the run does (its search's base with ``params``)."""
    spec = load_campaign(spec_path)
    configs = chosen or {}
    config = best_config(search_spec(spec, stage, "tiny", configs), {"best": {"params": params}})
    _write_chosen(out / "stages" / stage, config, f"stage {stage}: chosen (test)")


def _hours(seconds: float) -> float:
    return seconds / 3600


def test_the_expected_epochs_follow_ashas_rungs():
    assert asha_expected_epochs(2, 20, 2) == pytest.approx(MF_PER_TRIAL)
    assert asha_expected_epochs(1, 4, 2) == pytest.approx(DDRM_PER_TRIAL)


# ------------------------------------------------------------------------------------------------ imports
def test_imported_rows_count_toward_the_trials_and_only_the_rest_is_estimated(tmp_path):
    spec_path = _campaign(tmp_path, CAMPAIGN + IMPORTS)
    plan = _plan(spec_path, tmp_path / "out")
    mf = plan["stages"]["mf"]
    spec = load_campaign(spec_path)
    selected = select_rows(spec_path.parent / "old/mf/runs.csv", search_spec(spec, "mf", "tiny", {}))
    assert mf["imported"] == len(selected.rows) == 4 and mf["trials"] == 6 and mf["left"] == 2
    assert mf["expected_epochs"] == pytest.approx(2 * MF_PER_TRIAL) and mf["rule"] == "asha"
    assert mf["trials_cpu_hours"] == pytest.approx(_hours(2 * MF_PER_TRIAL * 10))
    assert mf["cpu_hours"] == pytest.approx(mf["trials_cpu_hours"])
    assert mf["from_scratch_cpu_hours"] == pytest.approx(_hours(6 * MF_PER_TRIAL * 10))
    stages = sum(s.get("cpu_hours", 0.0) for s in plan["stages"].values())
    assert plan["cpu_hours"] == pytest.approx(stages + plan["tables"]["main"]["cpu_hours"])
    assert "6 trials (4 imported, 2 to train)" in format_plan(plan, 2)


def test_a_plug_ins_import_count_is_provisional_while_its_backend_is_not_chosen(tmp_path):
    """mf imports 4 of its 6 trials: it stands in with its best imported row (lr 0.01), on which 2 old DDRM rows
    ran; the count is provisional, since the 2 trials mf still trains may choose another backend."""
    spec_path = _campaign(tmp_path, CAMPAIGN + IMPORTS)
    plan = _plan(spec_path, tmp_path / "out")
    ddrm = plan["stages"]["mf_ddrm"]
    assert plan["stages"]["mf"]["basis"] == "best imported row"
    assert ddrm["imported"] == 2 and ddrm["left"] == 4 and ddrm["provisional"] == ["mf"]
    assert ddrm["expected_epochs"] == pytest.approx(4 * DDRM_PER_TRIAL)
    printed = format_plan(plan, 2)
    assert ("imports old/ddrm/runs.csv (count provisional: mf not chosen yet; counted on mf's best imported "
            "row)") in printed
    assert printed.count("count provisional") == 1


def test_an_import_that_fills_the_budget_settles_the_choice_and_a_chosen_config_decides(tmp_path):
    spec_path = _campaign(tmp_path, CAMPAIGN.replace("budget: 6", "budget: 4") + IMPORTS)
    plan = _plan(spec_path, tmp_path / "out")
    assert plan["stages"]["mf"]["left"] == 0 and plan["stages"]["mf"]["cpu_hours"] == 0.0
    assert plan["stages"]["mf_ddrm"]["provisional"] == [] and plan["stages"]["mf_ddrm"]["imported"] == 2
    _choose(tmp_path / "out", spec_path, "mf", {"model.lr": 0.005})  # the run chose another backend
    plan = _plan(spec_path, tmp_path / "out")
    assert plan["stages"]["mf"]["basis"] == "chosen"
    assert plan["stages"]["mf_ddrm"]["imported"] == 1 and plan["stages"]["mf_ddrm"]["provisional"] == []


# ------------------------------------------------------------------------------------------- table from records
def _finished_mf(out: Path, spec_path: Path) -> None:
    """mf's search finished here: lr 0.01 chosen; its row trained 7 epochs. A stopped row of the same config
    comes first, and a row of another config has a higher validation value: the chosen config decides."""
    _write_csv(out / "stages" / "mf" / "runs.csv",
               [_row(1, _mf(CHOSEN_LR), 2, ended=False, cost=2.0), _row(2, _mf(0.02), 12, valid=0.99, cost=9.0),
                _row(3, _mf(CHOSEN_LR), 7, valid=0.5, cost=6.0)])
    _choose(out, spec_path, "mf", {"model.lr": CHOSEN_LR})


def test_a_table_row_takes_its_chosen_trials_epochs_and_the_others_their_cap(tmp_path):
    spec_path, out = _campaign(tmp_path), tmp_path / "out"
    plan = _plan(spec_path, out)
    rows = plan["tables"]["main"]["row_estimates"]
    assert rows["mf/alone"]["epochs"] == 20 and rows["mf/alone"]["rule"] == "cap"  # nothing finished yet
    _finished_mf(out, spec_path)
    assert ChosenTrials(out).row("mf")["run_id"] == "run3"
    table = _plan(spec_path, out)["tables"]["main"]
    rows = table["row_estimates"]
    assert rows["mf/alone"]["epochs"] == 7 and rows["mf/alone"]["rule"] == "records of mf"
    assert rows["mf/ddrm"]["epochs"] == 4 and rows["mf/ddrm"]["rule"] == "cap"  # mf_ddrm not searched yet
    assert rows["ease/tuned"]["rule"] == "one fit"
    assert len(table["backends"]) == 1 and table["backends"][0]["rows"] == ["mf/alone", "mf/ddrm"]
    # 2 seeds x (MF backend 7 epochs x 6/7 s (its chosen trial's 6 s over 7 epochs), once for both rows + DDRM
    # 4 x 100 s (the probe: mf_ddrm not searched yet) + one EASE fit of 1 s)
    assert table["cpu_hours"] == pytest.approx(_hours(2 * (7 * 6 / 7 + 4 * 100 + 1)))
    printed = format_plan(_plan(spec_path, out), 2)
    assert "epochs per seed from the chosen trials' records: mf/alone 7; at the epoch cap: mf/ddrm 4" in printed


def test_a_ddrm_row_takes_its_ddrm_epochs_from_records_and_a_search_its_backends_pretraining(tmp_path):
    spec_path, out = _campaign(tmp_path), tmp_path / "out"
    _finished_mf(out, spec_path)
    plan = _plan(spec_path, out)
    ddrm = plan["stages"]["mf_ddrm"]  # the driver pretrains the chosen MF backend: 7 epochs as recorded
    assert ddrm["backend"] == {"epochs": 7, "rule": "records of mf", "trained": "once, by the driver"}
    assert ddrm["pretrain_cpu_hours"] == pytest.approx(_hours(7 * 10))
    assert ddrm["trials_cpu_hours"] == pytest.approx(_hours(6 * DDRM_PER_TRIAL * 100))
    assert ddrm["cpu_hours"] == pytest.approx(ddrm["trials_cpu_hours"] + ddrm["pretrain_cpu_hours"])
    mf = stand_in_configs(load_campaign(spec_path), "tiny", out)["mf"]  # the chosen MF
    _choose(out, spec_path, "mf_ddrm", {"ddrm.bpr_weight": 0.5}, chosen={"mf": mf})
    chosen = dict(_ddrm(CHOSEN_LR, 0.5))
    _write_csv(out / "stages" / "mf_ddrm" / "runs.csv",
               [{**_row(1, chosen, 3, cost=30.0), "cost_backend_from_cache": 1.0}])
    rows = _plan(spec_path, out)["tables"]["main"]["row_estimates"]
    assert rows["mf/ddrm"]["epochs"] == 3 and rows["mf/ddrm"]["rule"] == "records"


# ------------------------------------------------------------------------------ table seconds per epoch from records
def _finished_ddrm(out: Path, spec_path: Path, **cost: float | None) -> dict[str, Any]:
    """mf_ddrm's search finished here on mf's config as the plan stands it in: its chosen trial (bpr_weight 0.5)
    trained 3 DDRM epochs for 30 CPU-seconds on the backend its driver pretrained, unless ``cost`` sets other
    ``cost_*`` cells (None: the cell is empty). Returns the plan made then."""
    mf = stand_in_configs(load_campaign(spec_path), "tiny", out)["mf"]
    _choose(out, spec_path, "mf_ddrm", {"ddrm.bpr_weight": 0.5}, chosen={"mf": mf})
    row = {**_row(1, _ddrm(mf.model.lr, 0.5), 3, cost=30.0), "cost_backend_from_cache": 1.0}
    row.update({f"cost_{k}": v for k, v in cost.items()})
    _write_csv(out / "stages" / "mf_ddrm" / "runs.csv", [row])
    return _plan(spec_path, out)


def _row_hours(row: dict[str, Any], seeds: int = 2) -> float:
    """A row's (or backend's) estimate as its epochs x its CPU-seconds per epoch, over the seeds."""
    return _hours(seeds * row["epochs"] * row["cpu_seconds_per_epoch"])


def test_a_table_row_takes_its_chosen_trials_recorded_seconds_per_epoch(tmp_path):
    """mf's chosen trial: 6 CPU-s over 7 epochs; mf_ddrm's: 30 over its 3 DDRM epochs (the backend pretrained by
    the driver, so the cost is of those epochs alone). The probe said 10 and 100; the searches keep it."""
    spec_path, out = _campaign(tmp_path), tmp_path / "out"
    _finished_mf(out, spec_path)
    plan = _finished_ddrm(out, spec_path)
    table = plan["tables"]["main"]
    rows, backend = table["row_estimates"], table["backends"][0]
    assert rows["mf/ddrm"]["cpu_seconds_per_epoch"] == pytest.approx(10.0) and rows["mf/ddrm"]["epochs"] == 3
    assert rows["mf/ddrm"]["rate_rule"] == "rate from records of mf_ddrm" and "rate_note" not in rows["mf/ddrm"]
    assert rows["mf/ddrm"]["cpu_hours"] == pytest.approx(_row_hours(rows["mf/ddrm"])) == pytest.approx(_hours(60))
    assert backend["cpu_seconds_per_epoch"] == pytest.approx(6 / 7)
    assert backend["rate_rule"] == "rate from records of mf"
    assert backend["cpu_hours"] == pytest.approx(_row_hours(backend)) == pytest.approx(_hours(12))
    assert rows["mf/alone"]["cpu_seconds_per_epoch"] == backend["cpu_seconds_per_epoch"]  # its cost: the backend's
    assert rows["ease/tuned"]["rate_rule"] == "rate from the probe" and rows["ease/tuned"]["cpu_hours"] == _hours(2)
    assert table["cpu_hours"] == pytest.approx(_hours(12 + 60 + 2))
    assert plan["stages"]["mf_ddrm"]["rate_rule"] == "rate from the probe"  # a search: its own records never
    assert plan["stages"]["mf_ddrm"]["trials_cpu_hours"] == pytest.approx(_hours(6 * DDRM_PER_TRIAL * 100))
    assert {"rate from records", "rate from the probe"} <= set(plan["rules"])
    printed = format_plan(plan, 2)
    assert ("CPU-seconds per epoch from the chosen trials' records: mf/alone 0.86, mf/ddrm 10.00; per fit from the "
            "probe: ease/tuned 1.00") in printed
    assert "[mf/alone mf/ddrm] 7 (records) x 0.86 CPU-s (records)" in printed and "giving none" not in printed


def test_a_tables_estimate_frozen_at_start_keeps_the_rates_it_was_made_with(tmp_path):
    spec_path, out = _campaign(tmp_path), tmp_path / "out"
    _finished_mf(out, spec_path)
    plan = _finished_ddrm(out, spec_path)
    record = {"estimate": with_frozen(plan, None)}
    assert freeze_at_start(record, "tables", "main", lambda: _plan(spec_path, out))  # ease not chosen: re-planned
    (out / "campaign.json").write_text(json.dumps(record))
    later = _finished_ddrm(out, spec_path, cpu_seconds=90.0)  # records that change after the table started
    assert later["tables"]["main"]["row_estimates"]["mf/ddrm"]["cpu_seconds_per_epoch"] == pytest.approx(30.0)
    frozen = judged(with_frozen(later, carry_frozen(out)), "tables", "main")
    assert frozen["row_estimates"]["mf/ddrm"]["cpu_seconds_per_epoch"] == pytest.approx(10.0)
    assert frozen["made"] == REPLANNED and frozen["cpu_hours"] == pytest.approx(_hours(12 + 60 + 2))
    assert later["tables"]["main"]["cpu_hours"] == pytest.approx(_hours(12 + 180 + 2))


def test_a_row_whose_stage_has_not_finished_takes_the_probes_rate_for_its_cpus(tmp_path):
    """Two CPUs per trial: the probe's seconds count twice as CPU-seconds; a record's CPU-seconds count once."""
    spec_path, out = _campaign(tmp_path, CAMPAIGN + "cpus_per_trial: 2\n"), tmp_path / "out"
    rows = _plan(spec_path, out)["tables"]["main"]["row_estimates"]
    assert {r["rate_rule"] for r in rows.values()} == {"rate from the probe"}  # nothing finished
    _finished_mf(out, spec_path)
    plan = _plan(spec_path, out)
    table = plan["tables"]["main"]
    ddrm, backend = table["row_estimates"]["mf/ddrm"], table["backends"][0]
    assert ddrm["rate_rule"] == "rate from the probe" and "rate_note" not in ddrm  # mf_ddrm not searched yet
    assert ddrm["cpu_seconds_per_epoch"] == 200.0 and ddrm["epochs"] == 4
    assert ddrm["cpu_hours"] == pytest.approx(_row_hours(ddrm)) == pytest.approx(_hours(2 * 4 * 200))
    assert backend["cpu_seconds_per_epoch"] == pytest.approx(6 / 7)
    assert table["cpu_hours"] == pytest.approx(_hours(2 * (6 + 4 * 200 + 2)))
    assert "per epoch from the probe: mf/ddrm 200.00" in format_plan(plan, 2)


@pytest.mark.parametrize("cost, why", [
    ({"epochs": 10.0, "backend_from_cache": 0.0}, "cost_epochs 10 but its final stage trained 3"),  # backend too
    ({"epochs": 10.0}, "cost_epochs 10 but its final stage trained 3"),  # resumed after training it: other_epochs
    ({"epochs": 0.0}, "cost_epochs 0, cost_cpu_seconds 30: no epochs to divide by"),
    ({"epochs": None, "cpu_seconds": None}, "no cost_cpu_seconds / cost_epochs recorded"),
])
def test_a_row_whose_records_give_no_rate_takes_the_probes_and_says_why(tmp_path, cost, why):
    spec_path, out = _campaign(tmp_path), tmp_path / "out"
    _finished_mf(out, spec_path)
    plan = _finished_ddrm(out, spec_path, **cost)
    ddrm = plan["tables"]["main"]["row_estimates"]["mf/ddrm"]
    assert ddrm["epochs"] == 3 and ddrm["rule"] == "records"  # its epochs still from records
    assert ddrm["rate_rule"] == "rate from the probe" and ddrm["cpu_seconds_per_epoch"] == 100.0
    assert ddrm["rate_note"].startswith(f"mf_ddrm: {why}")
    assert ddrm["cpu_hours"] == pytest.approx(_hours(2 * 3 * 100))
    printed = format_plan(plan, 2)
    assert f"at the probe's rate, the finished stages' records giving none: mf/ddrm (mf_ddrm: {why}" in printed


def test_a_backend_whose_epochs_a_ddrm_trial_recorded_beside_its_own_takes_the_probes_rate(tmp_path):
    """mf not finished; mf_ddrm's chosen trial trained its backend itself: 7 backend epochs (10 - 3) recorded, but
    its one cost covers both stages: no rate for either."""
    spec_path, out = _campaign(tmp_path), tmp_path / "out"
    plan = _finished_ddrm(out, spec_path, epochs=10.0, backend_from_cache=0.0)
    table = plan["tables"]["main"]
    backend = table["backends"][0]
    assert backend["epochs"] == 7 and backend["rule"] == "records of mf_ddrm"
    assert backend["rate_rule"] == "rate from the probe" and backend["cpu_seconds_per_epoch"] == 10.0
    assert backend["rate_note"] == "mf_ddrm's chosen trial trained its backend and DDRM under one cost"
    assert table["row_estimates"]["mf/alone"]["rate_rule"] == "rate from the probe"
    assert table["cpu_hours"] == pytest.approx(_hours(2 * (7 * 10 + 3 * 100 + 1)))
    assert ("backend [mf/alone mf/ddrm] (mf_ddrm's chosen trial trained its backend and DDRM under one cost)"
            in format_plan(plan, 2))


def test_one_backend_for_the_alone_mean_and_ddrm_rows_and_its_own_for_a_loss_plug_in():
    alone = load_config(None, {"model.name": "mf", "model.lr": 0.01, "ddrm.enabled": False})
    ddrm = load_config(None, {"model.name": "mf", "model.lr": 0.01, "ddrm.enabled": True, "train.precision": "bf16"})
    assert backend_key(alone) == backend_key(ddrm)  # bf16 changes only the denoisers: the same backend
    assert backend_key(alone) != backend_key(alone.replace({"denoise.name": "tce"}))
    assert backend_key(alone) != backend_key(alone.replace({"model.lr": 0.02}))


# --------------------------------------------------------------------------------------------- calibration
def _sibling(results: Path, name: str, epochs: list[int], campaign: str = "est", chosen: bool = True,
             train_epochs: int = 20) -> None:
    """Another dataset's campaign folder beside ``out`` with a search of mf (finished when ``chosen``)."""
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "campaign.json").write_text(json.dumps({"campaign": campaign, "dataset": name}))
    _write_csv(folder / "stages" / "mf" / "runs.csv",
               [_row(n, _mf(0.001 + n / 1000, train_epochs), e) for n, e in enumerate(epochs)])
    if chosen:
        _write_chosen(folder / "stages" / "mf", load_config(None, _flat_to_overrides(_mf(0.002, train_epochs))), "x")


def _flat_to_overrides(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "train.threads"}


def test_search_epochs_are_calibrated_by_other_datasets_finished_searches_never_by_their_own(tmp_path):
    results = tmp_path / "results"
    spec_path, out = _campaign(tmp_path), results / "tiny"
    _sibling(results, "a", [2, 2, 4, 8, 20, 6])  # 42 of 6 x 5.25 = 31.5 expected: 1.333
    _sibling(results, "b", [2, 2, 2, 2, 4, 4, 6, 8], train_epochs=8)  # cap 8: 2 + 1 + 1 = 4 per trial; 30/32
    _sibling(results, "c", [20] * 6, campaign="another")  # another campaign: not read
    _sibling(results, "d", [20] * 6, chosen=False)  # its search has not finished: not read
    _finished_mf(out, spec_path)  # this dataset's own records (a campaign folder like the others): never read
    _write_csv(out / "stages" / "mf" / "runs.csv", [_row(n, _mf(CHOSEN_LR + n / 1000), 20) for n in range(6)])
    (out / "campaign.json").write_text(json.dumps({"campaign": "est", "dataset": "tiny"}))
    plan = _plan(spec_path, out)
    mf = plan["stages"]["mf"]
    factor = (42 / 31.5 + 30 / 32) / 2
    assert mf["calibration"]["factor"] == pytest.approx(factor)
    assert [r["source"] for r in mf["calibration"]["records"]] == ["a/mf", "b/mf"]
    assert mf["epochs_per_trial"] == pytest.approx(MF_PER_TRIAL * factor)
    assert mf["expected_epochs"] == pytest.approx(6 * MF_PER_TRIAL * factor)
    assert mf["rule"] == f"asha x{factor:.2f} calibrated"
    assert plan["stages"]["mf_ddrm"]["calibration"] is None and plan["stages"]["ease"]["calibration"] is None
    assert "calibrated: epochs per trial x1.14, the mean recorded / expected of a/mf (42 of 32" in format_plan(plan, 2)


def test_a_stages_imported_earlier_search_calibrates_it_before_other_datasets(tmp_path):
    """Five rows of the earlier search on this dataset (4 + 2 + 2 + 2 + 4 = 14 of 5 x 5.25) win over a sibling."""
    text = CAMPAIGN.replace("budget: 6", "budget: 8") + IMPORTS
    spec_path = _campaign(tmp_path, text)
    rows = pd.read_csv(spec_path.parent / "old/mf/runs.csv")
    extra = pd.DataFrame([_row(6, _mf(0.004), 4)])
    pd.concat([rows, extra]).to_csv(spec_path.parent / "old/mf/runs.csv", index=False)
    results = tmp_path / "results"
    _sibling(results, "a", [20] * 6)
    plan = _plan(spec_path, results / "tiny")
    mf = plan["stages"]["mf"]
    assert mf["imported"] == 5 and mf["left"] == 3
    assert mf["calibration"]["factor"] == pytest.approx((8 + 2 + 4 + 2 + 4) / (5 * MF_PER_TRIAL))
    assert mf["calibration"]["records"][0]["source"].endswith("old/mf/runs.csv")
    assert mf["expected_epochs"] == pytest.approx(3 * 20 / 5)  # 4 epochs per trial on average


def test_a_calibration_never_exceeds_the_epoch_cap(tmp_path):
    results = tmp_path / "results"
    spec_path = _campaign(tmp_path)
    _sibling(results, "a", [20] * 6)  # 120 / 31.5 = 3.8x
    mf = _plan(spec_path, results / "tiny")["stages"]["mf"]
    assert mf["epochs_per_trial"] == 20 and mf["expected_epochs"] == 6 * 20


# ---------------------------------------------------------------------------------------------- the ratio
def test_the_ratio_compares_the_recorded_cost_with_the_estimate_of_the_same_trials(tmp_path):
    """The folder's runs.csv holds 0.3 CPU-h imported from an earlier search and 0.6 trained here; the plan
    estimated 0.5 for the trials left and 0.2 for the driver's pretraining (not in runs.csv): 0.6 / 0.5."""
    stage = tmp_path / "stages" / "mf_ddrm"
    stage.mkdir(parents=True)
    pd.DataFrame({"cost_epochs": [10, 20, 5], "cost_cpu_seconds": [1080.0, 1080.0, 1080.0]}).to_csv(
        stage / "runs.csv", index=False)
    estimate = {"cpu_hours": 0.7, "trials_cpu_hours": 0.5, "pretrain_cpu_hours": 0.2, "imported_cpu_hours": 0.3,
                "rule": "asha x0.64 calibrated"}
    record = {"campaign": "est", "dataset": "d", "budget": 6, "search_seed": 0, "table_seeds": [1, 2],
              "stages": {"mf_ddrm": {"kind": "search", "mode": "tpe", "finished": 3, "best_valid": None,
                                     "imported_from": None}},
              "tables": {}, "estimate": {"cpu_hours": 0.7, "stages": {"mf_ddrm": estimate}}}
    (tmp_path / "campaign.json").write_text(json.dumps(record))
    text = campaign_markdown(tmp_path)
    assert "| 0.90 | 0.50 (1.20x; asha x0.64 calibrated) |" in text
    assert estimate_cell({"cpu_hours": 0.8}, 0.4) == "0.80 (0.50x)"  # a plan made before the split: its total


# ------------------------------------------------------------------------------------- estimates frozen at start
def _fail_replan() -> dict[str, Any]:
    raise AssertionError("re-planned a part its launch's plan already stood in on chosen stages")


def _older_record(out: Path) -> dict[str, Any]:
    """A campaign.json written before estimates were frozen: mf's search finished (1.5 CPU-h recorded), ease's
    started (a runs.csv, not finished), mf_ddrm and the table not started; ``estimate`` as its launches stored it."""
    _write_csv(out / "stages" / "mf" / "runs.csv",
               [_row(1, _mf(CHOSEN_LR), 2, ended=False, cost=1800.0), _row(2, _mf(0.02), 12, cost=1800.0),
                _row(3, _mf(CHOSEN_LR), 7, valid=0.5, cost=1800.0)])
    _write_csv(out / "stages" / "ease" / "runs.csv", [_row(1, {"model.name": "ease", "seed": 0}, 1, cost=36.0)])
    old = {"cpu_hours": 4.0, "stages": {"mf": {"kind": "tpe", "trials": 6, "cpu_hours": 1.25, "rule": "asha"},
                                        "ease": {"kind": "grid", "trials": 4, "cpu_hours": 0.01},
                                        "mf_ddrm": {"kind": "tpe", "trials": 6, "cpu_hours": 0.5}},
           "tables": {"main": {"rows": 3, "cpu_hours": 2.24}}}
    record = {"campaign": "est", "dataset": "tiny", "budget": 6, "search_seed": 0, "table_seeds": [1, 2],
              "stages": {"mf": {"kind": "search", "mode": "tpe", "finished": 2, "best_valid": None}}, "tables": {},
              "estimate": old}
    (out / "campaign.json").write_text(json.dumps(record))
    return record


def test_an_older_records_estimates_stay_frozen_for_the_stages_it_started_across_refreshed_plans(tmp_path):
    results = tmp_path / "results"
    spec_path, out = _campaign(tmp_path), results / "tiny"
    record = _older_record(out)
    _choose(out, spec_path, "mf", {"model.lr": CHOSEN_LR})
    _sibling(results, "a", [20] * 6)  # a sibling dataset's search finished since: it calibrates mf now
    plan = _plan(spec_path, out)
    assert plan["stages"]["mf"]["rule"].endswith("calibrated") and plan["made_at"].endswith("+00:00")
    frozen = carry_frozen(out)
    assert set(frozen["stages"]) == {"mf", "ease"} and frozen["tables"] == {}  # the parts that had started
    assert frozen["stages"]["mf"]["made"] == OLDER and frozen["stages"]["mf"]["made_at"] is None
    record["estimate"] = with_frozen(plan, frozen)
    assert judged(record["estimate"], "stages", "mf")["cpu_hours"] == 1.25  # not the refreshed plan's
    assert judged(record["estimate"], "stages", "mf_ddrm") == plan["stages"]["mf_ddrm"]  # not started: current
    assert not freeze_at_start(record, "stages", "mf", _fail_replan)  # frozen before: kept
    assert freeze_at_start(record, "stages", "mf_ddrm", _fail_replan)  # mf chosen: the launch's plan is current
    ddrm = record["estimate"]["frozen"]["stages"]["mf_ddrm"]
    assert ddrm["made"] == LAUNCH and ddrm["made_at"] == plan["made_at"]
    assert ddrm["trials_cpu_hours"] == plan["stages"]["mf_ddrm"]["trials_cpu_hours"] != 0.5
    (out / "campaign.json").write_text(json.dumps(record))
    later = json.loads(json.dumps(plan))  # the next launch's plan: other numbers everywhere
    for entry in later["stages"].values():
        entry.update(cpu_hours=9.0, trials_cpu_hours=9.0)
    estimate = with_frozen(later, carry_frozen(out))
    assert estimate["frozen"] == record["estimate"]["frozen"]
    assert judged(estimate, "stages", "mf")["cpu_hours"] == 1.25
    assert judged(estimate, "stages", "ease")["cpu_hours"] == 0.01
    assert judged(estimate, "stages", "mf_ddrm")["trials_cpu_hours"] == ddrm["trials_cpu_hours"]
    (out / "campaign.json").write_text(json.dumps({**record, "estimate": estimate}))
    text = campaign_markdown(out)  # the ratio and the total: against the frozen 1.25, not the latest 9.0
    assert "| 1.50 | 1.25 (1.20x; asha) |" in text
    assert "est.: frozen when the stage started (`campaign.json` `estimate.frozen`), not the latest plan's." in text
    assert "the trials trained here 1.50 against 1.25 estimated when each search started (1.20x)" in text


def test_a_part_its_launch_planned_on_unchosen_upstreams_is_re_planned_when_it_starts(tmp_path):
    spec_path, out = _campaign(tmp_path), tmp_path / "out"
    launch = _plan(spec_path, out)  # nothing chosen: mf_ddrm stood in on mf's base, the table at caps
    assert launch["stages"]["mf_ddrm"]["provisional"] == ["mf"]
    assert not stale(launch, "stages", "mf") and stale(launch, "stages", "mf_ddrm") and stale(launch, "tables", "main")
    record = {"estimate": with_frozen(launch, carry_frozen(out))}  # a first launch: nothing frozen
    assert freeze_at_start(record, "stages", "mf", _fail_replan)
    _finished_mf(out, spec_path)  # mf chose; mf_ddrm starts next, in the same launch
    plans = []

    def replan() -> dict[str, Any]:
        plans.append(_plan(spec_path, out))
        return plans[-1]

    assert freeze_at_start(record, "stages", "mf_ddrm", replan) and len(plans) == 1
    frozen = record["estimate"]["frozen"]["stages"]
    assert frozen["mf_ddrm"]["made"] == REPLANNED and frozen["mf_ddrm"]["provisional"] == []
    assert frozen["mf_ddrm"]["backend"]["rule"] == "records of mf"  # the launch's plan: mf's cap
    assert launch["stages"]["mf_ddrm"]["backend"]["rule"] == "cap"
    kept = {k: v for k, v in frozen["mf"].items() if k not in ("made", "made_at", "frozen_at")}
    assert frozen["mf"]["made"] == LAUNCH and kept == launch["stages"]["mf"]  # kept through the re-plan
    assert record["estimate"]["made_at"] == plans[0]["made_at"]  # the current plan is the new one
    assert freeze_at_start(record, "tables", "main", replan) and len(plans) == 2  # its rows' stages not chosen then
    table = record["estimate"]["frozen"]["tables"]["main"]
    assert table["made"] == REPLANNED and table["row_estimates"]["mf/alone"]["rule"] == "records of mf"
    assert not freeze_at_start(record, "tables", "main", replan) and len(plans) == 2
