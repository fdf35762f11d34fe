"""A small campaign end to end on generated data: two searches, a dependent search, a table (real Ray + MLflow);
the protocol refusals; ``plan`` prints the graph and an estimate; a rerun on a "new machine" trains nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from campaign_spaces import SPACE_DDRM, SPACE_EASE, SPACE_MF
from conftest import local_ray, make_interactions

from ddrm.campaign.frozen import LAUNCH, REPLANNED
from ddrm.cli import main
from ddrm.data import write_prepared
from ddrm.tuning.snapshot import RunsSnapshot

pytestmark = pytest.mark.slow

CAMPAIGN = """name: small
budget: 2
search_seed: 0
table_seeds: [1, 2]
max_concurrent: 2
stages:
  mf: {space: mf.yaml}
  ease: {space: ease.yaml}
  mf_ddrm: {space: ddrm.yaml, inherit: {mf: ["model.*"]}}
tables:
  main:
    reference: alone
    baselines: [ease/tuned]
    rows: {mf/alone: mf, mf/ddrm: mf_ddrm, ease/tuned: ease}
"""


def _write_campaign(folder: Path, text: str = CAMPAIGN) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, space in (("mf.yaml", SPACE_MF), ("ddrm.yaml", SPACE_DDRM), ("ease.yaml", SPACE_EASE)):
        (folder / name).write_text(space)
    (folder / "small.yaml").write_text(text)
    return folder / "small.yaml"


@pytest.fixture(scope="module")
def campaign_run(tmp_path_factory):
    """One campaign run on generated data; yields ``(spec path, data dir, out, tmp)``."""
    tmp = tmp_path_factory.mktemp("campaign")
    write_prepared(tmp / "data" / "tiny", *make_interactions())
    spec = _write_campaign(tmp / "spec")
    out = tmp / "out"
    snapshots = tmp / "snapshots"  # a copy of every runs.csv snapshot, in the order written
    write = RunsSnapshot.write

    def keep_a_copy(self):
        path = write(self)
        snapshots.mkdir(exist_ok=True)
        shutil.copy(path, snapshots / f"{self.folder.name}-{len(list(snapshots.glob(self.folder.name + '-*')))}.csv")
        return path

    with local_ray(tmp / "cache"), pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)  # MLflow's artifacts folder is relative to the working directory
        patch.setattr(RunsSnapshot, "write", keep_a_copy)
        args = ["campaign", "run", str(spec), "--dataset", "tiny", "--data-dir", str(tmp / "data"), "--out",
                str(out), "--storage", str(tmp / "ray"), "--no-probe"]
        assert main(args) == 0
        yield spec, tmp / "data", out, tmp


def test_stages_run_in_dependency_order_and_the_dependent_search_takes_the_chosen_backend(campaign_run):
    _, _, out, _ = campaign_run
    chosen = {s: yaml.safe_load((out / "stages" / s / "chosen_config.yaml").read_text()) for s in ("mf", "ease", "mf_ddrm")}
    assert chosen["mf_ddrm"]["model"] == chosen["mf"]["model"]  # inherited, never copied by hand
    assert chosen["mf_ddrm"]["ddrm"]["enabled"] and not chosen["mf"]["ddrm"]["enabled"]
    search_runs = pd.read_csv(out / "stages" / "mf_ddrm" / "runs.csv")
    assert len(search_runs) == 2 and set(search_runs["seed"]) == {0}  # the budget, at the search seed
    assert set(pd.read_csv(out / "stages" / "mf_ddrm" / "runs.csv")["param.model.lr"]) == {chosen["mf"]["model"]["lr"]}
    table = pd.read_csv(out / "tables" / "main" / "runs.csv")
    assert set(table["seed"]) == {1, 2}  # table seeds, disjoint from the search's
    assert set(zip(table["model"], table["variant"])) == {("mf", "alone"), ("mf", "ddrm"), ("ease", "tuned")}
    assert table["test_recall_at_20"].notna().all()
    summary = (out / "campaign.md").read_text()
    assert "| mf/ddrm | mf_ddrm | 2 |" in summary and "| ease/tuned | ease | 2 |" in summary
    assert "Data: `tiny`, split unspecified; 60 users x 40 items" in summary  # every report names its split
    assert "## Stages" in summary and "| mf | tpe | 2 | " in summary and "| ease | grid | 2 | " in summary
    record = (out / "campaign.json").read_text()
    assert str(Path.cwd()) not in record and "/tmp/" not in record  # committed files name no machine path
    frozen = json.loads(record)["estimate"]["frozen"]  # each part's estimate, frozen as it started
    assert {s: f["made"] for s, f in frozen["stages"].items()} == {"mf": LAUNCH, "ease": LAUNCH, "mf_ddrm": REPLANNED}
    assert frozen["tables"]["main"]["made"] == REPLANNED  # re-planned once its rows' searches chose
    assert frozen["tables"]["main"]["row_estimates"]["mf/alone"]["rule"] == "records of mf"


def test_a_rerun_on_a_new_machine_resumes_from_the_campaign_folder_and_trains_nothing(campaign_run, capsys):
    spec, data, out, tmp = campaign_run
    before = pd.read_csv(out / "tables" / "main" / "runs.csv")
    moved = tmp / "committed"  # the campaign folder as committed: no tracking store, no Tune folder beside it
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("mlruns.db"))
    capsys.readouterr()
    assert main(["campaign", "run", str(spec), "--dataset", "tiny", "--data-dir", str(data), "--out", str(moved),
                 "--storage", str(tmp / "ray2"), "--no-probe"]) == 0
    printed = capsys.readouterr().out
    assert "2 finished trial(s) of small-tiny-mf are told to the searcher without training; 0 left" in printed
    assert "6 of 6 trials finished before and are replayed, not trained" in printed
    after = pd.read_csv(moved / "tables" / "main" / "runs.csv")
    assert after["test_recall_at_20"].tolist() == before["test_recall_at_20"].tolist()
    frozen = [json.loads((o / "campaign.json").read_text())["estimate"]["frozen"] for o in (out, moved)]
    assert frozen[0] == frozen[1]  # carried over: the resumed launch's plan changes none of them
    capsys.readouterr()
    assert main(["campaign", "summary", str(spec), "--dataset", "tiny", "--out", str(moved)]) == 0
    across = capsys.readouterr().out
    assert "| row | tiny R@20 | tiny N@20 |" in across and "| mf/alone |" in across
    assert "Splits: tiny: unspecified." in across


def test_each_finished_trial_updates_the_folder_so_a_stopped_search_resumes_without_retraining_it(campaign_run, capsys):
    _, data, _, tmp = campaign_run
    first, second = (pd.read_csv(tmp / "snapshots" / f"mf-{n}.csv") for n in (0, 1))
    assert len(first) == 1 and len(second) == 2  # written after each trial, not only when the search ends
    assert len(pd.read_csv(tmp / "snapshots" / "main-5.csv")) == 6  # the table's too
    stopped = tmp / "stopped"  # committed after the search's first trial; the machine (store, Tune folder) is gone
    (stopped / "stages" / "mf").mkdir(parents=True)
    shutil.copy(tmp / "snapshots" / "mf-0.csv", stopped / "stages" / "mf" / "runs.csv")
    # the same campaign cut to its mf stage (same name, same space: the same study), so only mf's search resumes
    mf_only = _write_campaign(tmp / "spec_mf_only", CAMPAIGN.split("  ease:")[0])
    capsys.readouterr()
    assert main(["campaign", "run", str(mf_only), "--dataset", "tiny", "--data-dir", str(data), "--out", str(stopped),
                 "--storage", str(tmp / "ray3"), "--no-probe"]) == 0
    printed = capsys.readouterr().out
    assert "1 finished trial(s) of small-tiny-mf are told to the searcher without training; 1 left" in printed
    resumed = pd.read_csv(stopped / "stages" / "mf" / "runs.csv")
    assert len(resumed) == 2
    kept = resumed[resumed["param.model.lr"] == first["param.model.lr"].iloc[0]]
    assert kept["valid_recall_at_20"].tolist() == first["valid_recall_at_20"].tolist()  # replayed, not retrained


def test_a_run_with_device_cpu_resumes_a_campaign_made_without_it_from_its_store(campaign_run, capsys, monkeypatch):
    """The device and the resources are where trials run, not what they compute: they enter no study key, so the
    store's studies are found again (one study run per experiment) and nothing trains."""
    from mlflow.tracking import MlflowClient

    spec, data, out, tmp = campaign_run
    elsewhere = tmp / "elsewhere"  # the checkout at another path, the campaign folder and its store carried along
    shutil.copytree(out, elsewhere / "out")
    monkeypatch.chdir(elsewhere)  # Tune's folder ("ray" under it, as in the study keys) is gone
    capsys.readouterr()
    assert main(["campaign", "run", str(spec), "--dataset", "tiny", "--data-dir", str(data), "--out",
                 str(elsewhere / "out"), "--storage", str(elsewhere / "ray"), "--device", "cpu", "--cpus-per-trial",
                 "1", "--max-concurrent", "1"]) == 0
    printed = capsys.readouterr().out
    assert "imported 0 finished trial(s)" in printed  # the store holds them all ...
    assert "2 finished trial(s) of small-tiny-mf are told to the searcher without training; 0 left" in printed
    assert "2 finished trial(s) of small-tiny-mf_ddrm are told to the searcher without training; 0 left" in printed
    assert "6 of 6 trials finished before and are replayed, not trained" in printed  # ... under the same studies
    client = MlflowClient(f"sqlite:///{elsewhere / 'out' / 'mlruns.db'}")
    studies = {e.name: len(client.search_runs([e.experiment_id], "tags.role = 'study'"))
               for e in client.search_experiments() if e.name.startswith("small-")}
    assert len(studies) == 4 and set(studies.values()) == {1}


def test_plan_prints_the_stage_graph_and_an_estimate(tmp_path, capsys):
    write_prepared(tmp_path / "data" / "tiny", *make_interactions())
    spec = _write_campaign(tmp_path / "spec")
    assert main(["campaign", "plan", str(spec), "--dataset", "tiny", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "level 1:" in printed and "level 2:" in printed
    assert "mf_ddrm <- mf[model.*]" in printed and "tpe, 2 trials" in printed and "grid, 2 trials" in printed
    assert "table main: 3 rows x 2 seeds = 6 runs, est." in printed and "total: est." in printed
    assert (tmp_path / "out" / "probe.json").is_file()  # measured once per host, reused


@pytest.mark.parametrize("change, fragment", [
    (("table_seeds: [1, 2]", "table_seeds: [0, 1]"), "disjoint from its searches'"),
    (("budget: 2", "budget: 1"), "over the campaign's budget of 1"),
    (("inherit: {mf:", "inherit: {nope:"), "inherits from 'nope', which is not a stage"),
    (("baselines: [ease/tuned]", "baselines: [ease/x]"), "baseline 'ease/x' is not one of its rows"),
])
def test_protocol_violations_are_refused_with_one_line(tmp_path, capsys, change, fragment):
    write_prepared(tmp_path / "data" / "tiny", *make_interactions())
    spec = _write_campaign(tmp_path / "spec", CAMPAIGN.replace(*change))
    assert main(["campaign", "plan", str(spec), "--dataset", "tiny", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "out"), "--no-probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and len(err.splitlines()) == 1
