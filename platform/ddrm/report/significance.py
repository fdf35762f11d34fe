"""Paired comparisons over seeds, Holm's adjustment over a declared family, and the verdict of a claim.

The statistics of DESIGN §4a, in one place:

- a **comparison** of row ``a`` with row ``b`` on a metric pairs the seeds both have: the mean paired difference
  ``a − b``, its t-based 95 % confidence interval (``mean ± t(0.975, n−1) · sd/√n``, sample sd) and the
  two-sided paired t-test p (``scipy.stats.ttest_rel``). Fewer than two shared seeds give no interval and no
  p. A difference that is the same on every shared seed (two deterministic rows, e.g. ItemKNN against EASE) is
  **exact**: its interval is the point, and it gets no t-test (p NaN; p 1 when it is zero on every seed).
- the **family** is the set of tests adjusted together: the comparisons :class:`ddrm.tuning.comparisons.Family`
  names (each row against its model's reference row and/or against every baseline row, on the family's
  metrics) and every claim; each unordered pair of rows counts once per metric. Exact comparisons are not
  tests and are not counted. **Holm** (step-down Bonferroni): with the m family p sorted,
  ``p_(1) ≤ … ≤ p_(m)``, the adjusted ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j))``; a test is
  significant when ``p̃ < alpha`` (default 0.01). This controls the family-wise error rate at ``alpha``.
- the **verdict** of a claim "``row`` is better than ``over`` on ``metric``" (higher, or lower with
  ``direction: lower``): *supported* when the difference is in the claimed direction and significant
  (Holm-adjusted p < alpha); *contradicted* when it is in the opposite direction and significant; *not shown*
  otherwise — not shown is not "no effect": the interval says how large an effect the seeds leave open. An
  exact non-zero difference decides by its sign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import t as student_t
from scipy.stats import ttest_rel

from ..metrics import DIAG
from ..tuning.comparisons import Claim, Family, split_row

CI_LEVEL = 0.95
MIN_SHARED_SEEDS = 2  # a paired t-test needs two pairs at least
SUPPORTED, CONTRADICTED, NOT_SHOWN = "supported", "contradicted", "not shown"
COLUMNS = ["model", "a", "model_b", "b", "metric", "comparison", "n_seeds", "mean_diff", "ci_low", "ci_high",
           "p", "p_holm", "in_family", "exact"]  # pairs.csv
NAN = float("nan")
Row = tuple[str, str]  # (model, variant)


@dataclass(frozen=True)
class Paired:
    """One paired comparison ``a − b`` over the seeds both rows have."""

    n_seeds: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p: float
    exact: bool = False  # the same difference on every shared seed: no seed test

    def flipped(self) -> "Paired":
        """The same comparison read as ``b − a``."""
        return Paired(self.n_seeds, -self.mean_diff, -self.ci_high, -self.ci_low, self.p, self.exact)


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str, level: float = CI_LEVEL) -> Paired:
    """:class:`Paired` of ``a`` against ``b`` (frames with ``seed`` and ``metric``), see the module docstring."""
    if metric not in a.columns or metric not in b.columns:
        return Paired(0, NAN, NAN, NAN, NAN)
    merged = a[["seed", metric]].merge(b[["seed", metric]], on="seed", suffixes=("", "_b")).dropna()
    n = len(merged)
    diff = merged[metric].to_numpy(float) - merged[f"{metric}_b"].to_numpy(float)
    if n == 0:
        return Paired(0, NAN, NAN, NAN, NAN)
    mean = float(diff.mean())
    if n < MIN_SHARED_SEEDS:
        return Paired(n, mean, NAN, NAN, NAN)
    if np.allclose(diff, diff[0]):  # exact: zero on every seed (p 1), or a constant gap (no seed test)
        return Paired(n, mean, mean, mean, 1.0 if np.allclose(diff, 0.0) else NAN, exact=True)
    half = float(student_t.ppf(0.5 + level / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    p = float(ttest_rel(merged[metric], merged[f"{metric}_b"]).pvalue)
    return Paired(n, mean, mean - half, mean + half, p)


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p, in the input order; NaN entries (no test) stay NaN and do not count in m."""
    p = np.asarray(list(p_values), dtype=float)
    adjusted = np.full(p.shape, NAN)
    tested = np.flatnonzero(~np.isnan(p))
    m, running = len(tested), 0.0
    for rank, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))  # monotone: never below an earlier step
        adjusted[i] = running
    return adjusted


def verdict(mean_diff: float, p_holm: float, alpha: float, direction: str = "higher", exact: bool = False) -> str:
    """The fixed rule of the module docstring: supported / contradicted / not shown."""
    gain = mean_diff if direction == "higher" else -mean_diff
    decided = (gain != 0) if exact else (p_holm < alpha)  # NaN p: not decided
    if not decided or math.isnan(gain) or gain == 0:
        return NOT_SHOWN
    return SUPPORTED if gain > 0 else CONTRADICTED


@dataclass
class Record:
    a: Row
    b: Row
    metric: str
    comparison: str  # reference | baseline | claim | pair: why it was computed (the first reason)
    result: Paired
    in_family: bool = False
    p_holm: float = NAN


class Comparisons:
    """Every comparison a report shows, each unordered pair of rows once per metric, with Holm over the family.

    ``metrics``: the table's columns; ``baselines``: (model, variant) rows present in ``frame``; ``family``:
    None = the report's default (reference and baselines on the non-diagnostic ``metrics``); ``claims`` always
    join the family. Within-model pairs (``pair``, on the non-diagnostic metrics) are computed for ``pairs.csv`` and
    are not in the family.
    """

    def __init__(self, frame: pd.DataFrame, metrics: Sequence[str], reference: str | None = None,
                 baselines: Sequence[Row] = (), family: Family | None = None, claims: Sequence[Claim] = (),
                 within_pairs: bool = True):
        self.groups = {key: group for key, group in frame.groupby(["model", "variant"], sort=False)}
        self._seeds = {key: set(group["seed"]) for key, group in self.groups.items()}
        self.reference, self.baselines = reference, [tuple(b) for b in baselines if tuple(b) in self.groups]
        self.family = family if family is not None else Family()
        default_metrics = [m for m in metrics if not m.startswith(DIAG)] or list(metrics)
        self.family_metrics = list(self.family.metrics or default_metrics)
        self.claims = list(claims)
        self.records: dict[tuple[frozenset, str], Record] = {}
        for key in self.groups:
            ref = (key[0], reference)
            if reference and key[1] != reference and ref in self.groups:
                for metric in metrics:
                    self._add(key, ref, metric, "reference", "reference" in self.family.tests)
        for key in self.groups:
            for base in self.baselines:
                if key != base:
                    for metric in metrics:
                        self._add(key, base, metric, "baseline", "baselines" in self.family.tests)
        for claim in self.claims:
            row, over = split_row(claim.row), split_row(claim.over)
            if row in self.groups and over in self.groups:
                self._add(row, over, claim.metric, "claim", True, force=True)
        if within_pairs:
            for model in dict.fromkeys(k[0] for k in self.groups):
                keys = [k for k in self.groups if k[0] == model]
                for i, a in enumerate(keys):
                    for b in keys[:i]:
                        if self._share_seeds(a, b):
                            for metric in default_metrics:
                                self._add(a, b, metric, "pair", False)
        family = [r for r in self.records.values() if r.in_family]
        for record, adjusted in zip(family, holm(NAN if r.result.exact else r.result.p for r in family)):
            record.p_holm = float(adjusted)

    def _share_seeds(self, a: Row, b: Row) -> bool:
        return len(self._seeds[a] & self._seeds[b]) >= MIN_SHARED_SEEDS

    def _add(self, a: Row, b: Row, metric: str, comparison: str, in_family: bool, force: bool = False) -> None:
        """Record ``a − b`` on ``metric`` unless the pair is already there; ``in_family`` joins it to the
        family when its metric is a family metric (``force``: whatever the metric, for a claim)."""
        in_family = in_family and (force or metric in self.family_metrics)
        key = (frozenset((a, b)), metric)
        if key not in self.records:
            self.records[key] = Record(a, b, metric, comparison, paired(self.groups[a], self.groups[b], metric))
        self.records[key].in_family |= in_family

    def get(self, a: Row, b: Row, metric: str) -> tuple[Paired, float] | None:
        """``(a − b, Holm-adjusted p)``, or None when the pair was not compared."""
        record = self.records.get((frozenset((tuple(a), tuple(b))), metric))
        if record is None:
            return None
        return (record.result if record.a == tuple(a) else record.result.flipped()), record.p_holm

    def in_family(self, a: Row, b: Row, metric: str) -> bool:
        record = self.records.get((frozenset((tuple(a), tuple(b))), metric))
        return bool(record and record.in_family)

    def tests(self) -> list[Record]:
        """The family's tests: in the family, with a p (not exact)."""
        return [r for r in self.records.values() if r.in_family and not math.isnan(r.p_holm)]

    def untested(self) -> list[Record]:
        """Family comparisons without a test (exact, or fewer than two shared seeds)."""
        return [r for r in self.records.values() if r.in_family and math.isnan(r.p_holm)]

    def frame(self, min_seeds: int = MIN_SHARED_SEEDS) -> pd.DataFrame:
        """pairs.csv: every comparison whose rows share at least ``min_seeds`` seeds, one row each."""
        rows = [{"model": r.a[0], "a": r.a[1], "model_b": r.b[0], "b": r.b[1], "metric": r.metric,
                 "comparison": r.comparison, "n_seeds": r.result.n_seeds, "mean_diff": r.result.mean_diff,
                 "ci_low": r.result.ci_low, "ci_high": r.result.ci_high, "p": r.result.p, "p_holm": r.p_holm,
                 "in_family": r.in_family, "exact": r.result.exact}
                for r in self.records.values() if r.result.n_seeds >= min_seeds]
        return pd.DataFrame(rows, columns=COLUMNS)

    def claim_rows(self, alpha: float) -> pd.DataFrame:
        """claims.csv: per claim ``row − over``, its interval, raw and Holm-adjusted p, the verdict and a note."""
        rows = []
        for claim in self.claims:
            row, over = split_row(claim.row), split_row(claim.over)
            missing = [name for name, key in ((claim.row, row), (claim.over, over)) if key not in self.groups]
            found = None if missing else self.get(row, over, claim.metric)
            result, p_holm = found if found else (Paired(0, NAN, NAN, NAN, NAN), NAN)
            if missing:
                note = "no runs of " + " and ".join(missing)
            elif result.n_seeds == 0:
                note = f"no shared seed with {claim.metric}"
            elif result.n_seeds < MIN_SHARED_SEEDS:
                note = "one shared seed: no test"
            elif result.exact:
                note = "exact: the same difference on every shared seed, no seed test"
            else:
                note = ""
            rows.append({**claim.as_dict(), "n_seeds": result.n_seeds, "mean_diff": result.mean_diff,
                         "ci_low": result.ci_low, "ci_high": result.ci_high, "p": result.p, "p_holm": p_holm,
                         "verdict": verdict(result.mean_diff, p_holm, alpha, claim.direction, result.exact),
                         "note": note})
        return pd.DataFrame(rows, columns=["name", "row", "over", "metric", "direction", "n_seeds", "mean_diff",
                                           "ci_low", "ci_high", "p", "p_holm", "verdict", "note"])
