"""Campaign stages side by side, end to end on generated data (real local Ray, MLflow, Tune): independent stages run
at once, a dependent stage starts after its source is chosen, the campaign's trial limit holds across stages, and a
SIGINT stops every running stage cleanly and the rerun resumes without training a finished trial twice.

Each trial records, in its worker, when it started and ended (``faults.meeting``); two stages meant to run at once
wait there for each other's trial (up to a limit), so overlap, or its absence, shows in the records, not in
timings."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from campaign_spaces import SPACE_MF
from conftest import local_ray, make_interactions
from faults import meeting, patched

from ddrm.cli import main
from ddrm.data import write_prepared

pytestmark = pytest.mark.slow

CAMPAIGN = """name: side
budget: 1
search_seed: 0
table_seeds: [1]
max_concurrent: 2
stages:
  a: {space: mf.yaml}
  b: {space: mf.yaml}
  c: {space: mf.yaml, inherit: {a: ["model.dim"]}}
"""
ONE_POINT = """mode: grid
base: {model: {name: ease}}
space:
  model.ease_lambda: {type: choice, values: [10]}
scheduler: {type: fifo}
"""
STOPPED = """name: stop
budget: 1
search_seed: 0
table_seeds: [1]
max_concurrent: 2
stages:
  g: {space: one.yaml}
  m: {space: mf.yaml}
"""


@pytest.fixture(scope="module")
def ray_up(tmp_path_factory):
    with local_ray(tmp_path_factory.mktemp("cache")):  # 2 CPUs: room for two trials at once
        yield


def _setup(tmp: Path, text: str) -> tuple[Path, Path]:
    """``(spec, data dir)``: the campaign ``text`` beside its spaces, and the generated ``tiny`` split."""
    (tmp / "spec").mkdir()
    (tmp / "spec" / "mf.yaml").write_text(SPACE_MF)
    (tmp / "spec" / "one.yaml").write_text(ONE_POINT)
    (tmp / "spec" / "campaign.yaml").write_text(text)
    write_prepared(tmp / "data" / "tiny", *make_interactions())
    (tmp / "records").mkdir()
    return tmp / "spec" / "campaign.yaml", tmp / "data"


def _run(tmp: Path, spec: Path, data: Path, *flags: str) -> int:
    return main(["campaign", "run", str(spec), "--dataset", "tiny", "--data-dir", str(data), "--out",
                 str(tmp / "out"), "--storage", str(tmp / "ray"), "--no-probe", *flags])


def _trials(records: Path) -> dict[str, list[tuple[float, float]]]:
    """Per study (the stage's name), each trial's (start, end) as its worker recorded them."""
    trials: dict[str, list[tuple[float, float]]] = {}
    for path in records.glob("*.json"):
        record = json.loads(path.read_text())
        trials.setdefault(record["study"].rsplit("-", 1)[1], []).append((record["start"], record["end"]))
    return trials


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end before a start
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    return first[0] < second[1] and second[0] < first[1]


def test_independent_stages_run_at_once_and_a_dependent_one_starts_after_its_source_is_chosen(ray_up, tmp_path,
                                                                                              monkeypatch):
    spec, data = _setup(tmp_path, CAMPAIGN)
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts folder is relative to the working directory
    with patched(meeting(tmp_path / "records", ("side-tiny-a", "side-tiny-b"), wait_s=90)):
        assert _run(tmp_path, spec, data) == 0
    trials = _trials(tmp_path / "records")
    assert {s: len(t) for s, t in trials.items()} == {"a": 1, "b": 1, "c": 1}
    assert _overlap(trials["a"][0], trials["b"][0])  # a and b trained at the same time
    chosen_a = (tmp_path / "out" / "stages" / "a" / "chosen_config.yaml").stat().st_mtime
    assert trials["c"][0][0] > max(trials["a"][0][1], chosen_a)  # c: after a ended and its config was chosen
    assert _most_at_once([i for t in trials.values() for i in t]) <= 2
    record = json.loads((tmp_path / "out" / "campaign.json").read_text())
    assert list(record["stages"]) == ["a", "b", "c"]  # spec order, whichever stage ended first
    assert record["resources"]["stages_at_once"] == 2 and record["resources"]["max_concurrent"] == 2
    chosen_c = yaml.safe_load((tmp_path / "out" / "stages" / "c" / "chosen_config.yaml").read_text())
    assert chosen_c["model"]["dim"] == 8


def test_stages_side_by_side_share_the_campaigns_trial_slots(ray_up, tmp_path, monkeypatch):
    """One trial at a time in all: a and b run side by side, but their trials take turns (they would meet, two
    CPUs being free, if each stage had a slot of its own)."""
    spec, data = _setup(tmp_path, CAMPAIGN.replace("max_concurrent: 2", "max_concurrent: 1").replace(
        "  c: {space: mf.yaml, inherit: {a: [\"model.dim\"]}}\n", ""))
    monkeypatch.chdir(tmp_path)
    with patched(meeting(tmp_path / "records", ("side-tiny-a", "side-tiny-b"), wait_s=8)):
        assert _run(tmp_path, spec, data, "--stages-at-once", "2") == 0
    trials = _trials(tmp_path / "records")
    assert {s: len(t) for s, t in trials.items()} == {"a": 1, "b": 1}
    assert _most_at_once(trials["a"] + trials["b"]) == 1
    record = json.loads((tmp_path / "out" / "campaign.json").read_text())
    assert record["resources"]["stages_at_once"] == 2 and record["resources"]["max_concurrent"] == 1
    assert list(record["stages"]) == ["a", "b"]


def test_a_sigint_stops_the_running_stages_cleanly_and_the_rerun_trains_no_finished_trial_again(ray_up, tmp_path,
                                                                                               monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    spec, data = _setup(tmp_path, STOPPED)
    monkeypatch.chdir(tmp_path)
    out, records, release = tmp_path / "out", tmp_path / "records", tmp_path / "release"
    held = meeting(records, held=("stop-tiny-m",), hold_while_missing=release)  # m's trial waits for release

    def interrupt_when_g_is_chosen_and_m_trains() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (out / "stages" / "g" / "chosen_config.yaml").is_file() and list(records.glob("stop-tiny-m-*.start")):
                os.kill(os.getpid(), signal.SIGINT)
                break
            time.sleep(0.2)
        time.sleep(120)
        release.touch()  # the campaign did not stop: let it end (the test fails on its exit code, not a hang)

    lost: list = []
    previous = signal.signal(signal.SIGINT, lambda *_: lost.append("SIGINT"))  # never reached when all is well
    try:
        threading.Thread(target=interrupt_when_g_is_chosen_and_m_trains, daemon=True).start()
        with patched(held):
            assert _run(tmp_path, spec, data) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not lost
    assert f"interrupted: stage m was interrupted; its ended trials are kept in {out / 'stages' / 'm'}" in \
        capsys.readouterr().err
    assert not (out / "stages" / "m" / "chosen_config.yaml").exists()  # no config from a partial search
    assert list(json.loads((out / "campaign.json").read_text())["stages"]) == ["g"]
    assert not release.exists()

    release.touch()
    with patched(held):
        assert _run(tmp_path, spec, data) == 0
    assert list(json.loads((out / "campaign.json").read_text())["stages"]) == ["g", "m"]
    starts = [line.split()[0] for line in (records / "starts.log").read_text().splitlines()]
    assert starts.count("stop-tiny-g") == 1  # finished before the SIGINT: not trained again
    assert len(pd.read_csv(out / "stages" / "m" / "runs.csv")) == 1
    client = MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    trial_runs = {e.name: len(client.search_runs([e.experiment_id], "tags.role = 'trial'"))
                  for e in client.search_experiments() if e.name.startswith("stop-")}
    assert trial_runs == {"stop-tiny-g": 1, "stop-tiny-m": 1}  # the stopped trial resumed into its own run


def test_a_tune_folder_made_before_studies_ran_side_by_side_resumes_under_its_name_and_alone(ray_up, tmp_path,
                                                                                             monkeypatch, capsys):
    """Tune folders of an older version registered every study's trainable under one name: each restores under
    its own stored name (Tune refuses another) and runs with no other study beside it."""
    from ddrm.tuning import runner

    spec, data = _setup(tmp_path, CAMPAIGN.replace("  c: {space: mf.yaml, inherit: {a: [\"model.dim\"]}}\n", ""))
    monkeypatch.chdir(tmp_path)
    records = tmp_path / "records"
    with monkeypatch.context() as before, patched(meeting(records)):
        before.setattr(runner, "trainable_name", lambda study: runner.LEGACY_TRAINABLE)  # as the older code named it
        assert _run(tmp_path, spec, data, "--stages-at-once", "1") == 0
    folders = [tmp_path / "ray" / f"side-tiny-{stage}" for stage in ("a", "b")]
    assert all(runner.stored_trainable_name(f) == runner.LEGACY_TRAINABLE and runner.restores_alone(f)
               for f in folders)
    from ddrm.campaign.jobs import CampaignRun

    alone: dict[str, bool] = {}
    judged = CampaignRun._alone
    monkeypatch.setattr(CampaignRun, "_alone", lambda self, study: alone.setdefault(study, judged(self, study)))
    capsys.readouterr()
    with patched(meeting(records)):
        assert _run(tmp_path, spec, data) == 0
    assert capsys.readouterr().out.count("resuming study from") == 2  # Tune took each under its stored name
    assert alone == {"side-tiny-a": True, "side-tiny-b": True}  # so each ran with no other beside it
    assert len((records / "starts.log").read_text().splitlines()) == 2  # a and b once each: nothing trained again
