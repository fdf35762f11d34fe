"""Continue a study from its committed ``runs.csv`` when its tracking store is gone (``--import-runs``).

Only what is committed lasts between sessions, and a tracking store (a database) stays out of git; a study's
``runs.csv`` (:mod:`ddrm.report.runs`) holds, per finished trial, its params, final metrics (its cost
included), last validation metrics, epoch and provenance. :func:`import_runs` logs each row not yet in the store as a FINISHED trial run
under the study's parent run (tag ``imported_from = <original store>#<run id>``), so the usual resume from the
store (:mod:`.warmstart`) then tells a search's sampler those trials, or replays an ablation's, and trains only
the rest. A row already present (same run id, or imported before) is skipped, so importing into the store
the file came from changes nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Collection, Union

import pandas as pd

from ..errors import ConfigError
from ..host import HOST_TAGS, PLACEMENT_COLUMNS
from ..legacy import upgrade_params
from ..metrics import is_record_column
from ..tracking import _client, search_all_runs

IMPORT_TAG = "imported_from"
PROVENANCE_TAGS = ("code_fingerprint", "git_commit", "reused_from", *HOST_TAGS, *PLACEMENT_COLUMNS)
REQUIRED = ("model", "variant", "seed", "run_id", "tracking_store")
RunsSource = Union[str, Path, pd.DataFrame]  # a runs.csv, or rows read from one (its name in attrs["source"])


def read_runs_csv(path: str | Path) -> pd.DataFrame:
    """The rows of a ``runs.csv``, every cell as written (strings; empty cells ``""``); one ConfigError line
    when the file is missing or lacks the columns ``runs.csv`` has."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--import-runs {path}: no such file; expected a runs.csv written by ddrm report")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(f"--import-runs {path}: not a CSV file ({exc})") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ConfigError(f"--import-runs {path}: missing column(s) {missing}; expected a runs.csv written by "
                          f"ddrm report (columns {list(REQUIRED)}, metrics, param.*)")
    return frame


def number(text: Any) -> float | None:
    """A ``runs.csv`` cell (read as text) as a finite float, else None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None




def _source(row: pd.Series) -> str:
    """Where the row's run was trained: its own ``imported_from``, else ``<tracking_store>#<run_id>``."""
    return row.get("imported_from") or f"{row['tracking_store']}#{row['run_id']}"


def source_name(source: RunsSource) -> str:
    """How messages name a :data:`RunsSource`."""
    return str(source.attrs.get("source", "rows of a runs.csv")) if isinstance(source, pd.DataFrame) else str(source)


def import_runs(uri: str, parent_run_id: str, path: RunsSource, plan_trials: Collection[str] | None = None) -> int:
    """Log the rows of ``path`` (a ``runs.csv``, or rows :func:`read_runs_csv` read from one, e.g. a selection of
    them) missing from ``uri`` as FINISHED trial runs under
    ``parent_run_id``; returns how many were imported. ``plan_trials``: an ablation's trials
    (:func:`.plan.trial_key` of ``(variant, seed)``, the variant ``<model>/<variant>`` in a spec with a
    ``models`` block): only their rows are imported, tagged with ``model`` as the study's own runs are; rows of
    another ``--models`` / ``--variants`` / seed selection (another parent run) are left for that selection's
    own resume. None (a search): every row."""
    from mlflow.entities import Metric, Param, RunTag

    from .plan import trial_key
    from .spec import MODEL_SEPARATOR

    frame = path if isinstance(path, pd.DataFrame) else read_runs_csv(path)
    client = _client(uri)
    parent = client.get_run(parent_run_id)
    experiment_id = parent.info.experiment_id
    known = search_all_runs(client, [experiment_id], "tags.role = 'trial'")
    present = {r.info.run_id for r in known} | {r.data.tags.get(IMPORT_TAG) for r in known}
    searched = parent.data.tags.get("kind") == "tune"
    with_models = plan_trials is not None and any(MODEL_SEPARATOR in key for key in plan_trials)
    imported = 0
    for _, row in frame.iterrows():
        if row["run_id"] in present or _source(row) in present:
            continue
        full = f"{row['model']}{MODEL_SEPARATOR}{row['variant']}"
        planned_as = trial_key(full if with_models else row["variant"], row["seed"])
        if plan_trials is not None and planned_as not in plan_trials:
            continue
        tags = {"mlflow.parentRunId": parent_run_id, "parent_run": parent_run_id, "role": "trial",
                "variant": "trial" if searched else row["variant"], "seed": str(row["seed"]),
                IMPORT_TAG: _source(row), **{t: row[t] for t in PROVENANCE_TAGS if row.get(t)},
                **({"model": row["model"]} if with_models and row.get("model") else {})}
        run_name = row["variant"] if searched else f"{full}/seed{row['seed']}"
        run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        epoch = number(row.get("epoch", "")) or 0.0
        now = int(time.time() * 1000)
        metrics = [Metric(column, value, now, int(epoch)) for column, text in row.items()
                   if is_record_column(str(column)) and (value := number(text)) is not None]
        logged = {str(c)[len("param."):]: str(text) for c, text in row.items()
                  if str(c).startswith("param.") and not (isinstance(text, float) and math.isnan(text))}
        params = [Param(key, text) for key, text in upgrade_params(logged).items()]  # old names: ddrm.legacy
        for start in range(0, max(len(metrics), len(params), 1), 100):
            client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100],
                             tags=[RunTag("imported", "true")] if start == 0 else [])
        client.set_terminated(run_id, status="FINISHED")
        present.add(_source(row))
        imported += 1
    return imported
