"""A campaign's resources: ``--max-concurrent / --cpus-per-trial / --gpus-per-trial / --device`` reach every study
and trial (and its runs.csv row) without entering any config's identity; bad values are refused with one line; an
interrupted study stops the campaign; ``bench/gpu_campaign.sh`` stops with one line where there is no GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from campaign_spaces import SPACE_MF
from conftest import REPO_ROOT, local_ray, make_interactions

from ddrm.cli import build_parser, main
from ddrm.data import write_prepared

CAMPAIGN = """name: res
budget: 2
search_seed: 0
table_seeds: [1, 2]
stages:
  mf: {space: mf.yaml}
tables:
  main:
    rows: {mf/alone: mf}
"""


def _campaign(tmp_path: Path, text: str = CAMPAIGN) -> tuple[Path, Path]:
    """``(spec path, data dir)``: the one-stage campaign above and the generated ``tiny`` split."""
    (tmp_path / "spec").mkdir(exist_ok=True)
    (tmp_path / "spec" / "mf.yaml").write_text(SPACE_MF)
    (tmp_path / "spec" / "res.yaml").write_text(text)
    write_prepared(tmp_path / "data" / "tiny", *make_interactions())
    return tmp_path / "spec" / "res.yaml", tmp_path / "data"


def test_the_flags_replace_the_spec_resources_of_every_study_and_the_device_enters_no_identity(tmp_path):
    from ddrm.campaign.run import search_spec, table_spec
    from ddrm.cli_campaign import _spec
    from ddrm.config import config_from_dict
    from ddrm.tuning.plan import study_context
    from ddrm.tuning.runner import ablation_plan, search_plan
    from ddrm.tuning.spec import Resources

    spec_path, _ = _campaign(tmp_path)
    plain = _spec(build_parser().parse_args(["campaign", "run", str(spec_path), "--dataset", "tiny"]))
    assert search_spec(plain, "mf", "tiny", {}).resources == Resources(1.0, 0.0, None)  # the spec's defaults
    args = build_parser().parse_args(["campaign", "run", str(spec_path), "--dataset", "tiny", "--gpus-per-trial",
                                      "0.125", "--cpus-per-trial", "2", "--max-concurrent", "8", "--device", "cuda"])
    spec = _spec(args)
    search = search_spec(spec, "mf", "tiny", {})
    assert search.resources == Resources(2.0, 0.125, "cuda") and search.max_concurrent == 8
    chosen = {"mf": config_from_dict(search.base)}
    table = table_spec(spec, "main", "tiny", chosen)
    assert table.resources == Resources(2.0, 0.125, "cuda") and table.max_concurrent == 8
    ctx = study_context(str(tmp_path / "ray"), str(tmp_path / "data"), f"sqlite:///{tmp_path / 'm.db'}")
    plan = search_plan(search, ctx, search.resources)
    assert plan.config({"model.lr": 0.01, "seed": 0}).train.device == "cuda"  # every trial runs there ...
    assert plan.base_config().train.device == "auto"  # ... but the study's key (its base) has no device
    assert search.base == search_spec(plain, "mf", "tiny", {}).base
    trials = ablation_plan(table, ctx, table.resources)
    assert {trials.config({"variant": "mf/alone", "seed": s}).train.device for s in (1, 2)} == {"cuda"}
    assert {c.train.device for c in table.configs().values()} == {"auto"}


@pytest.mark.parametrize("flag, value, fragment", [
    ("--gpus-per-trial", "1.5", "--gpus-per-trial 1.5: expected a fraction of one GPU in (0, 1] or a whole number"),
    ("--gpus-per-trial", "-0.25", "--gpus-per-trial -0.25: expected a fraction"),
    ("--gpus-per-trial", "half", "--gpus-per-trial half: expected a fraction"),
    ("--cpus-per-trial", "0", "--cpus-per-trial 0: expected a number > 0"),
    ("--max-concurrent", "0", "--max-concurrent 0: expected an integer >= 1"),
    ("--max-concurrent", "2.5", "--max-concurrent 2.5: expected an integer >= 1"),
    ("--stages-at-once", "0", "--stages-at-once 0: expected an integer >= 1"),
    ("--device", "gpu", "--device gpu: expected one of auto, cpu, cuda"),
])
def test_bad_resource_values_are_refused_with_one_line(tmp_path, capsys, flag, value, fragment):
    spec, data = _campaign(tmp_path)
    assert main(["campaign", "plan", str(spec), "--dataset", "tiny", "--data-dir", str(data), "--out",
                 str(tmp_path / "out"), "--no-probe", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and len(err.splitlines()) == 1


def test_a_gpu_share_ray_cannot_schedule_in_the_spec_is_refused_with_one_line(tmp_path, capsys):
    spec, data = _campaign(tmp_path, CAMPAIGN.replace("budget: 2", "budget: 2\ngpus_per_trial: 2.5"))
    assert main(["campaign", "plan", str(spec), "--dataset", "tiny", "--no-probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "res.yaml: gpus_per_trial: 2.5: expected a fraction" in err
    assert len(err.splitlines()) == 1


def test_device_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    spec, data = _campaign(tmp_path)
    assert main(["campaign", "run", str(spec), "--dataset", "tiny", "--data-dir", str(data), "--out",
                 str(tmp_path / "out"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda: torch") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_reuse_match_ignores_the_device():
    from ddrm.tuning.reuse import identity

    assert identity({"model.lr": "0.1", "train.device": "cuda"}) == identity({"model.lr": "0.1", "train.device": "cpu"})
    assert identity({"model.lr": "0.1"}) != identity({"model.lr": "0.2"})


def test_an_interrupted_study_stops_the_campaign_before_it_chooses_a_config(tmp_path, monkeypatch):
    from ddrm.campaign import run as campaign_run
    from ddrm.campaign.spec import load_campaign
    from ddrm.tuning import runner

    rows = [{"error": None, "metrics": {"done": True}}, {"error": "boom", "metrics": {}}]
    assert not runner.interrupted(rows) and not runner.interrupted(rows, expected=2)
    assert runner.interrupted(rows + [{"error": None, "metrics": {"epoch": 1}}])  # running when Tune stopped
    assert runner.interrupted(rows, expected=3)  # a TPE search stopped before it sampled its budget
    spec_path, data = _campaign(tmp_path)
    monkeypatch.setattr(runner, "run_search", lambda *a, **k: {"interrupted": True, "finished": 1})
    with pytest.raises(campaign_run.CampaignInterrupted, match="stage mf was interrupted; its ended trials are kept in"):
        campaign_run.run_campaign(load_campaign(spec_path), "tiny", tmp_path / "out", data_dir=str(data))
    assert not (tmp_path / "out" / "stages" / "mf" / "chosen_config.yaml").exists()


def test_a_tie_between_the_best_trials_is_broken_the_same_in_any_order():
    """A search resumed from its store reads its trials in another order than Tune reported them: the chosen
    config (and so every dependent stage's and table's study) must not depend on it."""
    from types import SimpleNamespace

    from ddrm.tuning.runner import best_row

    search = SimpleNamespace(space={"model.ease_lambda": {}}, metric="recall_at_20")
    rows = [{"config": {"model.ease_lambda": lam, "seed": 0}, "metrics": {"recall_at_20": r}}
            for lam, r in ((10, 0.85), (100, 0.85), (1, 0.8))]
    assert best_row(rows, search) is best_row(rows[::-1], search)
    assert best_row(rows, search)["metrics"]["recall_at_20"] == 0.85


def test_the_sigint_handler_a_study_leaves_is_put_back():
    from ddrm.tuning.runner import sigint_restored

    before = signal.getsignal(signal.SIGINT)
    with sigint_restored():
        signal.signal(signal.SIGINT, lambda *_: None)  # as Tune does, and leaves it
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_a_campaign_run_with_resource_flags_records_them_in_every_runs_csv_row(tmp_path, capsys):
    spec, data = _campaign(tmp_path)
    out = tmp_path / "out"
    with local_ray(tmp_path / "cache"), pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # MLflow's artifacts folder is relative to the working directory
        assert main(["campaign", "run", str(spec), "--dataset", "tiny", "--data-dir", str(data), "--out", str(out),
                     "--storage", str(tmp_path / "ray"), "--device", "cpu", "--cpus-per-trial", "1",
                     "--max-concurrent", "1"]) == 0
    assert "trials: up to 1 at once, each 1 CPU(s) and 0 GPU(s), train.device cpu" in capsys.readouterr().out
    for folder, trials in ((out / "stages" / "mf", 2), (out / "tables" / "main", 2)):
        runs = pd.read_csv(folder / "runs.csv", dtype=str)
        assert len(runs) == trials
        assert set(runs["param.train.device"]) == {"cpu"} and set(runs["device"]) == {"cpu"}
        assert set(runs["trial_cpus"]) == {"1"} and set(runs["trial_gpus"]) == {"0"}
    chosen = yaml.safe_load((out / "stages" / "mf" / "chosen_config.yaml").read_text())
    assert chosen["train"]["device"] == "auto"  # the chosen config is the same whichever device searched it
    record = json.loads((out / "campaign.json").read_text())
    assert record["resources"] == {"max_concurrent": 1, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "device": "cpu",
                                   "stages_at_once": 1}  # one trial slot: one stage at a time


@pytest.mark.parametrize("script, out", [("gpu_campaign.sh", "out"), ("gpu_study.sh", "out.json")])
def test_the_gpu_scripts_parse_and_stop_with_one_line_without_a_gpu(tmp_path, script, out):
    script = REPO_ROOT / "bench" / script
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")  # a GPU-less host
    (fake / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(["bash", str(script), str(tmp_path), str(tmp_path / out)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: no NVIDIA GPU visible"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / out).exists()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H200'\n")  # a GPU torch cannot see (CPU build)
    done = subprocess.run(["bash", str(script), str(tmp_path), str(tmp_path / out)], env=env,
                          capture_output=True, text=True, timeout=120)
    import torch

    if not torch.cuda.is_available():
        assert done.returncode == 2 and "sees no CUDA device next to 'NVIDIA H200'" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / out).exists()
