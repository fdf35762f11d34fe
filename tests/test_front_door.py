"""What a researcher sees of a study: run names, the parent run's result and report, the printed MLflow link,
the report page, and progress output that stays readable in a log file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

from conftest import local_ray, make_interactions  # noqa: E402
from ddrm.data import write_prepared  # noqa: E402

BASE = {"data": {"name": "tiny"}, "train": {"epochs": 2, "batch_size": 64, "patience": 5},
        "model": {"name": "mf", "lr": 0.01}, "ddrm": {"hidden_dims": [8, 16], "steps": 4, "lr": 0.01}}


# ------------------------------------------------------------------------------------------- run names
def _trial(params: dict, tag: str = "0", trial_id: str = "abc_00000"):
    """A Tune trial stand-in and the study's plan (an ablation's when ``_variants`` is given)."""
    from ddrm.config import apply_overrides, config_from_dict
    from ddrm.tuning.plan import StudyPlan, trial_key

    variants = params.pop("_variants", {})
    trials = {trial_key(v, params["seed"]): config_from_dict(apply_overrides(BASE, {**o, "seed": params["seed"]}))
              for v, o in variants.items()}
    return SimpleNamespace(config=params, experiment_tag=tag, trial_id=trial_id), StudyPlan(BASE, trials=trials)


def test_child_runs_are_named_model_variant_seed_or_trial_and_what_it_changed():
    from ddrm.tuning.mlflow_callback import run_name_for

    def name(trial_and_plan):
        return run_name_for(*trial_and_plan)

    assert name(_trial({"variant": "ddrm", "seed": 2, "_variants": {"ddrm": {}}})) == "mf/ddrm/seed2"
    assert name(_trial({"variant": "lightgcn/alone", "seed": 0,
                        "_variants": {"lightgcn/alone": {"backend.name": "lightgcn"}}})) == "lightgcn/alone/seed0"
    assert name(_trial({"variant": "vae", "seed": 1,
                        "_variants": {"vae": {"model.name": "multivae"}}})) == "multivae/vae/seed1"
    # a search: Tune's trial number (its experiment tag) and the sampled values that differ from the base
    trial = _trial({"ddrm.steps": 30, "ddrm.bpr_weight": 0.4, "ddrm.lr": 0.01, "seed": 0},
                   tag="7_ddrm.steps=30,ddrm.bpr_weight=0.4", trial_id="fd7d5820")
    assert name(trial) == "trial7 steps=30 bpr_weight=0.4"  # lr and seed equal the base: left out
    clash = _trial({"model.lr": 0.005, "ddrm.lr": 0.002, "seed": 0}, tag="3_x")
    assert name(clash) == "trial3 model.lr=0.005 ddrm.lr=0.002"  # same short name twice: full keys
    assert name(_trial({"ddrm.steps": 8, "seed": 0}, tag="")).startswith("trial-abc_00000 steps=8")


# ----------------------------------------------------------------------------------- studies end to end
@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A tiny ablation (backend alone vs DDRM, one seed) and a tiny TPE search, in one sqlite store."""
    from ddrm.tuning.runner import run_ablation, run_search
    from ddrm.tuning.spec import load_ablation_spec, load_search_spec

    tmp = tmp_path_factory.mktemp("front_door")
    train, valid, test = make_interactions(n_users=40, n_items=30, seed=1)
    write_prepared(tmp / "data" / "tiny", train, valid, test)
    dirs = {"data_dir": str(tmp / "data"), "storage": str(tmp / "ray"), "tracking_uri": f"sqlite:///{tmp / 'm.db'}"}
    base = ("base:\n  data: {name: tiny}\n  train: {epochs: 2, batch_size: 64, patience: 5}\n"
            "  model: {name: mf, lr: 0.01}\n  ddrm: {hidden_dims: [8, 16], steps: 4, lr: 0.01}\n")
    (tmp / "abl.yaml").write_text("name: abl\n" + base + "seeds: [0]\nvariants:\n  backend: {ddrm.enabled: false}\n"
                                  "  ddrm: {}\nreference: backend\nresources: {cpu: 1}\nmax_concurrent: 2\n")
    (tmp / "tpe.yaml").write_text("name: tpe\nmode: tpe\nnum_samples: 2\nseeds: [0]\nmetric: recall_at_20\n" + base
                                  + "space:\n  ddrm.steps: {type: choice, values: [2, 8]}\n"
                                  "  ddrm.bpr_weight: {type: uniform, low: 0.2, high: 0.4}\n"
                                  "scheduler: {type: fifo}\nmax_concurrent: 2\nresources: {cpu: 1}\n")
    with local_ray(tmp / "cache"):
        ablation = run_ablation(load_ablation_spec(tmp / "abl.yaml"), **dirs)
        search = run_search(load_search_spec(tmp / "tpe.yaml"), **dirs)
    return {"uri": dirs["tracking_uri"], "tmp": tmp, "ablation": ablation, "search": search}


def _runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parent = next(r for r in runs if r.data.tags.get("role") == "study")
    return client, parent, [r for r in runs if r.data.tags.get("role") == "trial"]


def test_an_ablation_parent_run_carries_its_result_and_report(studies):
    client, parent, kids = _runs(studies["uri"], "abl")
    assert sorted(k.info.run_name for k in kids) == ["mf/backend/seed0", "mf/ddrm/seed0"]
    for kid in kids:  # a learning curve per child (step = epoch), the backend pretrained by the driver included
        history = client.get_metric_history(kid.info.run_id, "valid_recall_at_20")
        assert sorted(m.step for m in history) == [1, 2], kid.info.run_name
    for variant in ("backend", "ddrm"):
        child = next(k for k in kids if k.data.tags["variant"] == variant)
        for metric in ("test_recall_at_20", "test_ndcg_at_20"):
            assert parent.data.metrics[f"study/mf.{variant}.{metric}_mean"] == pytest.approx(child.data.metrics[metric])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"table.md", "table.csv", "runs.csv", "bars.png", "report.html"} <= artifacts
    report = Path(studies["ablation"]["report"])
    assert report == studies["tmp"] / "ray" / "abl" / "report" and (report / "report.html").is_file()
    assert "| mf | backend (reference) | 1 |" in (report / "table.md").read_text()


def test_a_search_parent_run_carries_the_best_trial_and_its_config(studies):
    client, parent, kids = _runs(studies["uri"], "tpe")
    assert len(kids) == 2
    for kid in kids:
        assert kid.info.run_name.startswith("trial") and "bpr_weight=" in kid.info.run_name
    best = max(k.data.metrics["best_recall_at_20"] for k in kids)
    assert parent.data.metrics["study/best_valid_recall_at_20"] == pytest.approx(best)
    assert not any("test" in name for name in parent.data.metrics)  # a search scores no test split
    assert parent.data.metrics["study/cost.runs"] == 2 and parent.data.metrics["study/cost.epochs"] == 4
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"table.md", "runs.csv", "best_config.yaml", "report.html", "summary.json"} <= artifacts


def test_the_printed_hint_leads_to_the_study_in_the_runs_view(studies):
    from ddrm.cli import _mlflow_hint
    from ddrm.tracking import VIEW_STATE_TAG, runs_view_url, ui_url

    uri = studies["uri"]
    experiment = MlflowClient(uri).get_experiment_by_name("abl")
    hint = _mlflow_hint(uri, "abl")
    assert f"mlflow ui --backend-store-uri {uri}" in hint
    url = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    assert f"{url}&viewStateShareKey=ddrm-study" in hint
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert '"groupByData": "variant"' in experiment.tags[VIEW_STATE_TAG + "ddrm-study"]
    assert runs_view_url(uri, "no such experiment") is None
    assert ui_url("http://head:5000/") == "http://head:5000"


def test_report_html_is_one_page_with_the_table_plots_seeds_and_configs(studies, tmp_path, capsys):
    from ddrm.cli import main

    out = tmp_path / "report"
    assert main(["report", "abl", "--tracking-uri", studies["uri"], "--out", str(out), "--html"]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "<table" in page and "backend (reference)" in page and "R@20" in page
    assert page.count('src="data:image/png;base64,') == len(list(out.glob("*.png"))) >= 1
    _, _, kids = _runs(studies["uri"], "abl")
    assert "Per-seed values" in page and all(k.info.run_id in page for k in kids)
    assert "ddrm.enabled" in page  # the setting the variants differ in
    assert main(["report", "abl", "--tracking-uri", studies["uri"], "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "report.html").exists()  # only on request


# ------------------------------------------------------------------------------------------- progress
def test_fit_draws_no_progress_bar_into_a_log(tiny_dataset_dir, capfd, monkeypatch):
    from ddrm import train
    from ddrm.config import config_from_dict

    config = config_from_dict({"data": {"name": "tiny"}, "train": {"epochs": 2, "batch_size": 64},
                               "ddrm": {"enabled": False}})
    data = train.load_dataset(config, tiny_dataset_dir)
    train.run(config, data=data, progress=True, use_cache=False)
    assert "\r" not in capfd.readouterr().err  # stderr is not a terminal here
    monkeypatch.setattr(train, "sys", SimpleNamespace(stderr=SimpleNamespace(isatty=lambda: True)))
    train.run(config, data=data, progress=True, use_cache=False)
    assert "\r" in capfd.readouterr().err  # on a terminal the bar is drawn


def test_pretraining_prints_a_line_per_evaluation_that_ray_cannot_fold(monkeypatch):
    from ddrm.tuning.progress import evaluation_printer, short_key

    lines = []
    event = SimpleNamespace(epoch=3, loss=0.5, valid={"recall_at_20": 0.1234}, best_valid={"recall_at_20": 0.2},
                            seconds=12.3)
    clock = iter([0.0, 1.0, 20.0])
    monkeypatch.setattr("ddrm.tuning.progress.time.monotonic", lambda: next(clock))
    printer = evaluation_printer("pretraining-mf-seed0", min_interval=10.0, printer=lines.append)
    for _ in range(3):
        printer(event)
    assert lines == ["pretraining-mf-seed0 epoch=3 loss=0.5000 valid_recall_at_20=0.1234 best=0.2000 12s"] * 2
    assert all(any(ch.isdigit() for ch in word) for word in lines[0].split())  # Ray's dedup masks such words
    assert short_key("ddrm.steps", ["ddrm.steps", "seed"]) == "steps"
    assert short_key("ddrm.lr", ["ddrm.lr", "backend.lr"]) == "ddrm.lr"


def test_the_tune_table_prints_when_something_changed(monkeypatch):
    from ddrm.tuning.progress import ablation_reporter

    reporter = ablation_reporter()
    assert list(reporter._parameter_columns) == ["variant", "seed"]
    assert list(reporter._metric_columns)[:2] == ["epoch", "recall_at_20"]
    trials = [SimpleNamespace(trial_id="a", status="RUNNING", last_result={"epoch": 1})]
    now = [1000.0]
    monkeypatch.setattr("ddrm.tuning.progress.time.time", lambda: now[0])
    assert reporter.should_report(trials)
    now[0] += 60
    assert not reporter.should_report(trials)  # nothing new
    trials[0].last_result = {"epoch": 2}
    assert reporter.should_report(trials)
    trials[0].last_result = {"epoch": 3}
    assert not reporter.should_report(trials)  # too soon after the last table
    assert reporter.should_report(trials, done=True)


def test_the_evaluation_at_which_asha_stops_a_trial_is_logged_as_an_epoch(tmp_path):
    """Tune sets ``done`` on the result at which a scheduler stops a trial; only a result with test metrics is
    the trainable's final report."""
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from ddrm.tracking import get_or_create_experiment, start_parent_run
    from ddrm.tuning.mlflow_callback import MLflowTrialCallback

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    get_or_create_experiment(uri, "cb")
    parent = start_parent_run(uri, "cb", "key", {"study": "cb", "kind": "tune"})
    from ddrm.tuning.plan import StudyPlan

    callback = MLflowTrialCallback(uri, parent, "cb", StudyPlan({"data": {"name": "tiny"}}))
    trial = SimpleNamespace(trial_id="abc_00000", config={"seed": 0, "ddrm.steps": 4},
                            experiment_tag="0_steps=4")
    for epoch in (1, 2):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "recall_at_20": 0.1 * epoch, "loss": 1.0,
                                                "best_recall_at_20": 0.1 * epoch})
    callback.on_trial_result(0, [], trial, {"epoch": 3, "recall_at_20": 0.25, "loss": 1.0, "done": True,
                                            "best_recall_at_20": 0.25})  # ASHA stops it here
    run = MlflowClient(uri).get_run(callback.runs["abc_00000"])
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "valid_recall_at_20")
    assert [m.step for m in history] == [1, 2, 3] and run.data.metrics["epoch"] == 3
    assert not any(k.startswith("test_") for k in run.data.metrics)
