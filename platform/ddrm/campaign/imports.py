"""An earlier search imported into a campaign stage: the rows of its ``runs.csv`` that are the stage's experiment.

A row is the same experiment as the stage when its validated config (new shape; an old-shape row is read through
:mod:`ddrm.legacy` by :func:`ddrm.report.runs.config_of`) equals the stage's base config (after ``inherit``) on
every key the stage does not search, ``data.dir`` and ``train.threads`` aside (where it ran, not what it
computed); its seed is the search's; and its searched values lie in the stage's space. Numbers compare to the 8
significant digits a ``runs.csv`` keeps. A grid takes one row per point, a TPE search at most its budget. Kept
rows lose every column of the test split: a search chooses on validation, and nothing the campaign records for a
search shows a test metric. The file itself is only read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Config, apply_overrides, config_from_dict
from ..errors import ConfigError
from ..metrics import BEST, COST, DIAG, TEST, VALID
from ..tuning.spec import SearchSpec

RUNTIME_KEYS = ("data.dir", "train.threads")  # where a trial ran, not what it computed
REL_TOL = 1e-6  # runs.csv writes floats with 8 significant digits


def is_test_column(name: str) -> bool:
    """Whether a ``runs.csv`` column holds a metric of the test split (``test_*``, ``best_test_*`` ...)."""
    return name.startswith(TEST) or any(name.startswith(prefix + TEST) for prefix in (BEST, VALID, DIAG, COST))


def same_value(a: Any, b: Any) -> bool:
    """Config values equal, floats to :data:`REL_TOL` and lists element-wise."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    numbers = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)]
    if all(numbers):
        return math.isclose(a, b, rel_tol=REL_TOL)
    return not any(numbers) and a == b


def in_space(value: Any, dist: dict[str, Any]) -> bool:
    """Whether ``value`` is one the stage's search could have sampled from ``dist``."""
    if dist["type"] == "choice":
        return any(same_value(value, choice) for choice in dist["values"])
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    low, high = dist["low"], dist["high"]
    if dist["type"] == "randint":
        return isinstance(value, int) and low <= value < high
    inside = (low <= value or math.isclose(value, low, rel_tol=REL_TOL))
    return inside and (value <= high or math.isclose(value, high, rel_tol=REL_TOL))


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _keys(keys: list[str], most: int = 6) -> str:
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


@dataclass
class Selection:
    """What one stage takes from an earlier search's ``runs.csv``."""

    source: str  # the file, as committed files name it
    rows: pd.DataFrame  # the kept rows, without test columns
    total: int  # rows in the file
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> rows

    def record(self) -> dict[str, Any]:
        """The stage's entry in ``campaign.json``."""
        return {"file": self.source, "rows": len(self.rows), "rows_in_file": self.total,
                "left_out": dict(self.left_out)}

    def line(self, stage: str) -> str:
        """The one line the campaign prints for the stage."""
        text = (f"stage {stage}: importing {len(self.rows)} of {self.total} rows of {self.source} (test columns "
                f"dropped); {sum(self.left_out.values())} left out")
        return text + ("".join(f"; {n}: {why}" for why, n in self.left_out.items()) if self.left_out else "")


class _Reasons:
    """Left-out rows grouped by reason (its key), each reason shown with its first row's example."""

    def __init__(self) -> None:
        self.groups: dict[str, list] = {}

    def add(self, key: str, example: str = "") -> None:
        group = self.groups.setdefault(key, [0, example])
        group[0] += 1

    def counts(self) -> dict[str, int]:
        return {key + (f" (e.g. {example})" if example else ""): n for key, (n, example) in self.groups.items()}


def stage_base(search: SearchSpec) -> dict[str, Any]:
    """The flat validated config every trial of ``search`` shares (its seed included)."""
    return config_from_dict(apply_overrides(search.base, {"seed": search.seeds[0]})).to_flat_dict()


def why_left_out(config: Config, base: dict[str, Any], search: SearchSpec) -> tuple[str, str] | None:
    """``(reason, example)`` when a row's ``config`` is not a trial of ``search`` (``base``: :func:`stage_base`),
    else None."""
    flat = config.to_flat_dict()
    if config.seed not in search.seeds:
        return f"seed {config.seed}, not the search's {list(search.seeds)}", ""
    outside = [key for key, dist in search.space.items() if key not in flat or not in_space(flat[key], dist)]
    if outside:
        key = outside[0]
        return f"outside the stage's space on {_keys(outside)}", f"{key} {_show(flat.get(key))}"
    fixed = (set(flat) | set(base)) - set(search.space) - set(RUNTIME_KEYS) - {"seed"}
    differ = sorted(k for k in fixed if k not in flat or k not in base or not same_value(flat[k], base[k]))
    if differ:
        key = differ[0]
        return (f"not the stage's experiment: {_keys(differ)} differ from its base",
                f"{key} {_show(flat.get(key))} here, {_show(base.get(key))} in the stage")
    return None


def select_rows(path: str | Path, search: SearchSpec, source: str | None = None) -> Selection:
    """The rows of ``path`` that are trials of ``search`` (see the module docstring), test columns dropped."""
    from ..report.runs import config_of
    from ..tuning.importer import read_runs_csv

    frame = read_runs_csv(path)
    base = stage_base(search)
    reasons, kept, points = _Reasons(), [], set()
    objective = (BEST + search.metric, VALID + search.metric)
    for index, row in frame.iterrows():
        if not any(row.get(column, "") for column in objective):
            reasons.add(f"no validation {search.metric}")
            continue
        try:
            config = config_from_dict(config_of(row))
        except ConfigError as exc:
            reasons.add("its config does not validate", str(exc))
            continue
        why = why_left_out(config, base, search)
        if why is not None:
            reasons.add(*why)
            continue
        if search.mode == "grid":
            flat = config.to_flat_dict()
            point = repr([flat[key] for key in search.space] + [config.seed])
            if point in points:
                reasons.add("repeats a grid point already imported")
                continue
            points.add(point)
        elif len(kept) >= search.num_samples:
            reasons.add(f"over the budget of {search.num_samples} trials")
            continue
        kept.append(index)
    rows = frame.loc[kept, [c for c in frame.columns if not is_test_column(str(c))]].reset_index(drop=True)
    label = source or str(path)
    rows.attrs["source"] = label
    return Selection(source=label, rows=rows, total=len(frame), left_out=reasons.counts())
