"""Slow end-to-end tests through real processes: `ray job submit` against a loopback head, and a driver
killed mid-study that resumes with --resume without duplicating MLflow runs.

Every Ray process these tests start lives in a session of their own (``start_new_session``) and a Ray temp
dir of their own, and is ended by session id — never ``ray stop``, which would end every Ray on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import make_interactions
from ddrm.data import write_prepared

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

SPEC = """name: {name}
base:
  data: {{name: tiny}}
  train: {{epochs: {epochs}, batch_size: 64, patience: 50}}
  model: {{name: mf, lr: 0.01}}
  ddrm: {{hidden_dims: [8, 16], steps: 4, lr: 0.01}}
seeds: {seeds}
variants:
  full: {{}}
  item_only: {{ddrm.denoise_users: false}}
resources: {{cpu: 1}}
max_concurrent: 1
"""


def _prepare(tmp_path: Path, name: str, epochs: int, seeds: str = "[0]") -> tuple[Path, Path]:
    train, valid, test = make_interactions(n_users=40, n_items=30, seed=2)
    write_prepared(tmp_path / "data" / "tiny", train, valid, test)
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, epochs=epochs, seeds=seeds))
    return spec, tmp_path / "data"


def _trial_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("role") == "trial"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _zombie(proc: Path) -> bool:
    """Whether the process at ``/proc/<pid>`` has exited and waits to be reaped (state ``Z``)."""
    stat = (proc / "stat").read_text()
    return stat[stat.rindex(")") + 2:].startswith("Z")  # the state follows the command name's closing parenthesis


def _kill_session(session: int, timeout: float = 60) -> None:
    """SIGKILL every process of ``session`` (a Popen with ``start_new_session``: it and all its descendants,
    Ray's daemons included, whatever process groups they moved to). A killed process whose parent is gone stays a
    zombie until PID 1 reaps it, which some containers' PID 1 never does: zombies count as ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == session and not _zombie(entry):
                        alive.append(int(entry.name))
                        os.kill(int(entry.name), signal.SIGKILL)
                except (ProcessLookupError, PermissionError, FileNotFoundError):
                    pass
        if not alive:
            return
        time.sleep(0.5)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DDRM_CACHE_DIR"] = str(tmp_path / "cache")
    env.pop("RAY_ADDRESS", None)
    # a Ray temp dir of this test's own (short: socket paths live under it), so `ray start` records its
    # address there and not in /tmp/ray/ray_current_cluster, where every other Ray on the machine looks
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rdt", dir="/tmp")
    # Ray 2.60 enables token auth on a head as soon as ~/.ray/auth_token exists; use it explicitly, with a
    # token of this test's own, so the head and `ray job submit` agree on a fresh machine too
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return env


def test_job_submit_to_a_loopback_head(tmp_path):
    spec, data = _prepare(tmp_path, "submitted", epochs=2)
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    env = _env(tmp_path)
    # free ports, not Ray's defaults: another Ray on the machine may hold 6379 / 8265 / 52365 / 10001 (with the
    # job agent's port taken, every submit answers "No available agent to submit job")
    port, dash, agent, client = (_free_port() for _ in range(4))
    start = subprocess.Popen(
        [ray_bin, "start", "--head", "--num-cpus=2", f"--port={port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
         "--include-dashboard=true", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = start.communicate(timeout=180)
        assert start.returncode == 0, stderr
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        command = [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(tmp_path),
                   "--", "ddrm", "ablate", str(spec), "--data-dir", str(data), "--storage", str(tmp_path / "results"),
                   "--tracking-uri", uri]
        for _ in range(6):  # a fresh head's job agent can lag its dashboard on a slow machine; Ray says retry
            submit = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            if "No available agent to submit job" not in submit.stdout + submit.stderr:
                break
            time.sleep(10)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "succeeded" in (submit.stdout + submit.stderr).lower()
        runs = _trial_runs(uri, "submitted")
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    finally:
        _kill_session(start.pid)  # the head's daemons and the job's driver and workers
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def test_killed_driver_resumes_without_duplicate_runs(tmp_path):
    spec, data = _prepare(tmp_path, "resumable", epochs=6, seeds="[0, 1]")  # 4 trials: some left at the kill
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, "-m", "ddrm.cli", "ablate", str(spec), "--data-dir", str(data), "--storage",
            str(tmp_path / "results"), "--tracking-uri", uri, "--num-cpus", "2"]
    env = _env(tmp_path)
    driver = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill the driver once the first trial has finished
        if any(r.info.status == "FINISHED" for r in _trial_runs(uri, "resumable")):
            break
        time.sleep(2)
    else:
        _kill_session(driver.pid)
        pytest.fail("no trial finished within 10 minutes")
    _kill_session(driver.pid)  # the driver and the local Ray it started
    driver.wait()
    before = _trial_runs(uri, "resumable")
    print("before the resume:", [(r.data.tags["variant"], r.data.tags["seed"], r.data.tags.get("trial_id"),
                                  r.info.status) for r in before])
    assert 1 <= len(before) <= 4
    resumed = subprocess.Popen(args + ["--resume"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = resumed.communicate(timeout=900)
    finally:
        _kill_session(resumed.pid)  # its Ray's daemons outlive a driver that timed out
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert resumed.returncode == 0, stdout[-3000:] + stderr[-3000:]
    after = _trial_runs(uri, "resumable")
    keys = sorted((r.data.tags["variant"], r.data.tags["seed"]) for r in after)
    assert keys == [("full", "0"), ("full", "1"), ("item_only", "0"), ("item_only", "1")], keys
    statuses = [(r.data.tags["variant"], r.data.tags["seed"], r.data.tags.get("trial_id"), r.info.status,
                 r.data.tags.get("interrupted"), r.data.tags.get("error", "")[-500:]) for r in after]
    assert all(r.info.status == "FINISHED" for r in after), (statuses, stdout[-6000:], stderr[-3000:])
    client = MlflowClient(uri)
    parents = [r for r in client.search_runs([client.get_experiment_by_name("resumable").experiment_id])
               if r.data.tags.get("role") == "study"]
    assert len(parents) == 1


FAULTS = Path(__file__).with_name("faults.py")  # a ddrm driver whose trials can be held (tests only)


def _state_names(results: Path, folder: str) -> bool:
    """Whether the newest Tune experiment state under ``results`` records a checkpoint ``folder`` (Tune keeps a
    trial's checkpoints pickled, as hex, inside the JSON)."""
    states = sorted(results.glob("experiment_state-*.json"))
    return bool(states) and folder.encode().hex() in states[-1].read_text()


def test_a_driver_killed_when_its_state_names_a_deleted_checkpoint_resumes_that_trial_from_its_first_epoch(
        tmp_path):
    """What a driver killed between Tune's deletion of a replaced checkpoint and its next experiment-state save
    leaves behind, made deterministic: the first trial holds after its epoch-1 checkpoint until the state names
    it, the driver is killed, and the checkpoint folder is deleted as ``num_to_keep=1`` does once a newer one is
    registered. Resumed, the trial trains from its first epoch into its own run, instead of failing."""
    spec, data = _prepare(tmp_path, "stale", epochs=4)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results, release = tmp_path / "results", tmp_path / "release"
    common = ["ablate", str(spec), "--data-dir", str(data), "--storage", str(results), "--tracking-uri", uri,
              "--num-cpus", "2"]
    env = _env(tmp_path)
    held = subprocess.Popen([sys.executable, str(FAULTS), "--hold", str(release), *common], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not _state_names(results / "stale", "checkpoint_000000"):
        if time.time() > deadline or held.poll() is not None:
            _kill_session(held.pid)
            pytest.fail("the held trial's epoch-1 checkpoint never reached Tune's experiment state")
        time.sleep(0.5)
    _kill_session(held.pid)
    held.wait()
    checkpoints = list(results.glob("stale/*/checkpoint_*"))
    assert [c.name for c in checkpoints] == ["checkpoint_000000"]  # one trial ran (max_concurrent 1) and held
    shutil.rmtree(checkpoints[0])
    release.touch()
    resumed = subprocess.Popen([sys.executable, "-m", "ddrm.cli", *common, "--resume"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = resumed.communicate(timeout=900)
    finally:
        _kill_session(resumed.pid)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert resumed.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "checkpoint_000000 is gone" in stdout and "from its first epoch" in stdout, stdout[-3000:]
    after = _trial_runs(uri, "stale")
    statuses = [(r.data.tags["variant"], r.data.tags["seed"], r.info.status, r.data.tags.get("error", "")[-300:])
                for r in after]
    assert sorted(s[:2] for s in statuses) == [("full", "0"), ("item_only", "0")]
    assert all(s[2] == "FINISHED" for s in statuses), statuses
    client = MlflowClient(uri)
    for run in after:  # the restarted trial's epoch 1 was logged before the kill and is not logged again
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid_recall_at_20")]
        assert sorted(steps) == sorted(set(steps)) == list(range(1, 5)), (run.data.tags["variant"], steps)
