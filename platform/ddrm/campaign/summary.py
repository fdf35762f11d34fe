"""A campaign's results in the paper's shape, from its committed files only (``campaign.json``, each stage's and
table's ``runs.csv``, ``table.csv``, ``claims.csv``): per dataset ``campaign.md`` (the stages' overrides on the
dataset, the earlier searches its stages imported, each row with its budget), and across datasets one table (rows =
the table's rows, columns = datasets x R@20 / N@20) with a verdict per claim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..stats import format_mean_std
from .frozen import judged

METRICS = ("test_recall_at_20", "test_ndcg_at_20")
SHORT = {"test_recall_at_20": "R@20", "test_ndcg_at_20": "N@20"}


def stage_budget(folder: Path) -> dict[str, Any]:
    """A search stage's trials, trial-epochs and CPU-hours from its runs.csv (cost columns when recorded)."""
    path = folder / "runs.csv"
    if not path.is_file():
        return {"trials": 0, "trial_epochs": 0, "cpu_hours": None}
    runs = pd.read_csv(path)
    if "reused_from" in runs:  # a replay of another store's run cost nothing here
        runs = runs[runs["reused_from"].isna() | (runs["reused_from"].astype(str) == "")]
    epochs = runs["cost_epochs"] if "cost_epochs" in runs else runs.get("epoch", pd.Series(dtype=float))
    cpu = runs["cost_cpu_seconds"].sum() / 3600 if "cost_cpu_seconds" in runs else None
    return {"trials": len(runs), "trial_epochs": int(epochs.fillna(0).sum()), "cpu_hours": cpu}


def _cell(row: pd.Series | None, metric: str) -> str:
    if row is None or f"{metric}_mean" not in row:
        return "–"
    return format_mean_std(row[f"{metric}_mean"], row.get(f"{metric}_std"))


def table_rows(out: Path, table: str) -> pd.DataFrame | None:
    path = out / "tables" / table / "table.csv"
    return pd.read_csv(path) if path.is_file() else None


def data_line(data: dict[str, Any]) -> str:
    """One line on a campaign's data: name, split, sizes."""
    return (f"Data: `{data['name']}`, split {data['split']}; {data['users']:,} users x {data['items']:,} items; "
            f"train / valid / test {data['train']:,} / {data['valid']:,} / {data['test']:,} interactions.")


def imported_searches(record: dict[str, Any]) -> list[str]:
    """The lines of ``campaign.md`` naming each stage's imported earlier search (none: no lines)."""
    stages = {name: s["imported_search"] for name, s in record["stages"].items() if s.get("imported_search")}
    if not stages:
        return []
    lines = ["## Imported searches", "", "Run before the campaign at the search seed and chosen on validation; "
             "their rows that are the stage's experiment count toward its budget, without their test metrics (the "
             "files are unchanged).", "", "| stage | file | rows imported | rows in file | left out |",
             "|---|---|---|---|---|"]
    for name, info in stages.items():
        why = "; ".join(f"{n}: {reason}" for reason, n in info["left_out"].items()) or "–"
        lines.append(f"| {name} | `{info['file']}` | {info['rows']} | {info['rows_in_file']} | {why} |")
    return lines + [""]


def overridden_stages(record: dict[str, Any]) -> list[str]:
    """The lines of ``campaign.md`` naming each stage's override on this dataset (spec ``overrides``; none: no
    lines)."""
    overrides = record.get("overrides") or {}
    if not overrides:
        return []
    lines = ["## Overrides", "", f"Config keys the spec sets on these stages' base on {record['dataset']} alone (after "
             "`inherit`): their searches, chosen configs and table rows ran with them.", "", "| stage | keys |",
             "|---|---|"]
    lines += [f"| {stage} | " + ", ".join(f"`{k}: {v}`" for k, v in keys.items()) + " |"
              for stage, keys in overrides.items()]
    return lines + [""]


def campaign_markdown(out: Path) -> str:
    """``campaign.md`` of one dataset's campaign folder: per table, each row's stage, budget and test metrics, then
    the claims' verdicts; the estimate beside the actual cost."""
    record = json.loads((out / "campaign.json").read_text())
    lines = [f"# Campaign {record['campaign']} on {record['dataset']}", "",
             f"Budget {record['budget']} trials per searched stage (a grid: all of it); searches at seed "
             f"{record['search_seed']} (validation only), tables at seeds {record['table_seeds']}.", ""]
    if record.get("data"):
        lines[-1:] = [data_line(record["data"]), ""]
    lines += overridden_stages(record)
    lines += imported_searches(record)
    for table, info in record["tables"].items():
        frame = table_rows(out, table)
        lines += [f"## Table {table}", "", "| row | stage | search trials (failed) | trial-epochs | CPU-h | "
                  + " | ".join(SHORT[m] for m in METRICS) + " |", "|---" * (5 + len(METRICS)) + "|"]
        for row, stage in info["rows"].items():
            budget = stage_budget(out / "stages" / stage)
            model, variant = row.split("/")
            match = None
            if frame is not None:
                hits = frame[(frame["model"] == model) & (frame["variant"] == variant)]
                match = hits.iloc[0] if len(hits) else None
            hours = f"{budget['cpu_hours']:.2f}" if budget["cpu_hours"] is not None else "–"
            failed = (record["stages"].get(stage) or {}).get("errored") or 0
            trials = f"{budget['trials']}" + (f" ({failed})" if failed else "")
            lines.append(f"| {row} | {stage} | {trials} | {budget['trial_epochs']} | {hours} | "
                         + " | ".join(_cell(match, m) for m in METRICS) + " |")
        claims = out / "tables" / table / "claims.csv"
        if claims.is_file():
            lines += ["", "| claim | difference [95% CI] | p (Holm) | verdict |", "|---|---|---|---|"]
            for _, c in pd.read_csv(claims).iterrows():
                lines.append(f"| {c['name']} | {c['mean_diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | "
                             f"{c['p']:.3g} ({c['p_holm']:.3g}) | {c['verdict']} |")
        lines += ["", f"Report: `tables/{table}/table.md` (marks, every paired test, the family)."]
    lines += stage_lines(out, record)
    lines += ["", *cost_lines(out, record)]
    return "\n".join(line for line in lines if line is not None).rstrip() + "\n"


def cost_lines(out: Path, record: dict[str, Any]) -> list[str]:
    """The campaign's cost: the latest plan's total, and the searches' recorded cost beside the estimates frozen
    when each started (:func:`.frozen.judged`): the trials trained here against the estimate of those trials."""
    estimate = record.get("estimate") or {}
    recorded = here = judged_hours = 0.0
    for stage, info in record["stages"].items():
        if info.get("kind") == "fixed":
            continue
        cost, entry = stage_budget(out / "stages" / stage)["cpu_hours"], judged(estimate, "stages", stage)
        hours = (entry or {}).get("trials_cpu_hours", (entry or {}).get("cpu_hours"))
        recorded += cost or 0.0
        if cost is not None and hours is not None:
            here, judged_hours = here + (trained_here(cost, entry) or 0.0), judged_hours + hours
    lines = [f"Cost: the latest plan (`ddrm campaign plan`) estimates {estimate['cpu_hours']:.2f} CPU-hours for the "
             f"whole campaign (imported trials excluded)." if estimate.get("cpu_hours") else ""]
    if recorded:
        ratio = f" ({here / judged_hours:.2f}x)" if judged_hours > 0 else ""
        lines.append(f"Searches' recorded cost {recorded:.2f} CPU-hours (finished trials; a failed trial's cost is not "
                     f"recorded, their number is in brackets); the trials trained here {here:.2f} against "
                     f"{judged_hours:.2f} estimated when each search started{ratio}.")
    return lines


def estimate_cell(estimate: dict[str, Any] | None, actual: float | None) -> str:
    """``plan``'s estimate of a stage's trials and the recorded cost's ratio to it (the ±30 % check), with the
    estimate's rule when the plan named one, e.g. ``0.81 (1.12x)`` or ``0.81 (1.12x; asha x0.64 calibrated)``.
    The estimate is ``trials_cpu_hours`` (the trials it trains, without the driver's backend pretraining, which no
    runs.csv row records) where the plan split it, else ``cpu_hours`` (plans made before the split)."""
    estimate = estimate or {}
    hours = estimate.get("trials_cpu_hours", estimate.get("cpu_hours"))
    if hours is None:
        return "–"
    notes = [f"{actual / hours:.2f}x"] if actual is not None and hours > 0 else []
    notes += [estimate["rule"]] if estimate.get("rule") else []
    return f"{hours:.2f}" + (f" ({'; '.join(notes)})" if notes else "")


def trained_here(recorded: float | None, estimate: dict[str, Any] | None) -> float | None:
    """The recorded CPU-hours of a stage's runs.csv less what its rows imported from an earlier search recorded
    (the plan's ``imported_cpu_hours``): the cost of the trials the estimate is of."""
    if recorded is None:
        return None
    return max(0.0, recorded - float((estimate or {}).get("imported_cpu_hours") or 0.0))


def stage_lines(out: Path, record: dict[str, Any]) -> list[str]:
    """The stages done so far: kind, trials (failed), those trained to the end (not stopped by ASHA: the config is
    chosen among them), trial-epochs, recorded CPU-hours, best validation R@20 (a search chooses on validation;
    its report shows no test)."""
    lines = ["", "## Stages (searches at the search seed, validation only)", "",
             "| stage | kind | trials (failed) | trained to the end | trial-epochs | CPU-h | "
             "est. CPU-h (ratio; rule) | "
             "best valid R@20 | "
             "continued from (runs.csv) |", "|---|---|---|---|---|---|---|---|---|"]
    for stage, info in record["stages"].items():
        if info.get("kind") == "fixed":
            lines.append(f"| {stage} | fixed | – | – | – | – | – | – | – |")
            continue
        budget, estimate = stage_budget(out / "stages" / stage), judged(record.get("estimate"), "stages", stage)
        failed = f" ({info['errored']})" if info.get("errored") else ""
        hours = f"{budget['cpu_hours']:.2f}" if budget["cpu_hours"] is not None else "–"
        best = (info.get("best_valid") or {}).get("recall_at_20")
        lines.append(f"| {stage} | {info.get('mode', 'search')} | {budget['trials']}{failed} | {info.get('finished', 0)} | "
                     f"{budget['trial_epochs']} | {hours} | "
                     f"{estimate_cell(estimate, trained_here(budget['cpu_hours'], estimate))} | "
                     f"{f'{best:.4f}' if best is not None else '–'} | "
                     f"{info.get('imported_from') or '–'} |")
    return lines + ["", "est.: frozen when the stage started (`campaign.json` `estimate.frozen`), not the latest "
                    "plan's.", "", "It is `ddrm campaign plan`'s estimate of the trials the stage trains, beside their "
                    "recorded cost (rows imported from an earlier search are out of both; a DDRM stage's backend "
                    "pretraining by the study's driver, which no runs.csv row records, is out of the estimate); its "
                    "rule as `campaign.json` `estimate.rules` defines it."]


def across_datasets(outs: dict[str, Path], table: str, declared_rows: list[str] | None = None) -> str:
    """One markdown table: rows = the table's rows (``declared_rows``, the spec's order, then any other row a
    campaign recorded), columns = datasets x R@20 / N@20; a line naming the datasets whose table has no results
    yet; then each claim's verdict per dataset."""
    frames = {d: table_rows(out, table) for d, out in outs.items()}
    records = {d: json.loads((out / "campaign.json").read_text()) for d, out in outs.items() if (out / "campaign.json").is_file()}
    rows: list[str] = list(declared_rows or [])
    for record in records.values():
        rows += [r for r in record["tables"].get(table, {}).get("rows", {}) if r not in rows]
    header = "| row | " + " | ".join(f"{d} {SHORT[m]}" for d in outs for m in METRICS) + " |"
    lines = [header, "|---" * (1 + len(outs) * len(METRICS)) + "|"]
    for row in rows:
        model, variant = row.split("/")
        cells = []
        for d in outs:
            frame = frames[d]
            hits = frame[(frame["model"] == model) & (frame["variant"] == variant)] if frame is not None else []
            cells += [_cell(hits.iloc[0] if len(hits) else None, m) for m in METRICS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    verdicts: dict[str, dict[str, str]] = {}
    for d, out in outs.items():
        path = out / "tables" / table / "claims.csv"
        if path.is_file():
            for _, c in pd.read_csv(path).iterrows():
                verdicts.setdefault(c["name"], {})[d] = c["verdict"]
    pending = [d for d, frame in frames.items() if frame is None]
    if pending:
        lines += ["", f"No {table} results yet for {', '.join(pending)} (a table runs once every stage it names "
                      "has chosen its config; `ddrm campaign run` resumes it)."]
    splits = [f"{d}: {r['data']['split']}" for d, r in records.items() if r.get("data")]
    if splits:
        lines += ["", "Splits: " + "; ".join(splits) + "."]
    if verdicts:
        lines += ["", "| claim | " + " | ".join(outs) + " |", "|---" * (1 + len(outs)) + "|"]
        lines += [f"| {name} | " + " | ".join(v.get(d, "–") for d in outs) + " |" for name, v in verdicts.items()]
    return "\n".join(lines) + "\n"
