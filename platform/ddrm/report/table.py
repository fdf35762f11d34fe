"""Mean ± std over seeds per (model, variant), with a paired t-test against a reference variant.

For each (model, variant) row other than the reference and each metric, the seeds the row shares with
``(model, reference)`` are paired and ``scipy.stats.ttest_rel`` is applied; a ``*`` marks p < ``alpha``
(default 0.01, DESIGN §3). Fewer than two shared seeds give no test (p empty), and neither does a difference
that is the same on every seed (two deterministic rows, e.g. ItemKNN against EASE: exact, not a seed effect).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ttest_rel

from ..host import HOST_TAGS
from ..metrics import DIAG, REPORT_METRICS, TEST
from ..stats import format_mean_std, mean_std

TABLE_METRICS = tuple(TEST + m for m in REPORT_METRICS)  # test_recall_at_10, ...
SHORT = {TEST + m: m.replace("recall_at_", "R@").replace("ndcg_at_", "N@") for m in REPORT_METRICS}


def diagnostic_metrics(frame: pd.DataFrame) -> list[str]:
    """The ``diag_*`` columns present (denoising diagnostics, known-noise data only)."""
    return sorted(c for c in frame.columns if c.startswith(DIAG) and frame[c].notna().any())


def paired_p_value(row: pd.DataFrame, reference: pd.DataFrame, metric: str) -> float:
    """Two-sided paired t-test p over the shared seeds; NaN when fewer than two seeds are shared."""
    paired = row[["seed", metric]].merge(reference[["seed", metric]], on="seed", suffixes=("", "_ref")).dropna()
    if len(paired) < 2:
        return float("nan")
    diff = paired[metric].to_numpy() - paired[f"{metric}_ref"].to_numpy()
    if np.allclose(diff, 0.0):
        return 1.0  # identical on every seed: no difference at all (scipy would give NaN)
    if np.allclose(diff, diff[0]):
        return float("nan")  # the same difference on every seed (deterministic rows): exact, not a seed test
    return float(ttest_rel(paired[metric], paired[f"{metric}_ref"]).pvalue)


def reference_first(frame: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """Rows reordered so each model's ``reference`` variant comes first; models and the other variants keep
    their first-seen order (rows added by a later study land after the reference row, not before it)."""
    if not reference or frame.empty:
        return frame
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(frame["model"]))}
    keys = pd.DataFrame({"model": frame["model"].map(model_rank), "other": frame["variant"] != reference},
                        index=frame.index)
    order = keys.sort_values(["model", "other"], kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def parse_baseline(text: str | None) -> tuple[str, str] | None:
    """``"ease/tuned"`` -> ``("ease", "tuned")``: the (model, variant) row every other row is also tested against."""
    if not text:
        return None
    model, _, variant = text.rpartition("/")
    return model, variant


def summarize(frame: pd.DataFrame, reference: str | None = None,
              metrics: tuple[str, ...] | list[str] | None = None,
              baseline: tuple[str, str] | None = None) -> pd.DataFrame:
    """One row per (model, variant) in first-seen order: ``n_seeds``, ``seeds``, ``<m>_mean/_std/_p``, and with a
    ``baseline`` (model, variant) also ``<m>_p_baseline``: the paired test of every other row against that row
    (e.g. each tuned model against the best simple baseline)."""
    metrics = [m for m in (metrics or TABLE_METRICS) if m in frame.columns]
    base_rows = (frame[(frame["model"] == baseline[0]) & (frame["variant"] == baseline[1])]
                 if baseline else None)
    rows = []
    for (model, variant), group in frame.groupby(["model", "variant"], sort=False):
        ref = frame[(frame["model"] == model) & (frame["variant"] == reference)] if reference else None
        replayed = group["reused_from"].fillna("").astype(str).ne("") if "reused_from" in group else []
        row = {"model": model, "variant": variant, "n_seeds": len(group),
               "seeds": " ".join(str(s) for s in sorted(group["seed"])), "n_replayed": int(sum(replayed))}
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(group[metric])  # one seed: std NaN
            has_test = ref is not None and len(ref) and variant != reference
            row[f"{metric}_p"] = paired_p_value(group, ref, metric) if has_test else float("nan")
            if base_rows is not None:
                is_base = (model, variant) == tuple(baseline)
                row[f"{metric}_p_baseline"] = (paired_p_value(group, base_rows, metric)
                                               if len(base_rows) and not is_base else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


MIN_SHARED_SEEDS = 2  # a paired t-test needs two pairs at least


def pairwise(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Every pair of variants within a model (``a`` after ``b`` in first-seen order) that shares at least
    ``MIN_SHARED_SEEDS`` seeds, per metric: the mean difference ``a − b`` over the seeds they share, how many,
    and the paired t-test p (:func:`paired_p_value`); one row each — the tests a reader asks for beyond the
    reference (e.g. DDRM against the mean of liked items). Pairs with fewer shared seeds have no paired test
    and are left out: a search's trials (each its own seed) give none, instead of thousands of empty rows."""
    rows = []
    for model, rows_of_model in frame.groupby("model", sort=False):
        groups = list(rows_of_model.groupby("variant", sort=False))
        for i, (variant_a, a) in enumerate(groups):
            for variant_b, b in groups[:i]:
                for metric in metrics:
                    paired = a[["seed", metric]].merge(b[["seed", metric]], on="seed").dropna()
                    if len(paired) < MIN_SHARED_SEEDS:
                        continue
                    diff = (paired[f"{metric}_x"] - paired[f"{metric}_y"]).mean()
                    rows.append({"model": model, "a": variant_a, "b": variant_b, "metric": metric,
                                 "mean_diff": diff, "n_seeds": len(paired), "p": paired_p_value(a, b, metric)})
    return pd.DataFrame(rows, columns=["model", "a", "b", "metric", "mean_diff", "n_seeds", "p"])


def _cell(row: pd.Series, metric: str, alpha: float) -> str:
    if np.isnan(row[f"{metric}_mean"]):
        return "–"
    star = "*" if row[f"{metric}_p"] < alpha else ""
    star += "†" if row.get(f"{metric}_p_baseline", float("nan")) < alpha else ""
    return format_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"]) + star  # one seed: the value alone


def markdown(summary: pd.DataFrame, metrics: list[str], reference: str | None, alpha: float = 0.01) -> str:
    """The Markdown table (mean ± std, ``*`` = significant vs the reference)."""
    names = [SHORT.get(m, m.removeprefix(DIAG)) for m in metrics]
    lines = ["| model | variant | seeds | " + " | ".join(names) + " |", "|" + "---|" * (len(metrics) + 3)]
    for _, row in summary.iterrows():
        if all(np.isnan(row[f"{m}_mean"]) for m in metrics):
            continue  # e.g. diagnostics of a run without known noise
        variant = f"{row['variant']} (reference)" if row["variant"] == reference else row["variant"]
        seeds = f"{row['n_seeds']}" + (f" ({row['n_replayed']} replayed)" if row.get("n_replayed", 0) else "")
        lines.append(f"| {row['model']} | {variant} | {seeds} | "
                     + " | ".join(_cell(row, m, alpha) for m in metrics) + " |")
    return "\n".join(lines)


def hosts_line(frame: pd.DataFrame) -> str | None:
    """``Measured on: <cpu> (<kernel ISA>, torch <v>): n runs; ...`` from the runs' host tags, or None when no
    run has them (stores written before runs were tagged). Runs without them (replayed, older) are counted."""
    if not set(HOST_TAGS) <= set(frame.columns):
        return None
    hosts = frame[list(HOST_TAGS)].fillna("").astype(str)
    known = hosts["cpu_model"].ne("")
    if not known.any():
        return None
    counts = hosts[known].value_counts(sort=False)
    parts = [f"{cpu} ({isa}, torch {version}): {n} run{'s' if n != 1 else ''}"
             for (cpu, isa, version), n in sorted(counts.items())]
    if (~known).any():
        parts.append(f"not recorded (replayed or older runs): {int((~known).sum())}")
    return "Measured on: " + "; ".join(parts) + "."


def write_tables(frame: pd.DataFrame, out: Path, reference: str | None = None, alpha: float = 0.01,
                 title: str = "", baseline: tuple[str, str] | None = None) -> str:
    """Write ``table.md`` (test metrics, then diagnostics when present), ``table.csv`` and ``pairs.csv`` (every
    within-model pair of variants tested, :func:`pairwise`); return the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in TABLE_METRICS if m in frame.columns]
    diagnostics = diagnostic_metrics(frame)
    summary = summarize(frame, reference, metrics + diagnostics, baseline)
    parts = [f"# {title}\n" if title else "", "Test metrics, mean ± std over seeds (sample std; a value without "
             "± comes from one seed).",
             (f"`*`: paired t-test over the shared seeds against the `{reference}` row of the same model, "
              f"p < {alpha:g}." if reference else "No reference variant: no significance test."),
             *([f"`†`: paired t-test over the shared seeds against `{baseline[0]}/{baseline[1]}`, p < {alpha:g}."]
               if baseline else []),
             "`(k replayed)`: k of the seeds were replayed by `--reuse-from` from an identical earlier run "
             "(same config and code fingerprint; runs.csv names the source).",
             *([line] if (line := hosts_line(frame)) else []), "",
             markdown(summary, metrics, reference, alpha)]
    if diagnostics:
        parts += ["", "Denoising diagnostics on the injected training pairs (see `ddrm.diagnostics`): noise_auc = "
                  "P(clean pair scored above injected pair); top20_share = injected share of the unmasked top-20.",
                  "", markdown(summary, diagnostics, reference, alpha)]
    text = "\n".join(parts).lstrip("\n") + "\n"
    (out / "table.md").write_text(text)
    summary.to_csv(out / "table.csv", index=False, float_format="%.6g")
    pairwise(frame, metrics).to_csv(out / "pairs.csv", index=False, float_format="%.6g")
    return text
