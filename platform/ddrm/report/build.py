"""One report folder from MLflow runs: what ``ddrm report`` writes, and what every study writes when it ends.

:func:`build_report` collects the trial runs of an experiment (or of one parent run) and writes into one
folder ``table.md``/``table.csv`` (mean ± std over seeds, paired comparisons against the reference and the
baselines, Holm-adjusted over the declared family; a search's of validation metrics: its trials score no test;
a line with the study's cost), ``pairs.csv`` (every comparison made), ``claims.csv`` (the
declared claims and their verdicts), the plots, ``runs.csv`` (one row
per run), ``best_config.yaml`` (searches) and, on request, ``report.html``. :func:`publish_study` is the end
of ``ddrm ablate``/``ddrm tune``: it builds the report of the study's experiment into
``<storage>/<study>/report/``, logs its files as artifacts of the study's parent run together with the
study's result as parent-run metrics, and stores the runs view that the printed MLflow URL opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DDRMError
from ..metrics import BEST, BEST_EPOCH, SELECTION_METRIC, TEST
from .collect import collect_runs
from .html import write_html
from .plots import write_plots
from .runs import relative_uri, write_best_config, write_runs_csv
from ..tuning.comparisons import Declared, parse_rows
from .table import as_rows, reference_first, row_name, write_tables

PARENT_METRICS = (TEST + SELECTION_METRIC, TEST + "ndcg_at_20")  # per (model, variant), mean over seeds
VIEW_METRICS = (*PARENT_METRICS, BEST + SELECTION_METRIC, BEST_EPOCH)


@dataclass
class Report:
    """What :func:`build_report` wrote and read."""

    out: Path
    text: str  # the Markdown of table.md
    files: list[Path]
    frame: pd.DataFrame  # one row per run (collect_runs)
    facts: dict[str, Any]
    reference: str | None
    summary: pd.DataFrame  # table.csv: one row per (model, variant)


def build_report(uri: str, target: str, out: Path, reference: str | None = None, alpha: float = 0.01,
                 html: bool = False, baseline: str | None = None, spec: str | Path | None = None) -> Report:
    """Collect ``target``'s runs (an experiment name or a parent run id) and write the report into ``out``.

    ``reference``: the variant the t-tests compare against (default: the study's, when its runs are there, e.g.
    not after a ``--variants`` study alone). ``baseline``: ``"<model>/<variant>"`` rows, comma-separated, every row
    is also tested against (``†``, ``‡``, ...; default: the study's ``baseline`` tag). The family Holm adjusts
    over and the claims are the study's (its parent run's tags, written when it started); ``spec``: an ablation
    YAML to read ``reference``, ``baseline``, ``family`` and ``claims`` from instead (``table.md`` says so).
    Raises :class:`DDRMError` before writing anything when a given ``reference`` or ``baseline`` is not a row of
    ``target``; a baseline the study or ``spec`` declares without runs here is left out with a note.
    """
    frame, facts = collect_runs(uri, target)
    declared, declared_by = Declared.from_tags(facts["tags"]), "declared by the study before it ran"
    spec_reference = None
    if spec is not None:
        from ..tuning.spec import load_declared

        spec_reference, declared = load_declared(spec)
        declared_by = f"read from `{spec}` when this report was built"
    variants = set(frame["variant"])
    if reference and reference not in variants:
        raise DDRMError(f"--reference '{reference}' is not a variant of '{target}'; variants: {sorted(variants)}")
    study_reference = spec_reference or facts["tags"].get("reference")
    if study_reference and study_reference not in variants:  # a smoke study's rows read "<variant> (capped at N ...)"
        study_reference = next((v for v in variants if v.startswith(f"{study_reference} (capped at ")), None)
    reference = reference or (study_reference if study_reference in variants else None)
    frame = reference_first(frame, reference)
    present = set(frame[["model", "variant"]].drop_duplicates().itertuples(index=False, name=None))
    try:
        bases = as_rows(parse_rows(baseline)) if baseline else as_rows(declared.baselines)
    except ValueError:
        raise DDRMError(f"--baseline {baseline!r}: expected '<model>/<variant>' rows, comma-separated, e.g. "
                        f"ease/tuned,itemknn/tuned") from None
    missing = [b for b in bases if b not in present]
    if missing and baseline:
        raise DDRMError(f"--baseline '{row_name(missing[0])}' is not a (model/variant) row of '{target}'; rows: "
                        f"{sorted(row_name(r) for r in present)}")
    notes = ([f"Declared baseline(s) without runs here, not tested: {', '.join(f'`{row_name(b)}`' for b in missing)}."]
             if missing else [])
    searched = facts["tags"].get("kind") == "tune"  # a search chooses on validation: its report shows no test
    text = write_tables(frame, out, reference, alpha, title=f"{target} ({relative_uri(uri)})",
                        baselines=[b for b in bases if b in present], family=declared.family, claims=declared.claims,
                        declared_by=declared_by if declared.family is not None else "", notes=notes,
                        validation_only=searched)
    plots = write_plots(frame, out, validation_only=searched)
    files = [out / "table.md", out / "table.csv", out / "pairs.csv",
             *([out / "claims.csv"] if declared.claims else []), *plots, write_runs_csv(frame, out, uri)]
    best = write_best_config(frame, out, facts)
    if best is not None:
        files.append(best)
    if html:
        meta = (f"{len(frame)} finished trial runs of `{target}` in `{relative_uri(uri)}`"
                + (f"; {facts['failed']} failed trial(s) not counted" if facts["failed"] else ""))
        files.append(write_html(out, f"Report: {target}", plots, best, meta))
    return Report(out, text, files, frame, facts, reference, pd.read_csv(out / "table.csv"))


def parent_metrics(report: Report, best: dict[str, Any] | None = None,
                   objective: str = "recall_at_20") -> dict[str, float]:
    """The study's result as parent-run metrics (see :func:`ddrm.tracking.study_metric_name`).

    An ablation: ``study/<model>.<variant>.test_recall_at_20_mean`` and ``..._ndcg_at_20_mean`` per row of the
    table (mean over seeds). A search (``best``: the runner's best trial): ``study/best_valid_<objective>``, the
    best trial's validation objective (a search scores no test). Both: the study's cost (:mod:`.cost`),
    ``study/cost.runs``, ``.epochs``, ``.cpu_hours``, ``.wall_hours``, ``.replayed``.
    """
    from ..tracking import study_metric_name
    from .cost import study_cost

    cost = {study_metric_name("cost", k): v for k, v in study_cost(report.frame).items() if k != "unrecorded"}
    if best is not None:
        return {study_metric_name(f"best_valid_{objective}"): best["valid"].get(objective, float("nan")), **cost}
    metrics = dict(cost)
    for _, row in report.summary.iterrows():
        for metric in PARENT_METRICS:
            if f"{metric}_mean" in row:
                metrics[study_metric_name(row["model"], row["variant"], f"{metric}_mean")] = row[f"{metric}_mean"]
    return metrics


def study_view(kind: str, frame: pd.DataFrame, searched: list[str] | tuple[str, ...] = (),
               objective: str = "recall_at_20") -> dict[str, Any]:
    """The runs view a study opens on: an ablation's child runs grouped by (model,) variant with the mean over
    seeds on each group's row; a search's trials in one group, best validation objective first, with the
    searched params as columns and the best value on the group's row."""
    from ..tracking import study_view_state

    wanted = dict.fromkeys([*VIEW_METRICS[:2], BEST + objective, *VIEW_METRICS[2:]])
    metrics = [m for m in wanted if m in frame.columns]
    if kind == "tune":
        return study_view_state(["role"], metrics, list(searched), order_by=BEST + objective, aggregate="max")
    has_models = "model" in frame.columns and frame["model"].nunique() > 1
    return study_view_state(["model", "variant"] if has_models else ["variant"], metrics)


def publish_study(uri: str, experiment: str, parent_run_id: str, out: Path, kind: str,
                  best: dict[str, Any] | None = None, searched: list[str] | tuple[str, ...] = (),
                  objective: str = "recall_at_20") -> Report:
    """End of a study: the report of ``experiment`` (every study in it, as ``ddrm report`` pools them) into
    ``out``, its files logged as the parent run's artifacts with the study's result as its metrics, and the
    experiment's runs view (see :func:`ddrm.tracking.runs_view_url`)."""
    from .. import tracking

    report = build_report(uri, experiment, out, html=True)
    tracking.log_metrics(uri, parent_run_id, parent_metrics(report, best, objective))
    tracking.log_artifacts(uri, parent_run_id, report.files)  # this report's files, not others left in ``out``
    experiment_id = tracking._client(uri).get_run(parent_run_id).info.experiment_id
    tracking.set_study_view(uri, experiment_id, study_view(kind, report.frame, searched, objective))
    return report
