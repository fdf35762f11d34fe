"""Real Ray Tune studies on generated data: local Ray (num_cpus=2), sqlite MLflow in a tmp dir."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

from conftest import make_interactions  # noqa: E402
from ddrm.data import write_prepared  # noqa: E402
from ddrm.config import config_from_dict  # noqa: E402
from ddrm.tuning.runner import _context, fit_resources, pretrain_backends, run_ablation, run_search  # noqa: E402
from ddrm.tuning.spec import Resources, load_ablation_spec, load_search_spec  # noqa: E402

BASE = """base:
  data: {name: tiny}
  train: {epochs: 3, batch_size: 64, patience: 5}
  model: {name: mf, lr: 0.01}
  ddrm: {hidden_dims: [8, 16], steps: 4, lr: 0.01}
"""


import ddrm.train  # noqa: E402

_orig_fit = ddrm.train.fit_backend


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def study_dirs(tmp_path):
    train, valid, test = make_interactions(n_users=40, n_items=30, seed=1)
    write_prepared(tmp_path / "data" / "tiny", train, valid, test)
    return {"data_dir": str(tmp_path / "data"), "storage": str(tmp_path / "ray"),
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def children(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    kids = [r for r in runs if r.data.tags.get("role") == "trial"]
    return client, parents, kids


def test_ablation_logs_nested_runs_and_a_correct_table(ray_local, study_dirs, tmp_path):
    spec_path = tmp_path / "abl.yaml"
    spec_path.write_text("name: abl\n" + BASE + "seeds: [0, 1]\nvariants:\n  full: {}\n"
                         "  item_only: {ddrm.denoise_users: false}\nresources: {cpu: 1}\nmax_concurrent: 2\n")
    summary = run_ablation(load_ablation_spec(spec_path), **study_dirs)
    assert summary["finished"] == 4 and summary["errored"] == 0
    client, parents, kids = children(study_dirs["tracking_uri"], "abl")
    assert len(parents) == 1 and len(kids) == 4
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parents[0].info.run_id}
    assert sorted((k.data.tags["variant"], k.data.tags["seed"]) for k in kids) == [
        ("full", "0"), ("full", "1"), ("item_only", "0"), ("item_only", "1")]
    for kid in kids:
        assert kid.info.status == "FINISHED"
        assert kid.data.params["ddrm.steps"] == "4"
        history = client.get_metric_history(kid.info.run_id, "valid_recall_at_20")
        assert [m.step for m in history] == [1, 2, 3]
        assert "test_recall_at_20" in kid.data.metrics
        assert "config.yaml" in [a.path for a in client.list_artifacts(kid.info.run_id)]
    # the table's mean over seeds equals the child runs' test metrics
    for variant in ("full", "item_only"):
        values = [k.data.metrics["test_recall_at_20"] for k in kids if k.data.tags["variant"] == variant]
        stats = summary["variants"][variant]["test"]["recall_at_20"]
        assert stats["mean"] == pytest.approx(np.mean(values)) and stats["std"] == pytest.approx(np.std(values, ddof=1))
    assert "| full | 2 |" in summary["table"]


def test_driver_side_pretraining_uses_the_trial_threads_and_restores_torch(study_dirs, monkeypatch, tmp_path,
                                                                           capsys):
    import torch

    monkeypatch.setenv("DDRM_CACHE_DIR", str(tmp_path / "cache"))
    ctx = _context(study_dirs["storage"], study_dirs["data_dir"], study_dirs["tracking_uri"])
    config = config_from_dict({"data": {"name": "tiny"}, "train": {"epochs": 1, "batch_size": 64}})
    seen = []

    def fit_and_record_threads(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return _orig_fit(*args, **kwargs)

    monkeypatch.setattr("ddrm.train.fit_backend", fit_and_record_threads)
    monkeypatch.setattr("ddrm.tuning.pretrain._ray_up", lambda: False)  # in the driver, where the patch applies
    before = torch.get_num_threads()
    assert pretrain_backends([config, config.replace({"seed": 1}), config], ctx, threads=1) == 2
    assert seen == [1, 1] and torch.get_num_threads() == before
    progress = capsys.readouterr().out  # announced up front, then each backend as it finishes
    assert "pretraining 2 backend(s)" in progress and "(1/2)" in progress and "(2/2)" in progress
    assert pretrain_backends([config], ctx, threads=1) == 0  # cached now
    assert seen == [1, 1]  # a cached backend is not even loaded


def test_pretraining_runs_shared_backends_as_parallel_ray_tasks_and_skips_the_rest(ray_local, study_dirs,
                                                                                  monkeypatch, tmp_path):
    from ddrm import cache
    from ddrm.train import backend_cache_key, load_dataset

    monkeypatch.setenv("DDRM_CACHE_DIR", str(tmp_path / "cache"))
    ctx = _context(study_dirs["storage"], study_dirs["data_dir"], study_dirs["tracking_uri"])
    base = config_from_dict({"data": {"name": "tiny"}, "train": {"epochs": 1, "batch_size": 64}})
    shared = [base, base.replace({"seed": 1})]
    single = base.replace({"seed": 2})  # one trial only: trained inside that trial
    standalone = base.replace({"model.name": "multivae"})  # trains no backend at all
    configs = shared * 2 + [single, standalone, standalone]

    def not_in_the_driver(*args, **kwargs):
        raise AssertionError("trained in the driver, not in a Ray task")

    monkeypatch.setattr("ddrm.train.fit_backend", not_in_the_driver)  # Ray workers import their own copy
    assert pretrain_backends(configs, ctx, threads=1, min_uses=2) == 2
    data = load_dataset(base, study_dirs["data_dir"])
    keys = {c.seed: backend_cache_key(c, data) for c in shared + [single]}
    assert cache.has_entry(keys[0], ctx.cache_dir) and cache.has_entry(keys[1], ctx.cache_dir)
    assert not cache.has_entry(keys[2], ctx.cache_dir)
    assert len(list((tmp_path / "cache" / "backends").iterdir())) == 2  # nothing for the standalone model
    assert pretrain_backends(configs, ctx, threads=1, min_uses=2) == 0


def test_trial_threads_follow_the_cpus_ray_assigns(ray_local):
    from ddrm.tuning.trainable import trial_threads

    @ray.remote
    def threads_in_worker(planned):
        return trial_threads(planned)

    # a study planned with 1 thread, resumed where each trial gets 2 CPUs: the trial uses 2
    assert ray.get(threads_in_worker.options(num_cpus=2).remote(1)) == 2
    assert ray.get(threads_in_worker.options(num_cpus=1).remote(2)) == 1
    assert trial_threads(3) == 3  # the driver holds no CPU of its own: the plan stands


def test_a_spec_asking_for_more_than_the_local_ray_has_still_runs(ray_local, study_dirs, tmp_path, capsys):
    # local Ray has 2 CPUs, no GPU: a trial asking for 3 CPUs + 1 GPU would stay pending forever
    assert fit_resources(Resources(cpu=3, gpu=1)) == Resources(cpu=2, gpu=0)
    assert fit_resources(Resources(cpu=1)) == Resources(cpu=1)
    spec_path = tmp_path / "big.yaml"
    spec_path.write_text("name: big\n" + BASE + "seeds: [0]\nvariants:\n  full: {}\n"
                         "resources: {cpu: 3, gpu: 1}\nmax_concurrent: 1\n")
    summary = run_ablation(load_ablation_spec(spec_path), **study_dirs)
    assert summary["finished"] == 1 and summary["errored"] == 0
    assert "each trial gets cpu=2, gpu=0" in capsys.readouterr().out


def test_tpe_asha_search_and_a_diverging_trial_does_not_stop_the_study(ray_local, study_dirs, tmp_path):
    spec_path = tmp_path / "space.yaml"
    spec_path.write_text("name: srch\nmode: tpe\nnum_samples: 4\nseeds: [0]\n" + BASE +
                         "space:\n  ddrm.lr: {type: choice, values: [0.01, 1.0e+30]}\n"
                         "  ddrm.steps: {type: choice, values: [2, 4]}\n"
                         "scheduler: {type: asha, grace_period: 1, max_t: 3, reduction_factor: 2}\n"
                         "max_concurrent: 2\nresources: {cpu: 1}\nmax_failures: 0\n")
    summary = run_search(load_search_spec(spec_path), **study_dirs)
    assert summary["trials"] == 4 and summary["finished"] >= 1
    assert summary["best"]["params"]["ddrm.lr"] == 0.01
    assert summary["best"]["valid"]["recall_at_20"] is not None and "test" not in summary["best"]  # no test
    _, parents, kids = children(study_dirs["tracking_uri"], "srch")
    assert len(kids) == 4
    failed = [k for k in kids if k.info.status == "FAILED"]
    assert len(failed) == summary["errored"]
    for kid in failed:
        assert kid.data.params["ddrm.lr"] == "1e+30" and "diverged" in kid.data.tags["error"]
    # every epoch Tune saw is in MLflow, the one at which ASHA stopped a trial (Tune marks it done) included
    import json
    from pathlib import Path

    client = MlflowClient(study_dirs["tracking_uri"])
    for kid in kids:
        if kid.info.status != "FINISHED":
            continue
        trial_dir = next(Path(study_dirs["storage"], "srch").glob(f"*{kid.data.tags['trial_id']}*"))
        seen = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        epochs = sorted({r["epoch"] for r in seen if "best_epoch" not in r})  # not the final report
        logged = [m.step for m in client.get_metric_history(kid.info.run_id, "valid_recall_at_20")]
        assert logged == epochs and kid.data.metrics["epoch"] == max(r["epoch"] for r in seen)


def test_a_crashed_trial_resumes_from_its_checkpoint_with_the_same_metrics(ray_local, study_dirs, tmp_path):
    import json
    from pathlib import Path

    from faults import crash_once, patched

    marker = tmp_path / "crashed"
    spec_text = "name: NAME\n" + BASE + "seeds: [0]\nvariants:\n  full: {}\nresources: {cpu: 1}\nmax_failures: 2\n"
    undisturbed = tmp_path / "a.yaml"
    undisturbed.write_text(spec_text.replace("NAME", "calm"))
    calm = run_ablation(load_ablation_spec(undisturbed), **study_dirs)
    crashing = tmp_path / "b.yaml"
    crashing.write_text(spec_text.replace("NAME", "crash"))
    with patched(crash_once(marker)):  # the trial's worker process exits right after its epoch-1 checkpoint
        crashed = run_ablation(load_ablation_spec(crashing), **study_dirs)
    assert marker.exists(), "the trial never crashed"
    assert crashed["finished"] == 1
    assert crashed["variants"]["full"]["test"] == calm["variants"]["full"]["test"]
    # resumed from the epoch-1 checkpoint, not restarted: Tune saw every epoch once, then the final result
    (result_file,) = Path(study_dirs["storage"], "crash").glob("*/result.json")
    epochs = [json.loads(line)["epoch"] for line in result_file.read_text().splitlines() if line.strip()]
    assert epochs == [1, 2, 3, 3]
    _, _, (kid,) = children(study_dirs["tracking_uri"], "crash")
    assert [m.step for m in MlflowClient(study_dirs["tracking_uri"]).get_metric_history(
        kid.info.run_id, "valid_recall_at_20")] == [1, 2, 3]
    # its cost: DDRM's 3 epochs counted once across both attempts (the backend came from the cache the calm study
    # filled); the checkpoint carries the first attempt's seconds into the second
    assert kid.data.metrics["cost_epochs"] == 3 and kid.data.metrics["cost_backend_from_cache"] == 1
    assert kid.data.metrics["cost_cpu_seconds"] > 0


def test_standalone_model_search_reports_every_epoch(ray_local, study_dirs, tmp_path):
    spec_path = tmp_path / "vae.yaml"
    spec_path.write_text("name: vae\nmode: grid\nseeds: [0]\n"
                         "base:\n  data: {name: tiny}\n  train: {epochs: 3, patience: 5}\n"
                         "  model: {name: multivae, hidden_dims: [16, 4], batch_size: 8}\n"
                         "space:\n  model.lr: {type: choice, values: [0.001, 0.01]}\n"
                         "scheduler: {type: fifo}\nmax_concurrent: 2\nresources: {cpu: 1}\n")
    summary = run_search(load_search_spec(spec_path), **study_dirs)
    assert summary["finished"] == 2 and summary["best"]["valid"]["recall_at_20"] > 0
    client, _, kids = children(study_dirs["tracking_uri"], "vae")
    for kid in kids:
        assert kid.data.params["model.name"] == "multivae"
        assert [m.step for m in client.get_metric_history(kid.info.run_id, "valid_recall_at_20")] == [1, 2, 3]


def test_an_identical_trial_in_another_store_is_replayed_not_retrained(ray_local, study_dirs, tmp_path):
    from ddrm.config import apply_overrides

    from test_reuse import log_trial

    spec_path = tmp_path / "b.yaml"
    spec_path.write_text("name: b\n" + BASE + "seeds: [0]\nvariants:\n  full: {}\n"
                         "  item_only: {ddrm.denoise_users: false}\nresources: {cpu: 1}\nmax_concurrent: 2\n")
    spec = load_ablation_spec(spec_path)
    earlier = f"sqlite:///{tmp_path / 'earlier.db'}"
    full = config_from_dict(apply_overrides(spec.base, {**spec.variants["full"], "seed": 0}))
    # metrics no training on this data produces: seeing them in the new study proves the replay
    source_run = log_trial(earlier, full, valid=(0.91, 0.93, 0.92))
    summary = run_ablation(spec, **study_dirs, reuse_from=[earlier])
    assert summary["finished"] == 2
    client, _, kids = children(study_dirs["tracking_uri"], "b")
    by_variant = {k.data.tags["variant"]: k for k in kids}
    reused, trained = by_variant["full"], by_variant["item_only"]
    assert reused.data.tags["reused_from"] == f"{earlier}#{source_run}"
    assert reused.info.status == "FINISHED" and reused.data.metrics["test_recall_at_20"] == 0.25
    assert [(m.step, m.value) for m in client.get_metric_history(reused.info.run_id, "valid_recall_at_20")] == [
        (1, 0.91), (2, 0.93), (3, 0.92)]
    assert reused.data.params == trained.data.params | {"ddrm.denoise_users": "True"}
    trained_curve = [(m.step, m.value) for m in client.get_metric_history(trained.info.run_id, "valid_recall_at_20")]
    assert "reused_from" not in trained.data.tags and [step for step, _ in trained_curve] == [1, 2, 3]
    assert trained_curve != [(1, 0.91), (2, 0.93), (3, 0.92)]
    assert summary["variants"]["full"]["test"]["recall_at_20"]["mean"] == 0.25


def _trial_pids(storage: str, name: str) -> list[int]:
    """The worker process of each trial of study ``name``, from Tune's own ``result.json`` files."""
    import json
    from pathlib import Path

    pids = []
    for result in sorted((Path(storage) / name).glob("*/result.json")):
        first = result.read_text().splitlines()[0]
        pids.append(json.loads(first)["pid"])
    return pids


def test_trials_run_one_after_another_in_one_worker_with_the_metrics_of_fresh_workers(ray_local, study_dirs, tmp_path,
                                                                                       monkeypatch):
    import ddrm.tuning.runner as runner

    spec_path = tmp_path / "reuse.yaml"
    spec_path.write_text("name: reuse\n" + BASE + "seeds: [0, 1]\nvariants:\n  full: {}\n"
                         "resources: {cpu: 1}\nmax_concurrent: 1\n")
    reused = run_ablation(load_ablation_spec(spec_path), **study_dirs)
    pids = _trial_pids(study_dirs["storage"], "reuse")
    assert len(pids) == 2 and len(set(pids)) == 1, pids  # the second trial reuses the first one's process

    monkeypatch.setattr(runner, "REUSE_ACTORS", False)
    fresh_dirs = {**study_dirs, "storage": str(tmp_path / "ray_fresh"),
                  "tracking_uri": f"sqlite:///{tmp_path / 'fresh.db'}"}
    fresh = run_ablation(load_ablation_spec(spec_path), **fresh_dirs)
    assert len(set(_trial_pids(fresh_dirs["storage"], "reuse"))) == 2  # one process per trial
    _, _, reused_kids = children(study_dirs["tracking_uri"], "reuse")
    _, _, fresh_kids = children(fresh_dirs["tracking_uri"], "reuse")

    def metrics(kids):
        return {k.data.tags["seed"]: {m: v for m, v in k.data.metrics.items() if m.startswith(("test_", "valid_"))}
                for k in kids}

    assert metrics(reused_kids) == metrics(fresh_kids)  # bit-identical: the process a trial runs in changes nothing
    assert reused["finished"] == fresh["finished"] == 2


def test_studies_sharing_a_campaigns_trial_slots_start_each_trial_in_a_fresh_worker():
    from ddrm.tuning.runner import reuse_actors
    from ddrm.tuning.slots import SlotPool, sharing

    assert reuse_actors()  # a study alone: a finished trial's worker takes the next trial
    with sharing(SlotPool(2)):  # a kept worker would hold a Ray CPU while its study waits for a shared slot
        assert not reuse_actors()
    assert reuse_actors()
