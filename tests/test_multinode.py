"""Studies on a multi-node Ray cluster on one machine, logging to a real MLflow tracking server.

One module-wide ``ray.cluster_utils.Cluster``: a head with no CPUs (so no trial can run there) and two
1-CPU worker nodes, all in a private Ray temp dir; one ``mlflow server`` on a free loopback port. Studies run
the way the README's "On a Ray cluster" commands do: ``ddrm ablate`` as a separate driver process with
``RAY_ADDRESS`` set and ``--tracking-uri http://...``. Faults: a worker node removed mid-study (the trials
resume from their checkpoints on a replacement node) and the tracking server stopped mid-study.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import make_interactions
from ddrm.data import write_prepared

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

SPEC = """name: {name}
base:
  data: {{name: tiny}}
  train: {{epochs: 3, batch_size: 64, patience: 50}}
  model: {{name: mf, lr: 0.01}}
  ddrm: {{hidden_dims: [8, 16], steps: 4, lr: 0.01}}
seeds: {seeds}
variants:
  full: {{}}
  item_only: {{ddrm.denoise_users: false}}
resources: {resources}
max_concurrent: {concurrent}
max_failures: 3
"""
EPOCHS = [1, 2, 3]
FAULTS = Path(__file__).with_name("faults.py")  # a ddrm driver whose trials can be held (tests only)
TEST_METRICS = ("test_recall_at_10", "test_recall_at_20", "test_ndcg_at_10", "test_ndcg_at_20")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrackingServer:
    """``mlflow server`` on sqlite in ``root``, on one fixed port (a restart keeps its URI)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 180) -> None:
        mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [mlflow, "server", "--backend-store-uri", f"sqlite:///{self.root / 'm.db'}", "--artifacts-destination",
                 str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                assert self.process.poll() is None, (self.root / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server on {self.uri} did not answer within {timeout}s")

    def stop(self) -> None:
        """Kill the server and its worker processes (its own process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@dataclass
class Site:
    """The module's cluster, tracking server and folders."""

    root: Path
    cluster: Cluster
    workers: list
    server: TrackingServer
    hold: Path  # trials of ``ablate(..., hold=True)`` wait after their epoch-1 checkpoint while it is missing
    drivers: list = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def spec(self, name: str, seeds: str = "[0, 1]", resources: str = "{cpu: 1}", concurrent: int = 2) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(SPEC.format(name=name, seeds=seeds, resources=resources, concurrent=concurrent))
        return path

    def ablate(self, spec: Path, *extra: str, cluster: bool = True, uri: str | None = None,
               storage: str = "results", cache: str = "cache", env: dict | None = None,
               hold: bool = False) -> subprocess.Popen:
        """``ddrm ablate`` as its own driver process: on the cluster (``RAY_ADDRESS``) or on a local Ray. With
        ``hold`` the driver is ``tests/faults.py``: its trials wait after their epoch-1 checkpoint while
        :attr:`hold` is missing (the production trainable otherwise, :mod:`faults`)."""
        environment = {**os.environ, "DDRM_CACHE_DIR": str(self.root / cache), **(env or {})}
        environment.pop("RAY_ADDRESS", None)
        if cluster:
            environment["RAY_ADDRESS"] = self.cluster.address
        log = open(self.root / f"{spec.stem}.log", "w")
        entry = [str(FAULTS), "--hold", str(self.hold)] if hold else ["-m", "ddrm.cli"]
        driver = subprocess.Popen(
            [sys.executable, *entry, "ablate", str(spec), "--data-dir", str(self.data_dir), "--storage",
             str(self.root / storage), "--tracking-uri", uri or self.server.uri, *extra],
            env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.drivers.append(driver)
        return driver

    def finish(self, driver: subprocess.Popen, name: str, timeout: float = 600) -> str:
        try:
            driver.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        return (self.root / f"{name}.log").read_text()

    def node_ids(self) -> set[str]:
        return {node.node_id for node in self.workers}


def _reload_ray_auth() -> None:
    """Make this process's Ray see the current RAY_AUTH_MODE / RAY_AUTH_TOKEN (Ray caches both)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    train, valid, test = make_interactions(n_users=40, n_items=30, seed=2)
    write_prepared(root / "data" / "tiny", train, valid, test)
    ray_tmp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")  # short: Ray's socket paths live under it
    hold = root / "release"
    hold.write_text("")
    with pytest.MonkeyPatch.context() as env:
        # a private Ray temp dir (the cluster's ray_current_cluster file stays in it) and token auth with a token
        # of this module's own, shared by the nodes and the driver processes
        env.setenv("RAY_TMPDIR", ray_tmp)
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        env.delenv("RAY_ADDRESS", raising=False)
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        _reload_ray_auth()  # this process reads RAY_AUTH_MODE once; the Cluster's GCS clients live here
        server = TrackingServer(root / "mlflow")
        state = Site(root, None, [], server, hold)
        try:
            server.start()
            # the head's agent on a free port: another Ray on the machine may hold the default 52365
            state.cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 0, "include_dashboard": False, "dashboard_agent_listen_port": _free_port()})
            state.workers = [state.cluster.add_node(num_cpus=1) for _ in range(2)]
            yield state
        finally:
            for driver in state.drivers:
                if driver.poll() is None:
                    os.killpg(driver.pid, signal.SIGKILL)
                    driver.wait()
            server.stop()
            if state.cluster is not None:
                state.cluster.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    _reload_ray_auth()


def trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in runs if r.data.tags.get("role") == "trial"]


def all_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def by_trial(runs) -> dict[tuple[str, str], object]:
    keyed = {(r.data.tags["variant"], r.data.tags["seed"]): r for r in runs}
    assert len(keyed) == len(runs), "two MLflow runs for one trial"
    return keyed


def curve(uri: str, run) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "valid_recall_at_20")]


def wait_for_checkpoints(folder: Path, count: int, driver: subprocess.Popen, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        # on disk is not enough: the driver must have processed the result (it writes result.json then) and so
        # registered the checkpoint, or a trial lost now restarts from scratch
        held = {p.parent for p in folder.glob("*/checkpoint_*")
                if (p.parent / "result.json").is_file() and (p.parent / "result.json").stat().st_size > 0}
        if len(held) >= count:
            return
        assert driver.poll() is None, "the study ended before its trials held"
        time.sleep(0.5)
    raise TimeoutError(f"fewer than {count} trials checkpointed under {folder}")


@pytest.fixture(scope="module")
def calm(site):
    """The reference study on the cluster: 2 variants x 2 seeds, undisturbed. Its first two trials wait after their
    first checkpoint until both hold one, so they run at once, one on each 1-CPU worker (a finished trial's worker
    would otherwise take the next trial before the second worker's process is up: Tune reuses it)."""
    site.hold.unlink()
    driver = site.ablate(site.spec("calm"), hold=True)
    try:
        wait_for_checkpoints(site.root / "results" / "calm", 2, driver)
    finally:
        site.hold.write_text("")
    log = site.finish(driver, "calm")
    assert "4/4 trials finished" in log, log[-3000:]
    runs = trial_runs(site.server.uri, "calm")
    return by_trial(runs)


def test_a_study_runs_on_the_worker_nodes_and_reports_like_a_local_run(site, calm, tmp_path):
    from ddrm.report import collect_runs, write_tables

    head = site.cluster.head_node.node_id
    assert len(calm) == 4
    for run in calm.values():
        assert run.info.status == "FINISHED" and all(k in run.data.metrics for k in TEST_METRICS)
        assert run.data.tags["node_id"] in site.node_ids() and run.data.tags["node_id"] != head
        assert run.data.tags["device"] == "cpu"
        assert curve(site.server.uri, run) == EPOCHS
    assert len({r.data.tags["node_id"] for r in calm.values()}) == 2  # both workers took trials

    # the same spec on a local Ray (no RAY_ADDRESS; Ray's temp dir names the live cluster, which a local study
    # must not join), a sqlite store and a backend cache of its own: the same numbers, to the last digit
    local_uri = f"sqlite:///{site.root / 'local.db'}"
    log = site.finish(site.ablate(site.root / "calm.yaml", "--num-cpus", "2", "--cpus-per-trial", "1",
                                  cluster=False, uri=local_uri, storage="local_results", cache="local_cache"),
                      "calm")
    assert "4/4 trials finished" in log, log[-3000:]
    local = by_trial(trial_runs(local_uri, "calm"))
    assert {k: {m: r.data.metrics[m] for m in TEST_METRICS} for k, r in local.items()} == \
           {k: {m: r.data.metrics[m] for m in TEST_METRICS} for k, r in calm.items()}
    tables = []
    for name, uri in (("server", site.server.uri), ("local", local_uri)):
        frame, _ = collect_runs(uri, "calm")
        write_tables(frame, tmp_path / name, None, 0.01, title="calm")
        text = (tmp_path / name / "table.md").read_text()
        measured = "\n".join(line for line in text.splitlines() if not line.startswith("cost:"))  # seconds differ
        tables.append((measured, (tmp_path / name / "table.csv").read_text()))
    assert tables[0] == tables[1]


def test_a_worker_node_lost_mid_study_is_replaced_and_its_trials_resume(site, calm):
    site.hold.unlink()  # trials wait after their first checkpoint, so the node dies mid-trial
    driver = site.ablate(site.spec("node_lost", seeds="[0]"), hold=True)
    wait_for_checkpoints(site.root / "results" / "node_lost", 2, driver)
    victim = site.workers[0]
    victim_id = victim.node_id
    site.cluster.remove_node(victim)
    site.workers[0] = site.cluster.add_node(num_cpus=1)
    site.hold.write_text("")
    log = site.finish(driver, "node_lost")
    assert driver.returncode == 0 and "2/2 trials finished" in log, log[-3000:]

    runs = by_trial(trial_runs(site.server.uri, "node_lost"))  # exactly one run per trial
    assert sorted(runs) == [("full", "0"), ("item_only", "0")]
    everything = all_runs(site.server.uri, "node_lost")  # and nothing else: one parent, no orphans
    assert len(everything) == 3 and all(r.info.status == "FINISHED" for r in everything)
    for key, run in runs.items():
        assert run.info.status == "FINISHED"
        assert curve(site.server.uri, run) == EPOCHS  # no epoch logged twice: resumed, not restarted
        assert {m: run.data.metrics[m] for m in TEST_METRICS} == {m: calm[key].data.metrics[m] for m in TEST_METRICS}
    # Tune's own record: the trial on the lost node reported epoch 1 there and the rest on another node
    moved = []
    for result_file in (site.root / "results" / "node_lost").glob("*/result.json"):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        epochs = [r["epoch"] for r in lines]
        assert epochs == EPOCHS + [EPOCHS[-1]]  # three evaluations and the final result, none repeated
        if lines[0]["node_id"] == victim_id:
            moved.append({r["node_id"] for r in lines[1:]})
    assert len(moved) == 1 and victim_id not in moved[0], moved


def test_a_tracking_server_restarted_mid_study_loses_nothing(site, calm):
    site.hold.unlink()
    driver = site.ablate(site.spec("server_restart", seeds="[0]"), hold=True)
    wait_for_checkpoints(site.root / "results" / "server_restart", 2, driver)
    site.server.stop()
    site.hold.write_text("")  # epochs 2, 3 and the final results arrive while no server answers
    time.sleep(3)
    site.server.start()  # the driver's MLflow client is still retrying (7 retries, backoff up to ~4 min)
    log = site.finish(driver, "server_restart")
    assert driver.returncode == 0 and "2/2 trials finished" in log, log[-3000:]
    runs = by_trial(trial_runs(site.server.uri, "server_restart"))
    assert sorted(runs) == [("full", "0"), ("item_only", "0")]
    everything = all_runs(site.server.uri, "server_restart")  # a retried request made no second run
    assert len(everything) == 3 and all(r.info.status == "FINISHED" for r in everything)
    for key, run in runs.items():
        assert run.info.status == "FINISHED" and curve(site.server.uri, run) == EPOCHS
        assert {m: run.data.metrics[m] for m in TEST_METRICS} == {m: calm[key].data.metrics[m] for m in TEST_METRICS}


def test_a_tracking_server_gone_for_longer_than_the_retries_stops_the_study_loudly(site):
    # MLflow's client retries for ~4 minutes by default; with no retries the outage outlasts them at once
    site.hold.unlink()
    driver = site.ablate(site.spec("server_gone", seeds="[0]"),
                         env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}, hold=True)
    wait_for_checkpoints(site.root / "results" / "server_gone", 2, driver)
    site.server.stop()
    site.hold.write_text("")
    try:
        log = site.finish(driver, "server_gone", timeout=300)
    finally:
        site.server.start()
    assert driver.returncode not in (0, None) and "trials finished" not in log, log[-3000:]
    assert site.server.uri in "\n".join(log.splitlines()[-30:]), log[-3000:]  # the error names the server
    runs = trial_runs(site.server.uri, "server_gone")
    assert runs and all(r.info.status == "RUNNING" for r in runs)  # not FINISHED with a gap: left for --resume


def test_gpus_asked_of_a_cluster_without_any_is_one_error_line(site):
    spec = site.spec("no_gpu", seeds="[0]")
    driver = site.ablate(spec, "--gpus-per-trial", "1")
    log = site.finish(driver, "no_gpu", timeout=300)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert driver.returncode == 2, log[-3000:]
    assert len(errors) == 1 and "gpu=1" in errors[0] and "no autoscaler" in errors[0], log[-3000:]
    assert "Traceback" not in log
    assert trial_runs(site.server.uri, "no_gpu") == []  # nothing started


def test_fractional_gpus_pack_several_trials_on_a_gpu_node_without_cuda(site):
    gpu_node = site.cluster.add_node(num_cpus=2, num_gpus=1)  # a GPU advertised on this CPU-only machine
    try:
        spec = site.spec("gpu_share", seeds="[0]", resources="{cpu: 0.5, gpu: 0.25}", concurrent=2)
        site.hold.unlink()  # each trial waits after its first checkpoint: both can be held only if they share the GPU
        driver = site.ablate(spec, hold=True)
        try:
            wait_for_checkpoints(site.root / "results" / "gpu_share", 2, driver)  # 0.25 GPU each: both live at once
        finally:
            site.hold.write_text("")
        log = site.finish(driver, "gpu_share")
        assert "2/2 trials finished" in log, log[-3000:]
        runs = list(by_trial(trial_runs(site.server.uri, "gpu_share")).values())
        assert {r.data.tags["node_id"] for r in runs} == {gpu_node.node_id}  # only that node has GPUs
        assert {r.data.tags["device"] for r in runs} == {"cpu"}  # train.device auto: no CUDA, no crash
    finally:
        site.cluster.remove_node(gpu_node)
