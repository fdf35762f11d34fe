"""MLflow tracking: one parent run per study/ablation, one nested child run per Tune trial.

Runs live in the driver (a Tune ``Callback``), so trials never open the tracking store — a sqlite file
works locally, an MLflow server on a cluster. Child runs carry the flat config as params, every
evaluation's validation metrics with ``step = epoch``, the final test metrics, ``config.yaml`` as an
artifact, and tags ``variant``, ``seed``, ``trial_id``. A restarted driver (``--resume``) finds the
existing parent and child runs by tag instead of creating duplicates.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
METRIC_PREFIXES = ("recall_at_", "ndcg_at_", "best_", "test_", "diag_")


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db`` (absolute path)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


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


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith(METRIC_PREFIXES) or key in ("loss", "epoch"):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[key] = float(value)
    return out


def _error_text(trial) -> str:
    """The last line-ish of a failed trial's error file, for the run's ``error`` tag."""
    for attribute in ("error_file", "pickled_error_file"):
        path = getattr(trial, attribute, None)
        if path and os.path.isfile(path) and attribute == "error_file":
            lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1]
    return "trial failed (see the Tune trial's error.txt)"
