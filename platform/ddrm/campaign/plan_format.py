"""The campaign plan as ``ddrm campaign plan`` prints it (:func:`format_plan`)."""

from __future__ import annotations

from typing import Any

from .overrides import describe
from .plan_rate import RECORDS


def _stage_line(stage: str, s: dict[str, Any], stages: dict[str, Any]) -> list[str]:
    """A stage's line of the plan, and its calibration's when it has one and trials left to train."""
    inherits = "".join(f" <- {up}[{', '.join(keys)}]" for up, keys in s["inherits"].items())
    trials = f"{s['trials']} trials"
    if s.get("imports") or s.get("imported"):
        trials += f" ({s['imported']} imported, {s['left']} to train)"
    hours = ""
    if "cpu_hours" in s and s["kind"] != "fixed":
        hours = f", est. {s['cpu_hours']:.2f} CPU-h"
        extra = []
        if s.get("pretrain_cpu_hours"):
            extra.append(f"backend pretraining {s['pretrain_cpu_hours']:.2f} at {s['backend']['rule']}")
        if s.get("imported"):
            extra.append(f"all {s['trials']} from scratch {s['from_scratch_cpu_hours']:.2f}")
        hours += f" ({'; '.join(extra)})" if extra else ""
    rule = f" [{s['rule']}]" if s["kind"] != "fixed" else ""
    imports = f"; overrides {describe(s['overrides'])}" if s.get("overrides") else ""
    imports += f"; imports {s['imports']}" if s.get("imports") else ""
    if s.get("imports") and s.get("provisional"):
        stand_ins = ", ".join(f"{up}'s {stages[up].get('basis', 'base')}" for up in s["provisional"])
        imports += (f" (count provisional: {', '.join(s['provisional'])} not chosen yet; counted on {stand_ins})")
    lines = [f"  {stage}{inherits}: {s['model']}, {s['kind']}, {trials}, <= {s['epoch_cap']} epochs each, "
             f"~{s['expected_epochs']:.0f} trial-epochs{rule}{hours}{imports}"]
    if s.get("calibration") and s.get("left"):
        parts = [f"{r['source']} ({r['recorded']} of {r['expected']:.0f} expected trial-epochs, {r['trials']} trials)"
                 for r in s["calibration"]["records"]]
        lines.append(f"    calibrated: epochs per trial x{s['calibration']['factor']:.2f}, the mean recorded / "
                     f"expected of {'; '.join(parts)}")
    return lines


def _rate_lines(t: dict[str, Any]) -> list[str]:
    """Which rows' CPU-seconds per epoch come from their chosen trials' records and which from the probe, then why
    the probe where a finished stage's records give no rate (a backend's: once, for its rows)."""
    labels = {"records": "per epoch from the chosen trials' records", "probe": "per epoch from the probe",
              "one fit": "per fit from the probe"}
    groups: dict[str, list[str]] = {}
    for row, r in t.get("row_estimates", {}).items():
        if r.get("cpu_seconds_per_epoch") is not None:
            recorded = r["rate_rule"].startswith(RECORDS)
            group = "one fit" if r["rule"] == "one fit" else "records" if recorded else "probe"
            groups.setdefault(group, []).append(f"{row} {r['cpu_seconds_per_epoch']:.2f}")
    lines = ["  CPU-seconds " + "; ".join(f"{labels[g]}: {', '.join(groups[g])}" for g in labels if g in groups)]
    notes = [f"{row} ({r['rate_note']})" for row, r in t.get("row_estimates", {}).items() if r.get("rate_note")]
    notes += [f"backend [{' '.join(b['rows'])}] ({b['rate_note']})" for b in t.get("backends", [])
              if b.get("rate_note")]
    if notes:
        lines.append(f"  at the probe's rate, the finished stages' records giving none: {'; '.join(notes)}")
    return lines if groups else lines[1:]


def _table_lines(name: str, t: dict[str, Any]) -> list[str]:
    """A table's line of the plan, then which rows' epochs come from records and which from the cap, the backends,
    and which rows' seconds per epoch come from records and which from the probe."""
    hours = f", est. {t['cpu_hours']:.2f} CPU-h" if "cpu_hours" in t else ""
    lines = [f"table {name}: {t['rows']} rows x {len(t['seeds'])} seeds = {t['runs']} runs{hours}"]
    groups: dict[str, list[str]] = {}
    for row, r in t.get("row_estimates", {}).items():
        rule = "records" if r["rule"].startswith("records") else r["rule"]
        groups.setdefault(rule, []).append(f"{row} {r['epochs']}" if rule != "one fit" else row)
    labels = {"records": "epochs per seed from the chosen trials' records", "cap": "at the epoch cap",
              "one fit": "one fit"}
    if groups:
        lines.append("  " + "; ".join(f"{labels[g]}: {', '.join(groups[g])}" for g in labels if g in groups))
    if t.get("backends"):
        shown = [f"[{' '.join(b['rows'])}] {b['epochs']} ({'records' if b['rule'].startswith('records') else 'cap'})"
                 + _backend_rate(b) for b in t["backends"]]
        lines.append(f"  backends, each trained once per seed for its rows: {', '.join(shown)}")
    return lines + _rate_lines(t)


def _backend_rate(b: dict[str, Any]) -> str:
    """`` x 0.69 CPU-s (records)`` of a backend with a rate."""
    if b.get("cpu_seconds_per_epoch") is None:
        return ""
    return f" x {b['cpu_seconds_per_epoch']:.2f} CPU-s ({'records' if b['rate_rule'].startswith(RECORDS) else 'probe'})"


def format_plan(plan: dict[str, Any], cpus: int) -> str:
    """The plan as the terminal shows it."""
    lines = [f"campaign {plan['campaign']} on {plan['dataset']}: {sum(len(l) for l in plan['levels'])} stages in "
             f"{len(plan['levels'])} levels, {len(plan['tables'])} table(s); budget {plan['budget']} trials per "
             f"searched stage (a grid: all of it); searches at seed {plan['search_seed']}, tables at seeds "
             f"{plan['table_seeds']}"]
    if plan.get("resources"):
        r = plan["resources"]
        at_once = r.get("stages_at_once", 1)
        studies = ("stages and tables one at a time" if at_once == 1 else
                   f"up to {at_once} stages and tables side by side, each once the stages it needs are chosen")
        lines.append(f"trials: up to {r['max_concurrent']} at once, each {r['cpus_per_trial']:g} CPU(s) and "
                     f"{r['gpus_per_trial']:g} GPU(s), train.device {r['device'] or 'as the spaces say'}; {studies}")
    for number, level in enumerate(plan["levels"], 1):
        lines.append(f"level {number}:")
        for stage in level:
            lines += _stage_line(stage, plan["stages"][stage], plan["stages"])
    for name, t in plan["tables"].items():
        lines += _table_lines(name, t)
    if plan["cpu_hours"] is not None:
        lines.append(f"total: est. {plan['cpu_hours']:.2f} CPU-hours (imported trials excluded), "
                     f"~{plan['cpu_hours'] / max(1, cpus):.2f} "
                     f"h wall on {cpus} CPUs (searches: ASHA-expected epochs, calibrated where marked, at the "
                     f"probe's seconds per epoch; tables: recorded epochs where marked, else the epoch cap, an upper "
                     f"bound, at the recorded seconds per epoch where marked, else the probe's)")
    return "\n".join(lines)
