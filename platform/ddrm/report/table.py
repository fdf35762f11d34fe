"""Mean ± std over seeds per (model, variant), with paired comparisons against the model's reference row and
against every baseline row, Holm-adjusted over a declared family (DESIGN §4a; :mod:`ddrm.report.significance`).

For each row and metric the seeds the row shares with ``(model, reference)`` and with each baseline are paired:
the mean paired difference, its 95 % t-interval and the paired t-test p. ``*`` marks a Holm-adjusted p <
``alpha`` (default 0.01) against the reference, ``†``, ``‡``, ... against the first, second, ... baseline.
Fewer than two shared seeds give no test (p empty), and neither does a difference that is the same on every seed
(two deterministic rows, e.g. ItemKNN against EASE: exact, not a seed effect). Claims
(:class:`ddrm.tuning.comparisons.Claim`) get a verdict in ``table.md`` and ``claims.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..host import HOST_TAGS
from ..metrics import BEST, DIAG, REPORT_METRICS, TEST
from ..stats import format_mean_std, mean_std
from ..tuning.comparisons import Claim, Family, split_row
from .cost import cost_line
from .significance import (CI_LEVEL, CONTRADICTED, MIN_SHARED_SEEDS, NOT_SHOWN, SUPPORTED, Comparisons, Paired,
                           Row, paired)

TABLE_METRICS = tuple(TEST + m for m in REPORT_METRICS)  # test_recall_at_10, ...
VALID_TABLE_METRICS = tuple(BEST + m for m in REPORT_METRICS)  # a search's table: validation at the chosen epoch
SHORT = {TEST + m: m.replace("recall_at_", "R@").replace("ndcg_at_", "N@") for m in REPORT_METRICS}
SHORT.update({BEST + m: "valid " + SHORT[TEST + m] for m in REPORT_METRICS})
BASELINE_MARKS = ("†", "‡", "§", "¶", "‖", "⁑")  # the first, second, ... baseline's mark


def baseline_marks(n: int) -> list[str]:
    """The marks of ``n`` baselines: :data:`BASELINE_MARKS`, then ``†7``, ``†8``, ..."""
    return [BASELINE_MARKS[i] if i < len(BASELINE_MARKS) else f"†{i + 1}" for i in range(n)]
DIFF_FIELDS = ("diff", "ci_low", "ci_high", "p", "p_holm")  # per comparison in table.csv


def diagnostic_metrics(frame: pd.DataFrame) -> list[str]:
    """The ``diag_*`` columns present (denoising diagnostics, known-noise data only)."""
    return sorted(c for c in frame.columns if c.startswith(DIAG) and frame[c].notna().any())


def paired_p_value(row: pd.DataFrame, reference: pd.DataFrame, metric: str) -> float:
    """Two-sided paired t-test p over the shared seeds (:func:`ddrm.report.significance.paired`): NaN with fewer
    than two shared seeds or a difference that is the same non-zero value on every seed, 1 when it is zero."""
    return paired(row, reference, metric).p


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


def row_name(row: Row) -> str:
    return f"{row[0]}/{row[1]}"


def as_rows(baselines: Sequence[str | Row] | str | None) -> list[Row]:
    """``"ease/tuned,itemknn/tuned"``, a list of such strings or of (model, variant) pairs -> (model, variant)s."""
    if not baselines:
        return []
    items = baselines.split(",") if isinstance(baselines, str) else baselines
    rows = [split_row(b.strip()) if isinstance(b, str) else (b[0], b[1]) for b in items]
    return list(dict.fromkeys(rows))


def _fields(found: tuple[Paired, float] | None) -> list[float]:
    if found is None:
        return [float("nan")] * len(DIFF_FIELDS)
    result, p_holm = found
    return [result.mean_diff, result.ci_low, result.ci_high, result.p, p_holm]


def summarize(frame: pd.DataFrame, reference: str | None = None,
              metrics: tuple[str, ...] | list[str] | None = None,
              baselines: Sequence[str | Row] | str | None = None,
              comparisons: Comparisons | None = None) -> pd.DataFrame:
    """One row per (model, variant) in first-seen order: ``n_seeds``, ``seeds``, ``n_replayed`` and per metric
    ``<m>_mean``/``_std``; against the model's ``reference`` row ``<m>_diff`` (mean paired difference row −
    reference), ``_ci_low``/``_ci_high`` (its 95 % CI), ``_p`` (paired t-test) and ``_p_holm`` (Holm-adjusted
    over the family; empty outside it); against each baseline row ``B`` the same five with ``_vs_<B>`` appended
    (``test_recall_at_20_p_holm_vs_ease/tuned``). ``comparisons``: the :class:`Comparisons` to read (default:
    computed here with the report's default family and no claims)."""
    metrics = [m for m in (metrics or TABLE_METRICS) if m in frame.columns]
    baselines = as_rows(baselines)
    if comparisons is None:
        comparisons = Comparisons(frame, metrics, reference, baselines, within_pairs=False)
    baselines = [b for b in baselines if b in comparisons.groups]
    rows = []
    for (model, variant), group in frame.groupby(["model", "variant"], sort=False):
        replayed = group["reused_from"].fillna("").astype(str).ne("") if "reused_from" in group else []
        row = {"model": model, "variant": variant, "n_seeds": len(group),
               "seeds": " ".join(str(s) for s in sorted(group["seed"])), "n_replayed": int(sum(replayed))}
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(group[metric])  # one seed: std NaN
            found = comparisons.get((model, variant), (model, reference), metric) if reference else None
            row.update({f"{metric}_{name}": v for name, v in zip(DIFF_FIELDS, _fields(found))})
            for base in baselines:
                found = comparisons.get((model, variant), base, metric) if base != (model, variant) else None
                row.update({f"{metric}_{name}_vs_{row_name(base)}": v
                            for name, v in zip(DIFF_FIELDS, _fields(found))})
        rows.append(row)
    return pd.DataFrame(rows)


def pairwise(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Every pair of variants within a model (``a`` after ``b`` in first-seen order) that shares at least
    ``MIN_SHARED_SEEDS`` seeds, per metric: the mean difference ``a − b`` over the seeds they share, its 95 % CI,
    how many, and the paired t-test p; one row each (columns :data:`ddrm.report.significance.COLUMNS`). Pairs
    with fewer shared seeds have no paired test and are left out: a search's trials (each its own seed) give
    none, instead of thousands of empty rows."""
    return Comparisons(frame, metrics).frame()


def _cell(row: pd.Series, metric: str, alpha: float, baselines: Sequence[Row] = ()) -> str:
    if np.isnan(row[f"{metric}_mean"]):
        return "–"
    star = "*" if row.get(f"{metric}_p_holm", float("nan")) < alpha else ""
    for mark, base in zip(baseline_marks(len(baselines)), baselines):
        star += mark if row.get(f"{metric}_p_holm_vs_{row_name(base)}", float("nan")) < alpha else ""
    return format_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"]) + star  # one seed: the value alone


def markdown(summary: pd.DataFrame, metrics: list[str], reference: str | None, alpha: float = 0.01,
             baselines: Sequence[Row] = ()) -> str:
    """The Markdown table (mean ± std; ``*`` = significant against the reference, ``†``, ``‡``, ... against each
    baseline, all at Holm-adjusted p < ``alpha``)."""
    names = [SHORT.get(m, m.removeprefix(DIAG)) for m in metrics]
    lines = ["| model | variant | seeds | " + " | ".join(names) + " |", "|" + "---|" * (len(metrics) + 3)]
    for _, row in summary.iterrows():
        if all(np.isnan(row[f"{m}_mean"]) for m in metrics):
            continue  # e.g. diagnostics of a run without known noise
        variant = f"{row['variant']} (reference)" if row["variant"] == reference else row["variant"]
        seeds = f"{row['n_seeds']}" + (f" ({row['n_replayed']} replayed)" if row.get("n_replayed", 0) else "")
        lines.append(f"| {row['model']} | {variant} | {seeds} | "
                     + " | ".join(_cell(row, m, alpha, baselines) for m in metrics) + " |")
    return "\n".join(lines)


def _p_text(p: float) -> str:
    return "–" if p is None or np.isnan(p) else f"{p:.2g}"


def difference_text(found: tuple[Paired, float] | None) -> str:
    """``+0.0028 [-0.0004, +0.0060], p 0.025 (Holm 0.41)``; ``+0.0010 exact`` for a difference without a test."""
    if found is None or found[0].n_seeds == 0 or np.isnan(found[0].mean_diff):
        return "–"
    result, p_holm = found
    if result.n_seeds < MIN_SHARED_SEEDS:
        return f"{result.mean_diff:+.4f} (one seed)"
    if result.exact:
        return f"{result.mean_diff:+.4f} exact"
    return (f"{result.mean_diff:+.4f} [{result.ci_low:+.4f}, {result.ci_high:+.4f}], p {_p_text(result.p)} "
            f"(Holm {_p_text(p_holm)})")


def differences_markdown(comparisons: Comparisons, reference: str | None, baselines: Sequence[Row]) -> str:
    """Each family comparison of a row with its reference row or a baseline: one line per (row, vs), a column
    per family metric with the mean paired difference, its 95 % CI, raw and Holm-adjusted p."""
    metrics = comparisons.family_metrics
    lines, seen = [], set()
    for key in comparisons.groups:
        targets = [(key[0], reference)] if reference and key[1] != reference else []
        for target in [*targets, *(b for b in baselines if b != key)]:
            if frozenset((key, target)) in seen or not any(comparisons.in_family(key, target, m) for m in metrics):
                continue  # two baselines against each other: once
            seen.add(frozenset((key, target)))
            vs = "reference" if target == (key[0], reference) else row_name(target)
            lines.append(f"| {key[0]} | {key[1]} | {vs} | "
                         + " | ".join(difference_text(comparisons.get(key, target, m)) for m in metrics) + " |")
    if not lines:
        return ""
    names = [SHORT.get(m, m.removeprefix(DIAG)) for m in metrics]
    return "\n".join(["| model | variant | vs | " + " | ".join(names) + " |",
                      "|" + "---|" * (len(metrics) + 3), *lines])


def claims_markdown(claims: pd.DataFrame) -> str:
    """The claims table: per claim the comparison, difference [95 % CI], raw and Holm-adjusted p, verdict."""
    lines = [f"| claim | comparison | difference [{CI_LEVEL:.0%} CI] | p | Holm p | verdict |",
             "|---|---|---|---|---|---|"]
    for _, c in claims.iterrows():
        side = "above" if c["direction"] == "higher" else "below"
        metric = SHORT.get(c["metric"], c["metric"])
        if c["n_seeds"] >= MIN_SHARED_SEEDS:
            diff = (f"{c['mean_diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] ({c['n_seeds']} seeds)")
        elif c["n_seeds"]:
            diff = f"{c['mean_diff']:+.4f} (1 seed)"
        else:
            diff = "–"
        verdict = c["verdict"] + (f" ({c['note']})" if c["note"] else "")
        lines.append(f"| {c['name']} | `{c['row']}` {side} `{c['over']}` on {metric} | {diff} | "
                     f"{_p_text(c['p'])} | {_p_text(c['p_holm'])} | {verdict} |")
    return "\n".join(lines)


def _family_lines(comparisons: Comparisons, reference: str | None, baselines: Sequence[Row], alpha: float,
                  declared_by: str) -> list[str]:
    """The footnotes on significance: what each mark means, and the family (what, how many tests, declared
    where)."""
    family = comparisons.family
    marks = ([f"`*` against the `{reference}` row of the same model"] if reference else []) + \
            [f"`{mark}` against `{row_name(b)}`" for mark, b in zip(baseline_marks(len(baselines)), baselines)]
    against = []
    if reference and "reference" in family.tests:
        against.append(f"its model's `{reference}` row")
    if baselines and "baselines" in family.tests:
        against.append("every baseline (" + ", ".join(f"`{row_name(b)}`" for b in baselines) + ")")
    metric_names = ", ".join(SHORT.get(m, m.removeprefix(DIAG)) for m in comparisons.family_metrics)
    scope = f"each row against {' and against '.join(against)} on {metric_names}" if against else ""
    if comparisons.claims:
        n = len(comparisons.claims)
        scope += ("; and " if scope else "") + f"the {n} claim{'s' if n != 1 else ''} below"
    if not scope and not marks:
        return ["No reference variant and no baseline: no significance test."]
    tests, untested = len(comparisons.tests()), len(comparisons.untested())
    lines = []
    if marks:
        lines.append(", ".join(marks) + f": paired t-test over the shared seeds, Holm-adjusted p < {alpha:g} "
                     "over the family.")
    count = f"{tests} paired t-test{'s' if tests != 1 else ''}, Holm-adjusted together"
    if untested:
        count += (f"; {untested} more comparison{'s' if untested != 1 else ''} in it without a test (the same "
                  "difference on every shared seed: exact; or fewer than two shared seeds)")
    lines.append(f"Family ({declared_by or 'not declared before the run: the report default'}): "
                 f"{scope or 'empty'}: {count}. table.csv and pairs.csv give raw (`_p`) and Holm-adjusted "
                 f"(`_p_holm`) p, the mean paired difference (`_diff`) and its {CI_LEVEL:.0%} t-interval over the "
                 "seeds (`_ci_low`, `_ci_high`). An unmarked difference is not shown, which is not the same as no "
                 "effect: see its interval.")
    return lines


def verdict_rule(alpha: float) -> str:
    return (f"Verdict (a fixed rule): {SUPPORTED!r} when the paired difference `row − over` is in the claimed "
            f"direction and its Holm-adjusted p < {alpha:g} (claims are in the family); {CONTRADICTED!r} when the "
            f"opposite difference is significant at that level; {NOT_SHOWN!r} otherwise ('not shown' is not "
            f"'no effect': the {CI_LEVEL:.0%} interval says how large an effect the seeds leave open). A "
            "difference that is the same on every shared seed (two deterministic rows) is exact and decides by "
            "its sign.")


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
                 title: str = "", baselines: Sequence[str | Row] | str | None = None, family: Family | None = None,
                 claims: Sequence[Claim] = (), declared_by: str = "", notes: Sequence[str] = (),
                 validation_only: bool = False) -> str:
    """Write ``table.md`` (test metrics, the family's paired differences, diagnostics when present, the claims; the
    study's cost line above the table), ``table.csv`` (:func:`summarize`), ``pairs.csv`` (every comparison made: the
    family's, the claims' and every within-model pair of variants) and, with claims, ``claims.csv``; return the
    Markdown.

    ``family`` None: the report default (reference and baselines on the table's test metrics); ``declared_by``
    says where the family came from (printed in ``table.md``); ``notes``: lines added under the footnotes.
    ``validation_only`` (a search), or runs without test metrics: the table is of the validation metrics of each
    run's selected epoch (``best_*``) — a search's trials score no test split."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = [] if validation_only else [m for m in TABLE_METRICS if m in frame.columns]
    split = "Test metrics"
    if not metrics:  # a search: its trials are compared on validation and score no test split
        metrics = [m for m in VALID_TABLE_METRICS if m in frame.columns]
        split = ("Validation metrics at each run's selected epoch (`best_*`; a search computes no test metric: "
                 "rerun its best_config.yaml for test)")
    diagnostics = diagnostic_metrics(frame)
    baselines = as_rows(baselines)
    comparisons = Comparisons(frame, metrics + diagnostics, reference, baselines, family, claims)
    baselines = comparisons.baselines
    summary = summarize(frame, reference, metrics + diagnostics, baselines, comparisons)
    differences = differences_markdown(comparisons, reference, baselines)
    parts = [f"# {title}\n" if title else "", f"{split}, mean ± std over seeds (sample std; a value without "
             "± comes from one seed).",
             *_family_lines(comparisons, reference, baselines, alpha, declared_by),
             "`(k replayed)`: k of the seeds were replayed by `--reuse-from` from an identical earlier run "
             "(same config and code fingerprint; runs.csv names the source).",
             *([line] if (line := hosts_line(frame)) else []),
             *([line] if (line := cost_line(frame)) else []), *notes, "",
             markdown(summary, metrics, reference, alpha, baselines)]
    if differences:
        parts += ["", f"Paired differences in the family (row − vs, mean over the shared seeds, "
                  f"[{CI_LEVEL:.0%} t-interval], p (Holm-adjusted p); `exact`: the same on every seed, no test):",
                  "", differences]
    if diagnostics:
        outside = [d for d in diagnostics if d not in comparisons.family_metrics]
        parts += ["", "Denoising diagnostics on the injected training pairs (see `ddrm.diagnostics`): noise_auc = "
                  "P(clean pair scored above injected pair); top20_share = injected share of the unmasked top-20."
                  + (" Diagnostics outside the family carry no marks (raw p in table.csv)." if outside else ""),
                  "", markdown(summary, diagnostics, reference, alpha, baselines)]
    claim_rows = comparisons.claim_rows(alpha)
    if len(claim_rows):
        parts += ["", "## Claims", "", verdict_rule(alpha), "", claims_markdown(claim_rows)]
        claim_rows.to_csv(out / "claims.csv", index=False, float_format="%.6g")
    text = "\n".join(parts).lstrip("\n") + "\n"
    (out / "table.md").write_text(text)
    summary.to_csv(out / "table.csv", index=False, float_format="%.6g")
    comparisons.frame().to_csv(out / "pairs.csv", index=False, float_format="%.6g")
    return text
