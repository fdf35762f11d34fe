"""The metrics vocabulary: ranking-metric names, the selection metric and the stage prefixes.

A trial's numbers travel under five prefixes, written and read only through the helpers here:

- ``valid_<m>``: a validation metric of one evaluation (MLflow step = epoch); Tune reports it bare (``<m>``),
  the name its scheduler and searcher select on;
- ``best_<m>``: the validation metric of the epoch chosen on :data:`SELECTION_METRIC` (``best_epoch`` is that
  epoch, not a metric of it);
- ``test_<m>``: the test metric at that epoch — only in the final report of a trial that scores test (an
  ablation's; a search's trials never compute test: they choose on validation);
- ``diag_<m>``: noise diagnostics of the final model (known-noise data);
- ``cost_<m>``: what the trial cost so far (:data:`COST_METRICS`: wall and process CPU seconds, trial-epochs;
  the final report adds ``cost_backend_from_cache``) — with every evaluation, so a trial a scheduler stops keeps
  its cost up to there.

A final report is the one that carries ``best_epoch`` (Tune also marks a scheduler-stopped evaluation ``done``).
Pure: no torch, Ray or MLflow.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

CUTOFFS: tuple[int, ...] = (10, 20, 50, 100)  # what evaluation computes (DEFAULT_KS)
RANKING_KINDS = ("recall", "ndcg")
SELECTION_METRIC = "recall_at_20"  # every stage picks its epoch by it; searches default to it
REPORT_METRICS = ("recall_at_10", "recall_at_20", "ndcg_at_10", "ndcg_at_20")  # the tables' columns

VALID, BEST, TEST, DIAG, COST = "valid_", "best_", "test_", "diag_", "cost_"
FINAL_PREFIXES = (TEST, BEST, DIAG, COST)  # what a final report adds to a trial's run
BEST_EPOCH = "best_epoch"
# a run's cost (ddrm.loop.RunCost's fields with COST): MLflow metrics of each trial run and runs.csv columns
COST_WALL, COST_CPU, COST_EPOCHS, COST_FROM_CACHE = (COST + f for f in ("wall_seconds", "cpu_seconds", "epochs",
                                                                         "backend_from_cache"))
COST_METRICS = (COST_WALL, COST_CPU, COST_EPOCHS, COST_FROM_CACHE)


def metric_name(kind: str, k: int) -> str:
    """``recall_at_20`` style names (MLflow forbids '@')."""
    return f"{kind}_at_{k}"


def is_ranking(name: str) -> bool:
    """Whether ``name`` is a bare ranking metric (``recall_at_20``), not ``loss``, ``epoch`` or a prefixed one."""
    return name.startswith(tuple(f"{kind}_at_" for kind in RANKING_KINDS))


def add_prefix(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    """``{prefix + name: float(value)}``; ``n_users`` (a count, not a metric) is dropped."""
    return {f"{prefix}{k}": float(v) for k, v in values.items() if k != "n_users"}


def strip_prefix(prefix: str, metrics: Mapping[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    """The metrics named ``prefix + name`` as ``{name: value}`` (``best_epoch`` is not a ``best_`` metric);
    names in ``keep`` come along unchanged."""
    out = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix) and k != BEST_EPOCH}
    out.update({k: metrics[k] for k in keep if k in metrics})
    return out


def is_final(result: Mapping[str, Any]) -> bool:
    """Whether a reported result (or a run's logged metrics) is a trial's final report: it carries ``best_epoch``
    (a record holding only test metrics counts too)."""
    return BEST_EPOCH in result or any(k.startswith(TEST) for k in result)


def finite_numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The loggable numbers of a result: ranking metrics, prefixed metrics, ``loss`` and ``epoch``, finite only."""
    out = {}
    for key, value in metrics.items():
        if is_ranking(key) or key.startswith((*FINAL_PREFIXES, VALID)) or key in ("loss", "epoch"):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[key] = float(value)
    return out


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """What one evaluation logs: its ranking metrics as ``valid_<m>``, plus ``loss``/``epoch`` and the cost so far
    (``cost_*``; no ``best_``)."""
    numbers = finite_numbers(result)
    return {(VALID + k if is_ranking(k) else k): v for k, v in numbers.items() if not k.startswith(BEST)}


def final_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """What a final report logs: its ``test_`` (where scored), ``best_``, ``diag_`` and ``cost_`` metrics."""
    return {k: v for k, v in finite_numbers(result).items() if k.startswith(FINAL_PREFIXES)}


def is_record_column(name: str) -> bool:
    """Whether a logged metric is a column of a study's per-run record (``runs.csv``): ``epoch``, the final
    report's metrics (the cost included) and the last validation values."""
    return name == "epoch" or name.startswith((*FINAL_PREFIXES, VALID))


def final_from_logged(logged: Mapping[str, float], last_epoch: int) -> dict[str, Any]:
    """A final report rebuilt from a run's logged final metrics (:func:`final_metrics`): those, the selected
    epoch's validation metrics bare (from ``best_``), ``epoch`` and ``done`` — what the trainable reported."""
    final = {k: float(v) for k, v in logged.items() if k.startswith(FINAL_PREFIXES)}
    final.update(strip_prefix(BEST, final))
    return {**final, "epoch": last_epoch, "done": True}


def epoch_from_logged(logged: Mapping[str, float]) -> dict[str, float]:
    """One evaluation as reported, from the values logged at its step (:func:`epoch_metrics` reversed)."""
    return {(k[len(VALID):] if k.startswith(VALID) else k): v for k, v in logged.items()}
