"""Mean ± std over seeds: the one rule every table, study summary and plot of the platform uses.

The spread is the *sample* standard deviation (``ddof=1``). Missing values (NaN, ``None``: a seed without that
metric) are dropped first. **One seed has no sample std: it is undefined, never 0** — NaN in numbers (an empty
cell in a CSV, no error bar in a plot), ``None`` in JSON-bound dicts (``null``: JSON has no NaN), and in text the
mean alone, without ``±``. With no value at all the mean is undefined as well. Pure: numpy only.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

NO_VALUE = "–"  # the text of an undefined mean


def finite_values(values: Iterable[float | None]) -> np.ndarray:
    """``values`` as floats with the missing ones (``None``, NaN) dropped."""
    return np.asarray([float(v) for v in values if v is not None and not math.isnan(float(v))], dtype=float)


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """``(mean, sample std)`` of the non-missing ``values``; std NaN for one value, both NaN for none."""
    kept = finite_values(values)
    if len(kept) == 0:
        return float("nan"), float("nan")
    mean = float(kept.mean())
    return mean, (float(kept.std(ddof=1)) if len(kept) > 1 else float("nan"))


def json_number(value: float) -> float | None:
    """``value`` for a JSON document: NaN (undefined) becomes ``None`` (``null``)."""
    return None if math.isnan(value) else float(value)


def seed_stats(values: Iterable[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of the non-missing ``values``, JSON-ready: undefined entries are ``None``."""
    kept = finite_values(values)
    mean, std = mean_std(kept)
    return {"mean": json_number(mean), "std": json_number(std), "values": kept.tolist()}


def format_mean_std(mean: float | None, std: float | None, digits: int = 4) -> str:
    """``"0.1234 ± 0.0012"``; the mean alone when std is undefined (one seed); ``"–"`` when the mean is."""
    if mean is None or math.isnan(mean):
        return NO_VALUE
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
