"""A real browser on a real study: headless Chromium renders MLflow's UI (``mlflow ui``) at the URL a study
prints, and ``report.html`` from disk.

Chromium is driven without CDP: ``--dump-dom`` after a ``--virtual-time-budget`` gives the DOM the page's
JavaScript built. Skips (with the reason) when no Chromium binary is found; ``.ci/run`` installs Debian's
``chromium`` when it can; ``$DDRM_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import local_ray, make_interactions  # noqa: E402
from ddrm.data import write_prepared  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    candidates = [os.environ.get("DDRM_CHROMIUM", "")] + [shutil.which(name) or "" for name in BROWSERS]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def chromium():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary found (apt-get install chromium, or set DDRM_CHROMIUM)")
    return binary


def render(binary: str, url: str, profile: Path, budget_ms: int = 15000, size: str = "1600,1200") -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time."""
    flags = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", f"--window-size={size}"]
    done = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=180, check=True)
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory, chromium):
    """An empty sqlite MLflow store in a tmp folder, with ``mlflow ui`` serving it on a free loopback port
    (started first, so that it comes up while the study runs)."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    MlflowClient(uri).search_experiments()  # creates the tables: the server and the study do not race for it
    port = free_port()
    log = open(tmp / "mlflow_ui.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # its own process group: its workers stop with it
    try:
        yield {"tmp": tmp, "uri": uri, "base": f"http://127.0.0.1:{port}", "server": server}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:  # uvicorn waits for open connections; nothing here needs a clean stop
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def study(store):
    """A tiny ablation (backend alone vs DDRM, one seed, 2 epochs) into the store; waits for ``mlflow ui``."""
    from ddrm.tuning.runner import run_ablation
    from ddrm.tuning.spec import load_ablation_spec

    tmp = store["tmp"]
    train, valid, test = make_interactions(n_users=40, n_items=30, seed=1)
    write_prepared(tmp / "data" / "tiny", train, valid, test)
    (tmp / "abl.yaml").write_text(
        "name: browser_abl\nbase:\n  data: {name: tiny}\n  train: {epochs: 2, batch_size: 64, patience: 5}\n"
        "  model: {name: mf, lr: 0.01}\n  ddrm: {hidden_dims: [8, 16], steps: 4, lr: 0.01}\nseeds: [0]\n"
        "variants:\n  backend: {ddrm.enabled: false}\n  ddrm: {}\nreference: backend\nresources: {cpu: 1}\n"
        "max_concurrent: 2\n")
    with local_ray(tmp / "cache"):
        summary = run_ablation(load_ablation_spec(tmp / "abl.yaml"), storage=str(tmp / "ray"),
                               tracking_uri=store["uri"], data_dir=str(tmp / "data"))
    assert summary["finished"] == 2
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(store["base"] + "/health", timeout=2):
                break
        except OSError:
            if store["server"].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not start: {(tmp / 'mlflow_ui.log').read_text()[-2000:]}")
            time.sleep(0.5)
    return {**store, "summary": summary}


def test_the_printed_url_opens_the_study_in_the_runs_view(study, chromium, tmp_path):
    from ddrm.tracking import DEFAULT_UI_URL, runs_view_url

    url = runs_view_url(study["uri"], "browser_abl").replace(DEFAULT_UI_URL, study["base"])
    page = render(chromium, url, tmp_path / "profile")
    assert "Model training" in page and ">Runs<" in page  # the model-training runs view, not the GenAI overview
    assert "Detect Issues" not in page and ">Overview<" not in page
    for name in ("mf/backend/seed0", "mf/ddrm/seed0"):  # the child runs are shown, not folded into the parent
        assert name in page
    assert "Group: ddrm" in page and "metrics.`test_recall_at_20`" in page  # grouped by variant, test R@20 column
    # the chart view draws a card per metric, only those on screen: a tall window shows them all
    for budget in (15000, 45000):  # a busy machine may not have drawn the charts in the first budget
        charts = render(chromium, url + "&compareRunsMode=CHART", tmp_path / "profile", budget_ms=budget,
                        size="1600,6000")
        if "valid_recall_at_20" in charts and "mf/backend/seed0" in charts:
            break
    assert "valid_recall_at_20" in charts and "mf/backend/seed0" in charts  # learning curves, with run legends


def test_report_html_opens_from_disk(study, chromium, tmp_path):
    report = Path(study["summary"]["report"]) / "report.html"
    page = render(chromium, report.as_uri(), tmp_path / "profile", budget_ms=2000)
    assert "<table" in page and "backend (reference)" in page and "R@20" in page
    assert '<img src="data:image/png;base64,' in page
    assert "Per-seed values" in page and "Configs" in page
