"""Read the trial runs of an MLflow experiment (or of one parent run) into a DataFrame, one row per trial.

Columns: ``run_id``, ``parent_run``, ``model``, ``variant``, ``seed``, ``start_time``, every logged metric
(``test_recall_at_20``, ``diag_ddrm_noise_auc``, ...) and every param prefixed ``param.`` (the flat config,
``param.ddrm.steps``) and the provenance tags (:data:`RUN_TAGS`: code version, reuse source, host CPU). Only
FINISHED trials count; when the same (model, variant, seed) was run more than once (a repeated study in one
experiment) the latest run is kept. In a search (parent run tagged ``kind = tune``) every trial is its own row,
its variant the run's name (``trial7 steps=30 ...``; a name repeated by a resumed search gets its run id).
A run capped by ``--max-epochs`` (``train.max_epochs``) has `` (capped at N epochs)`` added to its variant.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..errors import DDRMError
from ..host import HOST_TAGS, PLACEMENT_COLUMNS
from ..tracking import _client, search_all_runs

# provenance columns (empty when a run lacks the tag): code, source of a replayed/imported run, host it ran on,
# its device and Ray resource shares
RUN_TAGS = ("reused_from", "imported_from", "code_fingerprint", "git_commit", *HOST_TAGS, *PLACEMENT_COLUMNS)
MODEL_PARAM_KEYS = ("model.name", "backend.name")  # without a `model` tag, the first present names the model
#                                                   (backend.name: runs logged in the old config shape, ddrm.legacy)


def resolve_target(uri: str, target: str) -> tuple[list[str], str | None, dict[str, str]]:
    """``(experiment_ids, parent_run_id or None, parent tags)`` for an experiment name or a parent run id."""
    client = _client(uri)
    experiment = client.get_experiment_by_name(target)
    if experiment is not None:
        parents = search_all_runs(client, [experiment.experiment_id], "tags.role = 'study'")
        tags = dict(max(parents, key=lambda r: r.info.start_time).data.tags) if parents else {}
        return [experiment.experiment_id], None, tags
    try:
        run = client.get_run(target)
    except Exception:  # noqa: BLE001 - MLflow raises different types per store for an unknown id
        names = sorted(e.name for e in client.search_experiments())
        raise DDRMError(f"'{target}' is neither an MLflow experiment nor a run id in {uri}; "
                        f"experiments there: {names}") from None
    return [run.info.experiment_id], run.info.run_id, dict(run.data.tags)


def collect_runs(uri: str, target: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Trial rows (see the module docstring) and facts about them (``failed`` trials, parent ``tags``)."""
    client = _client(uri)
    experiment_ids, parent, tags = resolve_target(uri, target)
    query = "tags.role = 'trial'" + (f" and tags.parent_run = '{parent}'" if parent else "")
    runs = search_all_runs(client, experiment_ids, query)
    searched = tags.get("kind") == "tune"
    rows, failed = [], 0
    for run in runs:
        if run.info.status != "FINISHED":
            failed += run.info.status == "FAILED"
            continue
        params = run.data.params
        model = run.data.tags.get("model") or next(
            (params[k] for k in MODEL_PARAM_KEYS if params.get(k) not in (None, "", "None")), "model")
        variant = run.data.tags.get("variant", "trial")
        if searched:  # every trial of a search is its own row, named as its run ("trial7 steps=30 ...")
            variant = run.data.tags.get("mlflow.runName") or f"trial-{run.info.run_id[:8]}"
        capped = params.get("train.max_epochs")
        if capped not in (None, "", "None"):  # a smoke run (--max-epochs): never read as a real result
            variant += f" (capped at {capped} epochs)"
        row = {"run_id": run.info.run_id, "parent_run": run.data.tags.get("parent_run", ""), "model": model,
               "variant": variant, "seed": int(run.data.tags.get("seed", 0)),
               "start_time": run.info.start_time, **run.data.metrics,
               **{tag: run.data.tags.get(tag, "") for tag in RUN_TAGS}}
        row.update({f"param.{k}": v for k, v in params.items()})
        rows.append(row)
    if not rows:
        raise DDRMError(f"no finished trial runs under '{target}' in {uri} ({failed} failed)")
    frame = pd.DataFrame(rows).sort_values("start_time", kind="stable")
    if searched:  # a search resumed by a new Tuner numbers its trials from 0 again: keep the names apart
        repeated = frame["variant"].duplicated(keep=False)
        frame.loc[repeated, "variant"] += " [" + frame.loc[repeated, "run_id"].str[:6] + "]"
    frame = frame.drop_duplicates(["model", "variant", "seed"], keep="last").reset_index(drop=True)
    return frame, {"failed": failed, "tags": tags, "parent_run": parent}
