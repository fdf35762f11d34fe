"""A study continues from its committed runs.csv alone (a new machine: no Tune folder, no tracking store),
never training a finished trial twice (``--import-runs``)."""

from __future__ import annotations

import shutil

import pytest

ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

from conftest import make_interactions  # noqa: E402
from ddrm.cli import main  # noqa: E402
from ddrm.data import write_prepared  # noqa: E402
from ddrm.host import cpu_model  # noqa: E402
from ddrm.report.build import build_report  # noqa: E402
from ddrm.tuning.importer import import_runs  # noqa: E402
from ddrm.tuning.runner import run_ablation, run_search  # noqa: E402
from ddrm.tuning.spec import load_ablation_spec, load_search_spec  # noqa: E402
from test_warmstart import ABLATION, SPEC  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _lose_the_machine(tmp_path, store: str) -> str:
    """The next session's machine: no Tune folder, a new empty store; returns its URI."""
    shutil.rmtree(tmp_path / "ray")
    (tmp_path / store).unlink()
    return f"sqlite:///{tmp_path / 'new.db'}"


def test_a_search_continues_from_its_runs_csv_alone(ray_local, tmp_path, capsys):
    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    dirs = {"storage": str(tmp_path / "ray"), "data_dir": str(tmp_path / "data")}
    (tmp_path / "a.yaml").write_text(SPEC.format(n=3))
    first = run_search(load_search_spec(tmp_path / "a.yaml"), tracking_uri=f"sqlite:///{tmp_path / 'a.db'}", **dirs)
    report = build_report(f"sqlite:///{tmp_path / 'a.db'}", "warm", tmp_path / "committed")
    runs_csv = tmp_path / "committed" / "runs.csv"
    assert report.facts["failed"] == 0 and runs_csv.is_file()
    uri = _lose_the_machine(tmp_path, "a.db")

    (tmp_path / "b.yaml").write_text(SPEC.format(n=5))
    capsys.readouterr()
    second = run_search(load_search_spec(tmp_path / "b.yaml"), tracking_uri=uri, resume=True,
                        import_runs=str(runs_csv), **dirs)
    out = capsys.readouterr().out
    assert "imported 3 finished trial(s)" in out and "3 finished trial(s) of warm are told to the searcher" in out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("warm").experiment_id
    runs = [r for r in client.search_runs([experiment], "tags.role = 'trial'") if r.info.status == "FINISHED"]
    imported = [r for r in runs if r.data.tags.get("imported_from")]
    assert len(runs) == 5 and len(imported) == 3  # 3 from the file, 2 trained: none twice
    assert {r.data.tags["imported_from"].rpartition("#")[2] for r in imported} == set(report.frame["run_id"])
    assert all(r.data.tags["cpu_model"] == cpu_model() for r in imported)  # where they ran travels with them
    best_before = first["best"]["valid"]["recall_at_20"]
    # the imported best still counts (as runs.csv keeps it: 8 significant digits)
    assert second["best"]["valid"]["recall_at_20"] >= float(f"{best_before:.8g}")
    assert import_runs(uri, second["parent_run_id"], runs_csv) == 0  # importing again changes nothing


def test_an_ablation_continues_from_its_runs_csv_and_trains_nothing_it_has(ray_local, tmp_path):
    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    dirs = {"storage": str(tmp_path / "ray"), "data_dir": str(tmp_path / "data")}
    (tmp_path / "a.yaml").write_text(ABLATION)
    first = run_ablation(load_ablation_spec(tmp_path / "a.yaml"), tracking_uri=f"sqlite:///{tmp_path / 'a.db'}",
                         **dirs)
    build_report(f"sqlite:///{tmp_path / 'a.db'}", "warm_ablation", tmp_path / "committed")
    uri = _lose_the_machine(tmp_path, "a.db")
    second = run_ablation(load_ablation_spec(tmp_path / "a.yaml"), tracking_uri=uri, resume=True,
                          import_runs=str(tmp_path / "committed" / "runs.csv"), **dirs)
    assert second["finished"] == 4 and second["table"] == first["table"]  # replayed: the same numbers
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("warm_ablation").experiment_id
    runs = client.search_runs([experiment], "tags.role = 'trial'")
    assert len(runs) == 4 and all(r.data.tags.get("imported_from") for r in runs)  # no trial trained again


def test_import_runs_is_refused_without_resume_or_with_a_file_that_is_not_a_runs_csv(tmp_path, capsys):
    write_prepared(tmp_path / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(n=1))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["tune", str(spec), "--import-runs", str(bad), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--data-dir", str(tmp_path)]) == 2
    assert "only with --resume" in capsys.readouterr().err
    assert main(["tune", str(spec), "--resume", "--import-runs", str(bad), "--tracking-uri",
                 f"sqlite:///{tmp_path / 'm.db'}", "--data-dir", str(tmp_path)]) == 2
    assert "missing column(s)" in capsys.readouterr().err


TWO_MODELS = """name: two_models
base:
  data: {name: tiny}
seeds: [0, 1]
models:
  pop: {model.name: mostpop}
  ease: {model.name: ease, model.ease_lambda: 10.0}
variants:
  plain: {}
resources: {cpu: 1}
max_concurrent: 2
"""


def test_each_models_selection_resumes_from_one_import_and_trains_nothing_twice(ray_local, tmp_path, capsys):
    """A spec with ``models`` run one ``--models`` selection at a time (each its own parent run): after a lost
    machine each selection imports its own rows of the committed runs.csv (matched by the spec's model names,
    here not the ``model.name``) and replays them instead of training them again."""
    write_prepared(tmp_path / "data" / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    dirs = {"storage": str(tmp_path / "ray"), "data_dir": str(tmp_path / "data")}
    (tmp_path / "m.yaml").write_text(TWO_MODELS)
    first = run_ablation(load_ablation_spec(tmp_path / "m.yaml"), tracking_uri=f"sqlite:///{tmp_path / 'a.db'}",
                         **dirs)
    assert first["finished"] == 4
    build_report(f"sqlite:///{tmp_path / 'a.db'}", "two_models", tmp_path / "committed")
    uri = _lose_the_machine(tmp_path, "a.db")
    capsys.readouterr()
    for model in ("pop", "ease"):
        again = run_ablation(load_ablation_spec(tmp_path / "m.yaml", only_models=[model]), tracking_uri=uri,
                             resume=True, import_runs=str(tmp_path / "committed" / "runs.csv"), **dirs)
        out = capsys.readouterr().out
        assert "imported 2 finished trial(s)" in out  # this selection's rows only
        assert "2 of 2 trials finished before" in out  # this selection's trials, not the whole store's
        assert again["finished"] == 2
        shutil.rmtree(tmp_path / "ray")  # each selection on a fresh machine's Tune folder
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("two_models").experiment_id
    runs = client.search_runs([experiment], "tags.role = 'trial'")
    assert len(runs) == 4 and all(r.data.tags.get("imported_from") for r in runs)  # none trained again
    assert sorted(r.data.tags["model"] for r in runs) == ["ease", "ease", "pop", "pop"]
