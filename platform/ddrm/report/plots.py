"""PNG plots of a report (matplotlib, Agg backend):

- ``bars.png``: grouped bars of test R@20 and N@20 per variant, one bar colour per model, error bars =
  std over seeds (Fig. 4/5, Table 3 style ablations);
- ``vs_<key>.png`` for every numeric config key that the runs sweep (``data.noise_ratio`` for Fig. 3,
  ``ddrm.steps``/``ddrm.noise_scale``/... for Fig. 6): the metric (mean ± std over seeds) against the
  key's value, with every *other* swept numeric key held at its most common value (one-at-a-time
  sensitivity), one line per model and setting of the remaining varying keys. Noise-AUC diagnostics are
  added as a panel when present.

A search's plots (``validation_only``, or runs without test metrics) draw the validation metrics of the selected
epoch (``best_recall_at_20``, ``best_ndcg_at_20``) instead: its trials score no test split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..stats import mean_std

LINE_METRICS = ("test_recall_at_20", "test_ndcg_at_20")
VALID_LINE_METRICS = ("best_recall_at_20", "best_ndcg_at_20")  # a search's: validation at the selected epoch
LABELS = {"test_recall_at_20": "test Recall@20", "test_ndcg_at_20": "test NDCG@20",
          "best_recall_at_20": "valid Recall@20 (selected epoch)", "best_ndcg_at_20": "valid NDCG@20 (selected epoch)"}


def _as_float(value: object) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "none", "null", ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def varying_params(frame: pd.DataFrame) -> list[str]:
    """Config keys (``param.*`` columns, seed excluded) with more than one value across the runs."""
    return [c for c in frame.columns if c.startswith("param.") and c != "param.seed"
            and frame[c].astype(str).nunique() > 1]


def swept_numeric(frame: pd.DataFrame) -> list[str]:
    """Varying keys whose every value is a number (at least two distinct numbers) and that vary within one
    model's runs: a per-model setting (SGL's ``ddrm.noise_scale`` beside LightGCN's) is not a sweep."""
    keys = []
    for column in varying_params(frame):
        values = [_as_float(v) for v in frame[column]]
        if not (all(v is not None for v in values) and len(set(values)) >= 2):
            continue
        if "model" in frame.columns and frame[column].astype(str).groupby(frame["model"]).nunique().max() < 2:
            continue
        keys.append(column)
    return keys


def _mean_std_by(grouped) -> pd.DataFrame:
    """``mean``/``std`` per group of a grouped Series by :func:`ddrm.stats.mean_std` (one seed: std NaN, drawn
    without an error bar)."""
    rows = {key: mean_std(values) for key, values in grouped}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "std"], dtype=float)


def _mode(series: pd.Series) -> str:
    return series.astype(str).value_counts().index[0]


def _bars(frame: pd.DataFrame, path: Path, line_metrics: tuple[str, ...] = LINE_METRICS) -> None:
    import matplotlib.pyplot as plt

    metrics = [m for m in line_metrics if m in frame.columns]
    variants = list(dict.fromkeys(frame["variant"]))
    models = list(dict.fromkeys(frame["model"]))
    width = 0.8 / len(models)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5, 1.2 * len(variants)) * len(metrics) / 1.5, 4),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, model in enumerate(models):
            stats = _mean_std_by(frame[frame["model"] == model].groupby("variant", sort=False)[metric])
            stats = stats.reindex(variants)
            x = np.arange(len(variants)) + (k - (len(models) - 1) / 2) * width
            ax.bar(x, stats["mean"], width, yerr=stats["std"].fillna(0.0), capsize=3, label=model)
        lows = frame[metric].min()
        ax.set_ylim(bottom=max(0.0, lows * 0.9))
        ax.set_xticks(np.arange(len(variants)), variants, rotation=30, ha="right")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _series_name(label, group: pd.DataFrame, series_keys: list[str]) -> str:
    """Legend text of one line: the model plus what its variants share by name (``r10_ddrm``, ``r20_ddrm``
    -> ``ddrm``), else the settings of the other varying keys."""
    label = label if isinstance(label, tuple) else (label,)
    variants = [str(v) for v in group["variant"].unique()] if "variant" in group.columns else []
    shared = ""
    if len(variants) > 1:  # the common suffix, without the sweep value it starts with ("0_ddrm" -> "ddrm")
        shared = os.path.commonprefix([v[::-1] for v in variants])[::-1].lstrip("_-. 0123456789")
    if shared:
        return f"{label[0]}, {shared}"
    return ", ".join([str(label[0])] + [f"{k.removeprefix('param.')}={v}" for k, v in zip(series_keys[1:], label[1:])])


def _distinct_lines(series: list[tuple[str, pd.DataFrame]], metric: str) -> list[tuple[list[str], pd.DataFrame]]:
    """Per-x mean/std of ``metric`` for each series; series with identical points are merged into one line
    (e.g. a backend diagnostic shared by every variant on that backend), so none hides another unseen."""
    lines: list[tuple[list[str], pd.DataFrame]] = []
    for name, group in series:
        stats = _mean_std_by(group.groupby("_x")[metric]).dropna(subset=["mean"]).sort_index()
        if stats.empty:
            continue
        twin = next((names for names, seen in lines if seen.index.equals(stats.index)
                     and seen.fillna(-1.0).equals(stats.fillna(-1.0))), None)
        if twin is not None:
            twin.append(name)
        else:
            lines.append(([name], stats))
    return lines


def _lines(frame: pd.DataFrame, key: str, others: list[str], path: Path,
           line_metrics: tuple[str, ...] = LINE_METRICS) -> bool:
    """Draw ``path``; False (nothing written) when no run holds every other swept key at its most common value
    with a metric to plot (e.g. a search that varies many keys at once)."""
    import matplotlib.pyplot as plt

    subset = frame
    for other in [k for k in swept_numeric(frame) if k != key]:
        subset = subset[subset[other].astype(str) == _mode(frame[other])]
    if subset.empty or not any(m in subset.columns and subset[m].notna().any() for m in line_metrics):
        return False
    series_keys = ["model"] + [k for k in others if k != key and subset[k].astype(str).nunique() > 1]
    metrics = [m for m in line_metrics if m in subset.columns]
    metrics += [c for c in sorted(subset.columns) if c.startswith("diag_") and c.endswith("noise_auc")
                and subset[c].notna().any()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    subset = subset.assign(_x=[_as_float(v) for v in subset[key]])
    series = [(_series_name(label, group, series_keys), group)
              for label, group in subset.groupby(series_keys, sort=False)]
    colours = {name: f"C{i % 10}" for i, (name, _) in enumerate(series)}  # one colour per series, every panel
    for ax, metric in zip(axes[0], metrics):
        for names, stats in _distinct_lines(series, metric):
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3,
                        label=" = ".join(names), color=colours[names[0]])
        xs = subset["_x"].to_numpy(dtype=float)
        if xs.min() > 0 and xs.max() / xs.min() >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(key.removeprefix("param."))
        ax.set_ylabel(LABELS.get(metric, metric.removeprefix("diag_")))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_plots(frame: pd.DataFrame, out: Path, validation_only: bool = False) -> list[Path]:
    """Write ``bars.png`` and one ``vs_<key>.png`` per swept numeric key; return the paths. ``validation_only``
    (a search), or runs without test metrics: the plots are of validation metrics (:data:`VALID_LINE_METRICS`)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    line_metrics = LINE_METRICS
    if validation_only or not any(m in frame.columns for m in LINE_METRICS):
        line_metrics = VALID_LINE_METRICS
    if any(m in frame.columns for m in line_metrics):
        _bars(frame, out / "bars.png", line_metrics)
        written.append(out / "bars.png")
        others = varying_params(frame)
        for key in swept_numeric(frame):
            path = out / f"vs_{key.removeprefix('param.')}.png"
            if _lines(frame, key, others, path, line_metrics):
                written.append(path)
    return written
