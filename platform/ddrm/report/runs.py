"""Every number traceable: ``runs.csv`` (one row per run) and a search's ``best_config.yaml``.

``runs.csv`` columns: ``model, variant, seed, run_id, tracking_store, git_commit, code_fingerprint, reused_from,
imported_from, cpu_model, cpu_capability, torch_version`` (the host a trained run ran on; empty for a replayed
one), ``device, trial_cpus, trial_gpus`` (its torch device and the CPU / GPU shares Ray assigned it; empty for
a replayed run or one logged before they were recorded), ``epoch`` (the last evaluated), every final metric
(``test_*`` — none for a search, whose trials score no test —, ``best_*``, ``diag_*``), the run's cost (``cost_wall_seconds``, ``cost_cpu_seconds``, ``cost_epochs``,
``cost_backend_from_cache``; a replayed run's are its source's: ``reused_from`` says so), the last logged
validation metrics (``valid_*``; for a trial ASHA stopped, the value it was judged on) and every param
(``param.<dotted key>``) — everything a study needs to continue from the file alone (``--import-runs``).
Paths are written relative to the working directory (the repository when run from its root), never absolute.

``best_config.yaml``: the config of the trial with the highest validation objective (``best_<metric>``, the
validation metrics of the selected epoch) among trials that finished training (validation only: test is not
computed in a search; rerun the config, or put it in an ablation, for test), as a nested config that
``ddrm train --config`` accepts (``data.dir`` left out: pass ``--data-dir``; ``train.threads`` set to the
study's threads per trial when the trial left it unset, so the rerun rounds floats the same way).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..config import config_from_dict, parse_value
from ..host import HOST_TAGS, PLACEMENT_COLUMNS
from ..metrics import BEST, is_record_column

ID_COLUMNS = ("model", "variant", "seed", "run_id", "tracking_store", "git_commit", "code_fingerprint",
              "reused_from", "imported_from", *HOST_TAGS, *PLACEMENT_COLUMNS)


def relative_uri(uri: str) -> str:
    """A ``sqlite:///`` URI or a path made relative to the working directory (other URIs unchanged)."""
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + relative_path(uri[len("sqlite:///"):])
    return uri


def relative_path(path: str) -> str:
    """``path`` relative to the working directory (``./x`` style without the dot), or unchanged if relative."""
    return os.path.relpath(path) if os.path.isabs(path) else path


def relative_source(value: Any) -> Any:
    """A provenance tag ``<tracking URI>#<run id>`` (``reused_from``, ``imported_from``) with its URI made relative."""
    if not isinstance(value, str) or "#" not in value:
        return value
    source, run_id = value.rsplit("#", 1)
    return f"{relative_uri(source)}#{run_id}"


def runs_table(frame: pd.DataFrame, uri: str) -> pd.DataFrame:
    """The ``runs.csv`` frame: id columns, final metrics, params (sorted within each group)."""
    out = frame.copy()
    out["tracking_store"] = relative_uri(uri)
    for column in ID_COLUMNS:
        if column not in out.columns:
            out[column] = ""
    metrics = (["epoch"] if "epoch" in out.columns else []) + sorted(
        c for c in out.columns if is_record_column(c) and c != "epoch")
    params = sorted(c for c in out.columns if c.startswith("param."))
    for column in ("reused_from", "imported_from"):  # provenance: no machine's absolute path in a committed file
        out[column] = out[column].map(relative_source)
    if "param.data.dir" in out.columns:
        out["param.data.dir"] = out["param.data.dir"].map(
            lambda v: relative_path(v) if isinstance(v, str) and v not in ("", "None") else v)
    return out[list(ID_COLUMNS) + metrics + params]


def write_runs_csv(frame: pd.DataFrame, out: Path, uri: str) -> Path:
    """Write ``out/runs.csv`` (see the module docstring); returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.csv"
    runs_table(frame, uri).to_csv(path, index=False, float_format="%.8g")
    return path


def _param_value(text: Any) -> Any:
    """A runs.csv cell of a logged param back to its value (:func:`ddrm.config.parse_value`; empty cells: None)."""
    if not isinstance(text, str):
        return None if pd.isna(text) else text
    return parse_value(text)


def config_of(row: pd.Series) -> dict[str, Any]:
    """The nested, validated config of one run row (from its ``param.*`` columns), without ``data.dir``."""
    nested: dict[str, Any] = {}
    for column, value in row.items():
        if not str(column).startswith("param.") or (isinstance(value, float) and pd.isna(value)):
            continue
        key = str(column)[len("param."):]
        if key == "data.dir":
            continue
        if "." in key:
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = _param_value(value)
        else:
            nested[key] = _param_value(value)
    config = config_from_dict(nested).to_dict()
    config["data"].pop("dir", None)
    return config


def best_run(frame: pd.DataFrame, metric: str = "recall_at_20") -> pd.Series | None:
    """The row with the highest ``best_<metric>`` (validation at the selected epoch) among runs that trained to the
    end (they logged ``best_*``; a trial a scheduler stopped did not). Test metrics play no part."""
    objective = BEST + metric
    if objective not in frame.columns:
        return None
    done = frame[frame[objective].notna()]
    if done.empty:
        return None
    return done.loc[done[objective].idxmax()]


def write_best_config(frame: pd.DataFrame, out: Path, facts: dict[str, Any],
                      metric: str = "recall_at_20") -> Path | None:
    """``out/best_config.yaml`` for a search (parent run tagged ``kind = tune``); None for an ablation or when no
    trial finished training."""
    searched = facts.get("tags", {}).get("kind") == "tune"
    if not searched:
        return None
    row = best_run(frame, metric)
    if row is None:
        return None
    config = config_of(row)
    threads = facts.get("tags", {}).get("threads_per_trial")
    if config["train"]["threads"] is None and threads:  # the trial's torch threads: the same float rounding
        config["train"]["threads"] = int(threads)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "best_config.yaml"
    header = (f"# best trial of the search by validation {metric}: run {row['run_id']} "
              f"(valid {row[f'best_{metric}']:.4f})\n"
              f"# rerun: ddrm train --config {path.as_posix()} --data-dir <datasets>\n")
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path
