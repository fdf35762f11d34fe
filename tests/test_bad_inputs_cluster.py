"""Bad input around studies and clusters: one ``error:`` line, exit 2, before Ray starts or training begins.

Also the checks behind them: tracking URIs MLflow has no store for, a dead tracking server, outputs that
cannot be written, a stale ``ray_current_cluster`` file, and trials asking for resources (GPUs) that no node
of a cluster has and no autoscaler can add.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest

from ddrm.cli import main
from ddrm.errors import ConfigError
from ddrm.tuning.spec import Resources

SPEC = """name: bad_inputs
base:
  data: {name: tiny}
  train: {epochs: 1, batch_size: 64}
  ddrm: {hidden_dims: [8, 16], steps: 4}
seeds: [0]
variants:
  full: {}
"""
SEARCH = """name: bad_search
mode: grid
seeds: [0]
base:
  data: {name: tiny}
  train: {epochs: 1, batch_size: 64}
space:
  ddrm.steps: {type: choice, values: [2, 4]}
"""


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if a study gets as far as starting Ray or training."""

    def started(*args, **kwargs):
        raise AssertionError("Ray was started (or training began) before the bad input was reported")

    monkeypatch.setattr("ddrm.tuning.runner.init_ray", started)
    monkeypatch.setattr("ddrm.train.run", started)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("command,spec_text", [("ablate", SPEC), ("tune", SEARCH)], ids=["ablate", "tune"])
@pytest.mark.parametrize("uri,fragment", [
    ("foo://bar", "unknown scheme 'foo'; expected one of sqlite://, http://, https://"),
    ("./mlruns", "file store"),
    ("sqlite:///{tmp}/no/such/folder/m.db", "does not exist"),
    ("http://127.0.0.1:{port}", "no MLflow tracking server answers at http://127.0.0.1:"),
], ids=["scheme", "file-store", "sqlite-folder", "no-server"])
def test_a_bad_tracking_uri_is_one_line_before_ray_starts(command, spec_text, uri, fragment, tiny_dataset_dir,
                                                          tmp_path, no_ray, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    uri = uri.format(tmp=tmp_path, port=_closed_port())
    code = main([command, str(spec), "--data-dir", str(tiny_dataset_dir), "--storage", str(tmp_path / "r"),
                 "--tracking-uri", uri])
    assert code == 2 and fragment in _one_error(capsys)


def test_tracking_uris_mlflow_has_a_store_for_pass(tmp_path, monkeypatch):
    from ddrm.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for uri in ("http://head:5000", "https://mlflow.example.org", "postgresql+psycopg2://u@db/mlflow",
                "mysql://u@db/mlflow", "databricks", f"sqlite:///{tmp_path}/m.db"):
        assert resolve_tracking_uri(uri) == uri
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://x")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI 'ftp://x': unknown scheme"):
        resolve_tracking_uri(None)


def test_an_unwritable_storage_folder_is_one_line_before_ray_starts(tiny_dataset_dir, tmp_path, no_ray, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    (tmp_path / "a_file").write_text("")
    code = main(["ablate", str(spec), "--data-dir", str(tiny_dataset_dir), "--storage", str(tmp_path / "a_file" / "r"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert code == 2 and "--storage" in _one_error(capsys)


def test_train_out_that_cannot_be_written_is_one_line_before_training(tiny_dataset_dir, tmp_path, no_ray, capsys):
    (tmp_path / "a_file").write_text("")
    code = main(["train", "--dataset", "tiny", "--data-dir", str(tiny_dataset_dir), "--epochs", "1",
                 "--out", str(tmp_path / "a_file" / "run")])
    line = _one_error(capsys)
    assert code == 2 and "--out" in line and "cannot write there" in line


def test_gpus_per_trial_replaces_the_spec_and_may_be_a_fraction(tmp_path):
    from argparse import Namespace

    from ddrm.cli import _with_study_flags
    from ddrm.tuning.spec import load_ablation_spec

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC + "resources: {cpu: 1, gpu: 0.125}\n")
    spec = load_ablation_spec(path)
    assert spec.resources == Resources(1.0, 0.125)  # 8 trials per GPU
    flags = Namespace(cpus_per_trial=None, max_concurrent=8, gpus_per_trial=0.25)
    assert _with_study_flags(spec, flags).resources == Resources(1.0, 0.25)
    with pytest.raises(ConfigError, match="--gpus-per-trial -1"):
        _with_study_flags(spec, Namespace(cpus_per_trial=None, max_concurrent=None, gpus_per_trial=-1.0))


def test_a_trial_on_a_machine_without_cuda_uses_the_cpu():
    from ddrm.tuning.trainable import trial_placement

    assert trial_placement("auto")["device"] == "cpu"  # no CUDA here: auto falls back, nothing crashes


# ------------------------------------------------------------------ resources a cluster can never provide
CPU_NODE = {"Alive": True, "Resources": {"CPU": 8.0, "memory": 1e9}}
GPU_NODE = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}
DEAD_GPU_NODE = {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}
LAUNCHER = """max_workers: 8
head_node_type: head
available_node_types:
  head: {resources: {CPU: 4}, node_config: {}}
  gpu_worker: {min_workers: 0, max_workers: 8, resources: {CPU: 8, GPU: 1}, node_config: {}}
"""


@pytest.fixture
def cluster_of(monkeypatch, tmp_path):
    """Pretend to be a driver on a cluster with the given nodes and, optionally, a `ray up` config."""
    import ray
    import ray._private.state

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.delenv("DDRM_WAIT_FOR_RESOURCES", raising=False)
    monkeypatch.setattr(ray._private.state.state, "get_cluster_config", lambda: None)
    monkeypatch.setattr("ddrm.tuning.cluster.BOOTSTRAP_CONFIG", str(tmp_path / "ray_bootstrap_config.yaml"))

    def set_up(nodes: list[dict], launcher: str | None = None) -> None:
        monkeypatch.setattr(ray, "nodes", lambda: nodes)
        if launcher is not None:
            (tmp_path / "ray_bootstrap_config.yaml").write_text(launcher)

    return set_up


def test_gpus_on_a_cluster_without_any_are_refused(cluster_of):
    from ddrm.tuning.runner import check_cluster_fits

    cluster_of([CPU_NODE, DEAD_GPU_NODE])
    with pytest.raises(ConfigError, match=r"gpu=0.5, but no node .* \(nodes: CPU 8 GPU 0\) and no autoscaler"):
        check_cluster_fits(Resources(1, 0.5))
    with pytest.raises(ConfigError, match="cpu=16"):
        check_cluster_fits(Resources(16, 0))  # no node has 16 CPUs either
    check_cluster_fits(Resources(2, 0))


def test_gpus_fit_a_gpu_node_an_autoscaler_may_add_or_one_added_by_hand(cluster_of, monkeypatch, capsys):
    from ddrm.tuning.runner import check_cluster_fits

    cluster_of([GPU_NODE])
    check_cluster_fits(Resources(1, 0.125))  # a fraction of the GPU there is
    cluster_of([CPU_NODE], LAUNCHER)  # `ray up cluster.yaml`: GPU workers scale from 0
    check_cluster_fits(Resources(4, 0.5))
    assert "trials wait for the autoscaler" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="gpu=2"):
        check_cluster_fits(Resources(4, 2))  # more than any node type has
    monkeypatch.setenv("DDRM_WAIT_FOR_RESOURCES", "1")
    check_cluster_fits(Resources(4, 2))


def test_a_local_study_starts_its_own_ray_whatever_a_stale_cluster_file_says(monkeypatch):
    import ray

    from ddrm.tuning.runner import init_ray

    if ray.is_initialized():
        pytest.skip("Ray is already up in this process")
    ray_tmp = tempfile.mkdtemp(prefix="rst", dir="/tmp")  # short: Ray's socket paths live under it
    Path(ray_tmp, "ray").mkdir()
    Path(ray_tmp, "ray", "ray_current_cluster").write_text("127.0.0.1:9")  # a cluster long gone
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        init_ray(1)  # a bare ray.init(num_cpus=1) would try to join 127.0.0.1:9 and refuse num_cpus
        assert ray.cluster_resources()["CPU"] == 1
    finally:
        ray.shutdown()
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
