"""What the commands print and write: a metrics table, an atomic JSON write, a writable-folder check."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .metrics import CUTOFFS, REPORT_METRICS, metric_name

# the table's rows: the report metrics, then the other cutoffs evaluation computes
METRIC_ROWS = tuple(dict.fromkeys([*REPORT_METRICS, *(metric_name(kind, k) for k in CUTOFFS
                                                      for kind in ("recall", "ndcg"))]))


def format_metrics(result: dict[str, dict[str, float]]) -> str:
    """A small fixed-width table: rows = metrics, columns = the given result columns."""
    columns = list(result)
    width = max([10] + [len(c) for c in columns]) + 2
    lines = [f"{'metric':<14}" + "".join(f"{c:>{width}}" for c in columns)]
    for row in METRIC_ROWS:
        if all(row in result[c] for c in columns):
            lines.append(f"{row:<14}" + "".join(f"{result[c][row]:>{width}.4f}" for c in columns))
    return "\n".join(lines)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)
    os.replace(tmp, path)


def _check_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` and a scratch file in it; a ConfigError naming ``flag`` when that fails."""
    from .errors import ConfigError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ddrm-write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {folder}: cannot write there ({exc.strerror or exc})") from None


