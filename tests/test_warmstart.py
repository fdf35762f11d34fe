"""A TPE search continues from its tracking store when Tune's folder is gone, never training a finished trial
twice."""

from __future__ import annotations

import shutil

import pytest

ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

from conftest import make_interactions  # noqa: E402
from ddrm.data import write_prepared  # noqa: E402
from ddrm.tuning.runner import run_search  # noqa: E402
from ddrm.tuning.spec import load_search_spec  # noqa: E402

SPEC = """name: warm
mode: tpe
num_samples: {n}
seeds: [0]
metric: recall_at_20
base:
  data: {{name: tiny}}
  train: {{epochs: 2, batch_size: 64, patience: 5}}
  model: {{name: mf, lr: 0.01}}
  ddrm: {{hidden_dims: [8, 16], lr: 0.01}}
space:
  ddrm.steps: {{type: choice, values: [2, 3, 4, 5, 6]}}
  ddrm.hidden_dims: {{type: choice, values: [[8, 16], [4, 8]]}}
  ddrm.lr: {{type: loguniform, low: 1.0e-3, high: 1.0e-1}}
scheduler: {{type: fifo}}
max_concurrent: 2
resources: {{cpu: 1, gpu: 0}}
"""


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_search_resumed_without_its_tune_folder_trains_only_the_missing_trials(ray_local, tmp_path, capsys):
    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dirs = {"storage": str(tmp_path / "ray"), "tracking_uri": uri, "data_dir": str(tmp_path / "data")}
    (tmp_path / "a.yaml").write_text(SPEC.format(n=3))
    first = run_search(load_search_spec(tmp_path / "a.yaml"), **dirs)
    assert first["finished"] == 3

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("warm").experiment_id
    parent = first["parent_run_id"]
    # a trial that was running when the machine went away: RUNNING in the store, no Tune state anywhere
    orphan = client.create_run(experiment, tags={"role": "trial", "parent_run": parent}).info.run_id
    shutil.rmtree(tmp_path / "ray")  # the next session's machine has only the committed store

    (tmp_path / "b.yaml").write_text(SPEC.format(n=5))
    second = run_search(load_search_spec(tmp_path / "b.yaml"), resume=True, **dirs)
    assert "3 finished trial(s) of warm are told to the searcher without training; 2 left to run" in (
        capsys.readouterr().out)
    assert second["parent_run_id"] == parent  # the same study, found by its key
    runs = client.search_runs([experiment], "tags.role = 'trial'")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 5  # 3 from before + 2 new, none trained twice
    assert client.get_run(orphan).info.status == "FAILED" and "interrupted" in client.get_run(orphan).data.tags
    best_valid = max(r.data.metrics["best_recall_at_20"] for r in finished)
    assert second["best"]["valid"]["recall_at_20"] == pytest.approx(best_valid)  # best over all 5 trials
    assert not second["interrupted"]

    # resumed again, now with the Tune folder the store resume made (its 2 trials): restored, nothing trains, and
    # the search is whole (Tune's 2 and the store's 3), not "interrupted" (which stopped a whole Yelp campaign)
    third = run_search(load_search_spec(tmp_path / "b.yaml"), resume=True, **dirs)
    assert not third["interrupted"] and third["finished"] == 5 and third["best"] == second["best"]
    assert len(client.search_runs([experiment], "tags.role = 'trial'")) == len(runs)


ABLATION = """name: warm_ablation
base:
  data: {name: tiny}
  train: {epochs: 2, batch_size: 64, patience: 5}
  model: {name: mf, lr: 0.01}
  ddrm: {hidden_dims: [8, 16], steps: 3, lr: 0.01}
seeds: [0, 1]
variants:
  full: {}
  item_only: {ddrm.denoise_users: false}
resources: {cpu: 1}
max_concurrent: 2
"""


def test_an_ablation_resumed_without_its_tune_folder_replays_finished_trials_into_their_runs(ray_local, tmp_path):
    from ddrm.tuning.runner import run_ablation
    from ddrm.tuning.spec import load_ablation_spec

    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dirs = {"storage": str(tmp_path / "ray"), "tracking_uri": uri, "data_dir": str(tmp_path / "data")}
    (tmp_path / "a.yaml").write_text(ABLATION)
    first = run_ablation(load_ablation_spec(tmp_path / "a.yaml"), **dirs)
    assert first["finished"] == 4
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("warm_ablation").experiment_id
    runs = {(r.data.tags["variant"], r.data.tags["seed"]): r for r in client.search_runs([experiment],
                                                                                       "tags.role = 'trial'")}
    interrupted = runs[("item_only", "1")].info.run_id
    client.update_run(interrupted, status="RUNNING")  # the machine went away while this trial ran
    shutil.rmtree(tmp_path / "ray")

    second = run_ablation(load_ablation_spec(tmp_path / "a.yaml"), resume=True, **dirs)
    assert second["finished"] == 4 and second["parent_run_id"] == first["parent_run_id"]
    assert second["table"] == first["table"]  # the retrained trial lands on the same metrics
    after = client.search_runs([experiment], "tags.role = 'trial'")
    finished = sorted((r.data.tags["variant"], r.data.tags["seed"]) for r in after if r.info.status == "FINISHED")
    assert finished == sorted(runs)  # one FINISHED run per trial: nothing duplicated
    assert client.get_run(interrupted).info.status == "FAILED"
    for key in (("full", "0"), ("full", "1"), ("item_only", "0")):  # replayed into the same run, not re-logged
        history = client.get_metric_history(runs[key].info.run_id, "valid_recall_at_20")
        assert [m.step for m in history] == [1, 2]


GRID = """name: warm_grid
mode: grid
seeds: [1]
metric: recall_at_20
base:
  data: {name: tiny}
  train: {epochs: 2, batch_size: 64, patience: 5}
  model: {name: mf, lr: 0.01}
  ddrm: {hidden_dims: [8, 16], steps: 3, lr: 0.01}
space:
  ddrm.steps: {type: choice, values: [2, 4]}
  ddrm.hidden_dims: {type: choice, values: [[8, 16], [4, 8]]}
scheduler: {type: fifo}
max_concurrent: 2
resources: {cpu: 1, gpu: 0}
"""


def test_a_grid_search_resumed_without_its_tune_folder_trains_only_its_missing_points(ray_local, tmp_path,
                                                                                       capsys):
    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dirs = {"storage": str(tmp_path / "ray"), "tracking_uri": uri, "data_dir": str(tmp_path / "data")}
    (tmp_path / "g.yaml").write_text(GRID)
    first = run_search(load_search_spec(tmp_path / "g.yaml"), **dirs)
    assert first["finished"] == 4  # 2 × 2 points, at seed 1
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("warm_grid").experiment_id
    runs = client.search_runs([experiment], "tags.role = 'trial'")
    lost = [r for r in runs if r.data.params["ddrm.steps"] == "4" and r.data.params["seed"] == "1"
            and r.data.params["ddrm.hidden_dims"] == "[4, 8]"]
    assert len(lost) == 1
    client.update_run(lost[0].info.run_id, status="RUNNING")  # running when the machine went away
    shutil.rmtree(tmp_path / "ray")

    second = run_search(load_search_spec(tmp_path / "g.yaml"), resume=True, **dirs)
    assert "3 finished trial(s) of warm_grid are kept without training; 1 grid point(s) left to run" in (
        capsys.readouterr().out)
    after = client.search_runs([experiment], "tags.role = 'trial'")
    finished = [r for r in after if r.info.status == "FINISHED"]
    assert len(finished) == 4 and second["finished"] == 4  # the lost point retrained, nothing else
    new = [r for r in finished if r.info.run_id not in {x.info.run_id for x in runs}]
    assert [(r.data.params["ddrm.steps"], r.data.params["ddrm.hidden_dims"], r.data.params["seed"])
            for r in new] == [("4", "[4, 8]", "1")]
    best_valid = max(r.data.metrics["best_recall_at_20"] for r in finished)
    assert second["best"]["valid"]["recall_at_20"] == pytest.approx(best_valid)

    third = run_search(load_search_spec(tmp_path / "g.yaml"), resume=True, **dirs)  # nothing left: no trial runs
    assert third["finished"] == 4
    assert len(client.search_runs([experiment], "tags.role = 'trial'")) == len(after)


def _zero_trial_tune_folder(storage, name: str) -> None:
    """A real Tune experiment folder under ``storage/name`` whose saved state lists no trial: Tune started the
    study, its searcher gave no trial before the study ended (as a campaign stage stopped while waiting for a
    shared trial slot)."""
    from ray import tune
    from ray.tune.search import Searcher

    class NoTrial(Searcher):
        def suggest(self, trial_id):
            return Searcher.FINISHED

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    def unused(config):
        tune.report({"x": 1})

    tune.Tuner(unused, tune_config=tune.TuneConfig(search_alg=NoTrial(), num_samples=1, metric="x", mode="max"),
               run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0)).fit()


def test_a_tune_folder_that_lists_no_trial_is_not_restored_the_store_resumes_the_search(ray_local, tmp_path,
                                                                                       capfd):
    from ddrm.tuning.tune_folder import restorable, trial_count

    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    dirs = {"storage": str(tmp_path / "ray"), "tracking_uri": uri, "data_dir": str(tmp_path / "data")}
    (tmp_path / "a.yaml").write_text(SPEC.format(n=2))
    run_search(load_search_spec(tmp_path / "a.yaml"), **dirs)
    assert trial_count(tmp_path / "ray" / "warm") == 2 and restorable(tmp_path / "ray" / "warm")

    shutil.rmtree(tmp_path / "ray" / "warm")
    _zero_trial_tune_folder(tmp_path / "ray", "warm")
    assert ray.tune.Tuner.can_restore(str(tmp_path / "ray" / "warm"))  # Tune alone would restore it ...
    assert trial_count(tmp_path / "ray" / "warm") == 0 and not restorable(tmp_path / "ray" / "warm")  # ... not us
    capfd.readouterr()

    (tmp_path / "b.yaml").write_text(SPEC.format(n=3))
    second = run_search(load_search_spec(tmp_path / "b.yaml"), resume=True, **dirs)
    out, err = capfd.readouterr()
    assert "2 finished trial(s) of warm are told to the searcher without training; 1 left to run" in out
    assert "Failed to restore" not in out + err and "IndexError" not in out + err
    assert second["finished"] == 3
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("warm").experiment_id
    assert len([r for r in client.search_runs([experiment], "tags.role = 'trial'")
                if r.info.status == "FINISHED"]) == 3  # none trained twice


def test_trial_count_reads_the_newest_state_and_tolerates_unreadable_ones(tmp_path):
    from ddrm.tuning.tune_folder import trial_count

    assert trial_count(tmp_path) is None  # no state at all
    (tmp_path / "experiment_state-2026-12-07_10-00-00.json").write_text('{"trial_data": [[{}, {}]]}')
    (tmp_path / "experiment_state-2026-12-07_11-00-00.json").write_text('{"trial_data": []}')
    assert trial_count(tmp_path) == 0  # the newer one counts
    (tmp_path / "experiment_state-2026-12-07_12-00-00.json").write_text("{not json")
    assert trial_count(tmp_path) is None
