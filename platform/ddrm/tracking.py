"""MLflow tracking: one parent run per study/ablation, one nested child run per Tune trial.

Runs live in the driver (a Tune ``Callback``), so trials never open the tracking store — a sqlite file
works locally, an MLflow server on a cluster. Child runs carry the flat config as params, every
evaluation's validation metrics and cost so far with ``step = epoch``, the final best/test (not in a search)/cost
metrics, ``config.yaml`` as an artifact, and tags ``variant``, ``seed``, ``trial_id``. A restarted driver (``--resume``) finds the
existing parent and child runs by tag instead of creating duplicates.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any


DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
# URI schemes MLflow 3.17 has a tracking store for (a database scheme may name a driver: postgresql+psycopg2://);
# its file store (file:, a plain path) raises unless MLFLOW_ALLOW_FILE_STORE=true
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db`` (absolute path).

    Raises :class:`ConfigError` (one line) for a scheme MLflow has no tracking store for, or a
    ``sqlite:///`` file whose folder does not exist — before any study starts, not after Ray is up.
    """
    from urllib.parse import urlparse

    from .errors import ConfigError

    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    source = "MLFLOW_TRACKING_URI" if not explicit and os.environ.get("MLFLOW_TRACKING_URI") else "tracking URI"
    scheme = urlparse(uri).scheme.lower()
    engine = "databricks" if uri == "databricks" else scheme.split("+", 1)[0]
    file_store = engine in ("", "file")
    if file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        hint = f"sqlite:///{uri}" if uri.endswith(".db") and not scheme else "sqlite:///PATH/mlflow.db"
        raise ConfigError(f"{source} {uri!r}: MLflow's file store is in maintenance mode and refuses new runs; "
                          f"use {hint} or http://HOST:PORT")
    if not file_store and engine not in TRACKING_SCHEMES:
        raise ConfigError(f"{source} {uri!r}: unknown scheme '{scheme}'; expected one of "
                          + ", ".join(f"{s}://" for s in TRACKING_SCHEMES) + " (e.g. sqlite:///mlruns.db)")
    if engine in ("http", "https") and not urlparse(uri).netloc:
        raise ConfigError(f"{source} {uri!r}: no host; expected e.g. http://HOST:5000")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if uri.startswith("sqlite:///") and ":memory:" not in uri and not Path(uri[len("sqlite:///"):]).parent.is_dir():
        raise ConfigError(f"{source} {uri!r}: folder {Path(uri[len('sqlite:///'):]).parent} does not exist")
    return uri


def check_tracking_server(uri: str, timeout: float = 10.0) -> None:
    """For an ``http(s)://`` tracking URI: one request to the server's ``/health`` (no retries), so a wrong
    host or a server that is not running is one :class:`DDRMError` line before a study starts."""
    import urllib.error
    import urllib.request

    from .errors import DDRMError

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError as exc:  # a server answered: a proxy or an older server without /health
        if exc.code < 500:
            return
        reason = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise DDRMError(f"no MLflow tracking server answers at {uri} ({reason}); start one (mlflow server "
                    f"--backend-store-uri sqlite:///PATH/mlflow.db --host 0.0.0.0 --port PORT) or pass "
                    f"another --tracking-uri")


_SQLITE_CALLS = threading.RLock()  # one call into a sqlite store at a time, from whichever of the driver's threads


class _OneCallAtATime:
    """An ``MlflowClient`` whose method calls hold :data:`_SQLITE_CALLS`: studies that run side by side in one
    driver write one sqlite file, and sqlite refuses a writer ("database is locked") when another connection's
    transaction holds the file longer than its busy timeout or would deadlock with it."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with _SQLITE_CALLS:
                return attribute(*args, **kwargs)

        return call


def _client(uri: str):
    """An MLflow client of ``uri``; for a sqlite store, one whose calls the driver's threads take in turn."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return _OneCallAtATime(client) if uri.startswith("sqlite:") else client


def sqlite_store_missing(uri: str) -> bool:
    """True for a ``sqlite:///`` URI whose file does not exist (opening it would create an empty store)."""
    return uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file()


def search_all_runs(client, experiment_ids: list[str], filter_string: str) -> list[Any]:
    """Every run matching ``filter_string`` (MLflow pages results; this follows the pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def get_or_create_experiment(uri: str, name: str) -> str:
    client = _client(uri)
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def start_parent_run(uri: str, experiment: str, study_key: str, tags: dict[str, str]) -> str:
    """The parent run of a study, reused when a run with the same ``study_key`` tag exists (resume)."""
    client = _client(uri)
    experiment_id = get_or_create_experiment(uri, experiment)
    found = client.search_runs([experiment_id], filter_string=f"tags.study_key = '{study_key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(experiment_id, run_name=tags.get("study", experiment),
                            tags={"study_key": study_key, "role": "study", **tags})
    return run.info.run_id


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(uri).set_terminated(run_id, status=status)


def log_table(uri: str, run_id: str, text: str, name: str) -> None:
    _client(uri).log_text(run_id, text, name)


def _error_text(trial) -> str:
    """The last line-ish of a failed trial's error file, for the run's ``error`` tag."""
    for attribute in ("error_file", "pickled_error_file"):
        path = getattr(trial, attribute, None)
        if path and os.path.isfile(path) and attribute == "error_file":
            lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1]
    return "trial failed (see the Tune trial's error.txt)"


# ------------------------------------------------------------------ the study as MLflow's UI shows it
# MLflow 3.17's UI picks GenAI or model-training pages from its `workflowType` (URL query, else the browser's
# localStorage, default "genai"); the `mlflow.experimentKind` tag is not consulted for that (set anyway: it
# names what the experiment holds). Nested runs stay collapsed under their parent unless a view says
# otherwise; a view is an experiment tag `mlflow.sharedViewState.<key>` that the URL names by
# `viewStateShareKey=<key>` (the UI's own shared-view mechanism): it can group the child runs and pick columns.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
VIEW_STATE_TAG = "mlflow.sharedViewState."
STUDY_VIEW_KEY = "ddrm-study"
DEFAULT_UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default


def study_metric_name(*parts: str) -> str:
    """A parent-run metric name: ``study/`` and ``parts`` joined by dots (``study/mf.ddrm.test_recall_at_20_mean``);
    characters MLflow refuses (``@``, ``+``, ``=``, ``/``, ...) become ``_``. One ``study/`` prefix puts every
    such metric in one section of the chart view, after the trials' learning curves."""
    import re

    return "study/" + ".".join(re.sub(r"[^\w.\- ]", "_", str(p)).strip(" .") or "_" for p in parts)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """Log the finite ``metrics`` on ``run_id`` in one batch (step 0)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    for start in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
        _client(uri).log_batch(run_id, metrics=batch[start:start + 1000])


def log_artifacts(uri: str, run_id: str, files: list[Path], artifact_path: str | None = None) -> None:
    """Upload ``files`` as artifacts of ``run_id`` (under ``artifact_path``)."""
    client = _client(uri)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)


def study_view_state(group_by: list[str], metrics: list[str], params: list[str] | tuple[str, ...] = (),
                     order_by: str | None = None, ascending: bool = False, aggregate: str = "average") -> dict:
    """A runs-view state for :func:`set_study_view`: child runs grouped by the tags ``group_by`` (every group
    expanded, its row showing the ``aggregate`` — average, min or max — of each column), the given metric and
    param columns, rows sorted by the metric ``order_by``; the chart view draws every run, not group means."""
    columns = [f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in params]
    name = "attributes.`Run Name`"  # wide enough for "model/variant/seed<N>" and "trial<N> key=value ..."
    state: dict[str, Any] = {
        "selectedColumns": columns,
        "columnOrder": [name, *columns],  # the UI sorts metric columns by name otherwise, sizes only ordered ones
        "columnWidths": {name: 300, **{c: max(120, 8 * len(c) - 40) for c in columns}},
        "groupBy": {"aggregateFunction": aggregate,
                    "groupByKeys": [{"mode": "tag", "groupByData": tag} for tag in group_by]} if group_by else None,
        # the group of runs without those tags (the parent run) is expanded too; the others are by default
        "groupsExpanded": {",".join(f"tag.{tag}" for tag in group_by): True} if group_by else {},
        "useGroupedValuesInCharts": False,
        "orderByKey": f"metrics.`{order_by}`" if order_by else "attributes.start_time",
        "orderByAsc": ascending if order_by else True,
    }
    return state


def set_study_view(uri: str, experiment_id: str, state: dict[str, Any]) -> None:
    """Store ``state`` as the experiment's ``ddrm-study`` view and tag the experiment as model training."""
    import json

    client = _client(uri)
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    client.set_experiment_tag(experiment_id, VIEW_STATE_TAG + STUDY_VIEW_KEY, json.dumps(state, sort_keys=True))


def ui_url(uri: str) -> str | None:
    """The MLflow UI serving ``uri``: the tracking server itself for ``http(s)://``, else where ``mlflow ui``
    listens by default; None for Databricks."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return None if uri.startswith("databricks") else DEFAULT_UI_URL


def runs_view_url(uri: str, experiment: str) -> str | None:
    """The URL of ``experiment``'s runs view in MLflow's model-training pages (with the study's view when
    one was stored); None when the experiment does not exist or the UI's address is unknown."""
    base = ui_url(uri)
    found = _client(uri).get_experiment_by_name(experiment) if base else None
    if found is None:
        return None
    query = "workflowType=machine_learning"
    if VIEW_STATE_TAG + STUDY_VIEW_KEY in found.tags:
        query += f"&viewStateShareKey={STUDY_VIEW_KEY}"
    return f"{base}/#/experiments/{found.experiment_id}/runs?{query}"
