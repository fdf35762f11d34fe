"""``ddrm campaign plan``: the stage graph, each stage's trials and trial-epoch cap, and the estimated CPU-hours.

Each stage's config stands in as the run would have it (:func:`stage_bases`): its ``chosen_config.yaml`` when an
earlier run finished its search in the campaign folder; else, for a search that imports an earlier one, the best
imported row (what the search chooses if no trial it trains does better); else its base config. A stage's
imported rows are counted by the run's own selection (:func:`.run.earlier_search`) and only the trials left to
train are estimated; the count is *provisional* while an upstream stage it inherits from is not chosen (nor
settled by an import that fills its budget), since the rows that are its experiment depend on that choice.

The estimate's rules (:data:`RULES`; each number in the plan, and so in ``campaign.json``'s ``estimate``, names
its rule):

- a search stage: ``trials left x epochs per trial x seconds per epoch`` (probe, :mod:`.estimate`), the epochs
  per trial ASHA's expectation (FIFO: the cap), *calibrated* by earlier records of the same stage where there are
  some (:func:`calibration`); a closed-form trial is one fit. A DDRM / mean-of-liked-items stage whose space
  searches no model key adds its backend's pretraining by the study's driver, once: at its recorded epochs when a
  finished stage here trained that backend (:func:`backend_record`), else at its cap (an upper bound: 0 when the
  cache already holds it). The driver's pretraining is in no trial's ``runs.csv`` row, so ``trials_cpu_hours`` (the
  trials alone) is what ``campaign.md`` sets beside the recorded cost.
- a table: per row and seed its final stage's epochs, *from records* (the chosen trial's ``epoch``,
  :mod:`.records`) when its stage's search finished in the campaign folder, else at the epoch cap; plus each
  distinct backend (:func:`.estimate.backend_key`: a standalone backend row, its mean-of-liked-items and DDRM rows
  share one) once per seed, from records or at its cap likewise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Callable

import pandas as pd
import yaml

from ..config import Config, config_from_dict
from ..tuning.spec import SearchSpec
from .estimate import (backend_key, epoch_seconds, final_epochs_cap, load_probes, per_trial_epochs, probe_epoch,
                       probe_key, save_probes, search_epochs)
from .imports import Selection
from .records import (ChosenTrials, EpochRecord, backend_epochs, epoch_record, final_epochs, recorded_cpu_hours,
                      sibling_records)
from .run import CHOSEN_FILE, best_config, earlier_search, fixed_config, resources_record, search_spec
from .spec import CampaignSpec, stage_order

RULES = {
    "asha": "epochs per trial: ASHA's expectation (every trial to the grace period, one in reduction_factor to "
            "each next rung, up to the cap)",
    "cap": "epochs per trial (FIFO search) or per table run: the epoch cap (early stopping only lowers it)",
    "one fit": "a closed-form model or the mean of liked items: one fit, no epochs",
    "calibrated": "ASHA's (or the cap's) epochs per trial x the mean recorded / expected trial-epochs of earlier "
                  "records of the same stage: the earlier search it imports (same dataset), else the finished "
                  "searches of the stage in the other dataset folders beside this one; never its own records",
    "records": "a table row's epochs per seed: those its stage's chosen trial trained (runs.csv `epoch`; a "
               "backend's: the chosen trial of a finished stage that trained it)",
    "pretrain": "a DDRM / mean stage's backend, trained once by the study's driver before the trials (not in "
                "runs.csv): at its recorded epochs, else its cap",
    "imports": "a stage's rows imported from an earlier search count toward its trials; only the trials left are "
               "estimated (cpu_hours); from_scratch_cpu_hours: all of them",
}
Seconds = Callable[[Config], "tuple[float, float] | None"]  # (final stage's, backend's) seconds per epoch, or None


@dataclass
class Basis:
    """One stage as the plan stands it in: its config and search, its imported rows, and whether the run would use
    this config (``final``) or the plan guesses it."""

    config: Config
    source: str  # "chosen" (chosen_config.yaml) | "fixed" | "best imported row" | "base"
    final: bool
    search: SearchSpec | None = None
    selection: Selection | None = None
    provisional: list[str] = field(default_factory=list)  # upstream stages not settled: its imports may change


def best_imported(search: SearchSpec, selection: Selection | None) -> Config | None:
    """The config ``search`` would choose among its imported rows alone (the best validation objective of the
    rows that trained to the end, :func:`.run.best_config`), or None when none did."""
    from ..metrics import BEST
    from ..report.runs import best_run
    from .records import row_config

    if selection is None or selection.rows.empty:
        return None
    objective = BEST + search.metric
    if objective not in selection.rows.columns:
        return None
    rows = selection.rows.assign(**{objective: pd.to_numeric(selection.rows[objective], errors="coerce")})
    best = best_run(rows, search.metric)
    flat = row_config(best) if best is not None else None
    if flat is None:
        return None
    return best_config(search, {"best": {"params": {k: flat[k] for k in search.space if k in flat}}})


def stage_bases(spec: CampaignSpec, dataset: str, out: Path) -> dict[str, Basis]:
    """Every stage's :class:`Basis`, in dependency order (module docstring)."""
    bases: dict[str, Basis] = {}
    for level in stage_order(spec):
        for stage in level:
            configs = {name: basis.config for name, basis in bases.items()}
            pending = [up for up in spec.stages[stage].inherit if not bases[up].final]
            path = out / "stages" / stage / CHOSEN_FILE
            if spec.stages[stage].fixed is not None:
                bases[stage] = Basis(fixed_config(spec, stage, dataset, configs), "fixed", not pending,
                                     provisional=pending)
                continue
            search = search_spec(spec, stage, dataset, configs)
            selection = earlier_search(spec, stage, dataset, search, announce=False)
            if path.is_file():
                config, source, final = config_from_dict(yaml.safe_load(path.read_text())), "chosen", True
            elif (best := best_imported(search, selection)) is not None:
                trials = search_epochs(search, best)[0]
                config, source, final = best, "best imported row", not pending and len(selection.rows) >= trials
            else:
                config, source, final = config_from_dict(search.base), "base", False
            bases[stage] = Basis(config, source, final, search, selection, pending)
    return bases


def stand_in_configs(spec: CampaignSpec, dataset: str, out: Path) -> dict[str, Config]:
    """Each stage's config as the plan stands it in (:func:`stage_bases`)."""
    return {stage: basis.config for stage, basis in stage_bases(spec, dataset, Path(out)).items()}


def calibration(spec: CampaignSpec, stage: str, basis: Basis, out: Path) -> tuple[float, list[EpochRecord]] | None:
    """``(factor, records)`` scaling the stage's expected epochs per trial: the mean recorded / expected ratio of
    the earlier search it imports (same dataset, same experiment) when that has :data:`.records.MIN_TRIALS`
    trials, else of the finished searches of the same stage in the other dataset folders beside ``out``; None
    without such records or for a closed-form stage. The stage's own records in ``out`` are never used: the
    ratio ``campaign.md`` shows would compare them with themselves."""
    search = basis.search
    cap, per_trial = per_trial_epochs(search, basis.config)
    if not cap:
        return None
    records = []
    if basis.selection is not None:
        found = epoch_record(basis.selection.rows, per_trial, basis.selection.source)
        records = [found] if found is not None else []
    if not records:
        records = sibling_records(out, spec.name, stage, lambda config: per_trial_epochs(search, config)[1])
    return (mean(r.ratio for r in records), records) if records else None


def backend_record(config: Config, bases: dict[str, Basis], chosen: ChosenTrials) -> tuple[int, str] | None:
    """``(epochs, stage)``: the epochs a finished stage's chosen trial spent training ``config``'s backend (the
    same :func:`.estimate.backend_key`): a standalone backend's ``epoch``, or a DDRM trial's own backend
    training; None when no finished stage here trained it."""
    key = backend_key(config)
    for stage, basis in bases.items():
        if basis.source != "chosen" or basis.config.final_stage not in ("backend", "ddrm"):
            continue
        if backend_key(basis.config) != key or (row := chosen.row(stage)) is None:
            continue
        epochs = final_epochs(row) if basis.config.final_stage == "backend" else backend_epochs(row)
        if epochs is not None:
            return min(epochs, _backend_cap(config)), stage
    return None


def _backend_cap(config: Config) -> int:
    return config.train.stage_epochs(getattr(config.model, "epochs", None))


def _hours(seconds: float, spec: CampaignSpec) -> float:
    return seconds * spec.cpus_per_trial / 3600


PRETRAINED = "once, by the driver"


def search_backend(search: SearchSpec, config: Config, bases: dict[str, Basis],
                   chosen: ChosenTrials) -> dict[str, Any] | None:
    """How a DDRM / mean search trains its backend: ``{epochs, rule, trained}``; None for another search. The
    study's driver pretrains it once when the space searches no model or loss key (:func:`ddrm.tuning.runner.
    run_search`), at the epochs a finished stage recorded for it, else its cap; otherwise each trial trains its
    own, at its cap."""
    if config.final_stage != "ddrm":
        return None
    pretrained = not any(k.startswith(("model.", "denoise.")) for k in search.space)
    record = backend_record(config, bases, chosen) if pretrained else None
    return {"epochs": record[0] if record else _backend_cap(config),
            "rule": f"records of {record[1]}" if record else "cap",
            "trained": PRETRAINED if pretrained else "in every trial"}


def search_entry(spec: CampaignSpec, stage: str, basis: Basis, bases: dict[str, Basis], out: Path,
                 chosen: ChosenTrials, seconds_of: Seconds) -> dict[str, Any]:
    """A search stage's plan: trials (imported, left), epochs per trial and its rule, and CPU-hours: the trials
    left (``trials_cpu_hours``, what runs.csv will record), the driver's backend pretraining, their sum
    (``cpu_hours``), and all trials from scratch."""
    search, config = basis.search, basis.config
    trials, cap, _ = search_epochs(search, config)
    _, asha = per_trial_epochs(search, config)
    imported = len(basis.selection.rows) if basis.selection is not None else 0
    left = max(0, trials - imported)
    calibrated = calibration(spec, stage, basis, out)
    per_trial = min(float(cap), asha * calibrated[0]) if calibrated else asha
    base_rule = "one fit" if not cap else ("asha" if search.scheduler["type"] == "asha" else "cap")
    rule = base_rule + (f" x{calibrated[0]:.2f} calibrated" if calibrated else "")
    entry: dict[str, Any] = {
        "kind": search.mode, "basis": basis.source, "trials": trials, "imported": imported, "left": left,
        "provisional": list(basis.provisional), "epoch_cap": cap, "asha_epochs_per_trial": asha,
        "epochs_per_trial": per_trial, "expected_epochs": left * per_trial, "rule": rule,
        "calibration": ({"factor": calibrated[0], "records": [r.record() for r in calibrated[1]]}
                        if calibrated else None),
        "imported_cpu_hours": recorded_cpu_hours(basis.selection.rows) if basis.selection is not None else 0.0}
    if (backend_plan := search_backend(search, config, bases, chosen)) is not None:
        entry["backend"] = backend_plan
    per_epoch = seconds_of(config)
    if per_epoch is None:
        return entry
    final, backend = per_epoch
    pretrained = backend_plan is not None and backend_plan["trained"] == PRETRAINED
    backend_seconds = backend * backend_plan["epochs"] if backend_plan is not None else 0.0

    def trials_seconds(n: int) -> float:
        return n * (per_trial * final if cap else final) + (0.0 if pretrained else n * backend_seconds)

    pretrain = _hours(backend_seconds if pretrained else 0.0, spec)
    entry.update(trials_cpu_hours=_hours(trials_seconds(left), spec), pretrain_cpu_hours=pretrain,
                 cpu_hours=_hours(trials_seconds(left), spec) + pretrain,
                 from_scratch_cpu_hours=_hours(trials_seconds(trials), spec) + pretrain)
    return entry


def stage_entry(spec: CampaignSpec, stage: str, dataset: str, bases: dict[str, Basis], out: Path,
                chosen: ChosenTrials, seconds_of: Seconds) -> dict[str, Any]:
    """One stage's entry of the plan (a fixed stage: nothing to train)."""
    basis = bases[stage]
    entry: dict[str, Any] = {"inherits": {k: list(v) for k, v in spec.stages[stage].inherit.items()},
                             "model": probe_key(basis.config), "imports": spec.imports.get(dataset, {}).get(stage)}
    if basis.search is None:
        entry.update(kind="fixed", basis="fixed", trials=0, imported=0, left=0, epoch_cap=0, expected_epochs=0.0,
                     rule="fixed", cpu_hours=0.0, trials_cpu_hours=0.0)
        return entry
    return {**entry, **search_entry(spec, stage, basis, bases, out, chosen, seconds_of)}


def table_entry(spec: CampaignSpec, name: str, bases: dict[str, Basis], chosen: ChosenTrials,
                seconds_of: Seconds) -> dict[str, Any]:
    """A table's plan: per row its final stage's epochs per seed and their rule (records / cap / one fit), each
    distinct backend once per seed, and the CPU-hours over the table's seeds."""
    seeds = len(spec.table_seeds)
    rows: dict[str, Any] = {}
    backends: dict[str, dict[str, Any]] = {}
    seconds, have_seconds = 0.0, True
    for row, stage in spec.tables[name].rows.items():
        config = bases[stage].config
        per_epoch = seconds_of(config)
        have_seconds = have_seconds and per_epoch is not None
        final_s, backend_s = per_epoch or (0.0, 0.0)
        estimate: dict[str, Any] = {"stage": stage, "model": probe_key(config)}
        if config.final_stage != "backend":  # the DDRM stage or a standalone model: per row
            cap = final_epochs_cap(config)
            record = chosen.row(stage) if bases[stage].source == "chosen" else None
            recorded = final_epochs(record) if record is not None else None
            epochs, rule = ((0, "one fit") if not cap else (min(recorded, cap), "records") if recorded is not None
                            else (cap, "cap"))
            estimate.update(epochs=epochs, rule=rule)
            seconds += seeds * (epochs * final_s if cap else final_s)
        if config.final_stage in ("backend", "ddrm"):  # its backend: once per seed for the rows that share it
            key = backend_key(config)
            if key not in backends:
                record = backend_record(config, bases, chosen)
                backends[key] = {"model": config.model.name, "rows": [],
                                 "epochs": record[0] if record else _backend_cap(config),
                                 "rule": f"records of {record[1]}" if record else "cap"}
                seconds += seeds * backends[key]["epochs"] * (final_s if config.final_stage == "backend" else backend_s)
            backends[key]["rows"].append(row)
            if config.final_stage == "backend":
                estimate.update(epochs=backends[key]["epochs"], rule=backends[key]["rule"])
            estimate["backend"] = list(backends).index(key)
        rows[row] = estimate
    entry = {"rows": len(rows), "seeds": list(spec.table_seeds), "runs": len(rows) * seeds, "row_estimates": rows,
             "backends": list(backends.values())}
    return {**entry, **({"cpu_hours": _hours(seconds, spec)} if have_seconds else {})}


def plan_campaign(spec: CampaignSpec, dataset: str, out: str | Path, data_dir: str | None = None,
                  probe: bool = True) -> dict[str, Any]:
    """The plan: ``levels`` (stage names), per stage its trials (imported, left), cap, expected epochs, rule and
    estimated CPU-hours, per table its runs, rows' epochs and estimate, the total (what is left to train) and
    ``rules`` (:data:`RULES`). ``probe``: measure epochs on this host (else no hours)."""
    from ..host import host_tags

    out = Path(out)
    bases = stage_bases(spec, dataset, out)
    chosen = ChosenTrials(out)
    host = json.dumps(host_tags(), sort_keys=True)
    probes_path = out / "probe.json"
    probes = load_probes(probes_path, host)

    def seconds_of(config: Config) -> tuple[float, float] | None:
        if not probe:
            return None
        key = f"{dataset}:{probe_key(config)}"
        if key not in probes:
            print(f"probing one epoch of {probe_key(config)} on {dataset} ...", flush=True)
            probes[key] = probe_epoch(config, data_dir, threads=max(1, int(spec.cpus_per_trial)))
            save_probes(probes_path, host, probes)
        return epoch_seconds(probes[key], config)

    stages = {stage: stage_entry(spec, stage, dataset, bases, out, chosen, seconds_of)
              for level in stage_order(spec) for stage in level}
    tables = {name: table_entry(spec, name, bases, chosen, seconds_of) for name in spec.tables}
    total = sum(part.get("cpu_hours", 0.0) for part in [*stages.values(), *tables.values()])
    return {"campaign": spec.name, "dataset": dataset, "budget": spec.budget, "search_seed": spec.search_seed,
            "table_seeds": list(spec.table_seeds), "levels": stage_order(spec), "stages": stages, "tables": tables,
            "resources": resources_record(spec), "rules": dict(RULES),
            "cpu_hours": total if probe else None, "probes": {k: v for k, v in probes.items()} if probe else {}}


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
    imports = f"; imports {s['imports']}" if s.get("imports") else ""
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


def _table_lines(name: str, t: dict[str, Any]) -> list[str]:
    """A table's line of the plan, then which rows' epochs come from records and which from the cap."""
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
                 for b in t["backends"]]
        lines.append(f"  backends, each trained once per seed for its rows: {', '.join(shown)}")
    return lines


def format_plan(plan: dict[str, Any], cpus: int) -> str:
    """The plan as the terminal shows it."""
    lines = [f"campaign {plan['campaign']} on {plan['dataset']}: {sum(len(l) for l in plan['levels'])} stages in "
             f"{len(plan['levels'])} levels, {len(plan['tables'])} table(s); budget {plan['budget']} trials per "
             f"searched stage (a grid: all of it); searches at seed {plan['search_seed']}, tables at seeds "
             f"{plan['table_seeds']}"]
    if plan.get("resources"):
        r = plan["resources"]
        lines.append(f"trials: up to {r['max_concurrent']} at once, each {r['cpus_per_trial']:g} CPU(s) and "
                     f"{r['gpus_per_trial']:g} GPU(s), train.device {r['device'] or 'as the spaces say'}")
    for number, level in enumerate(plan["levels"], 1):
        lines.append(f"level {number}:")
        for stage in level:
            lines += _stage_line(stage, plan["stages"][stage], plan["stages"])
    for name, t in plan["tables"].items():
        lines += _table_lines(name, t)
    if plan["cpu_hours"] is not None:
        lines.append(f"total: est. {plan['cpu_hours']:.2f} CPU-hours (imported trials excluded), "
                     f"~{plan['cpu_hours'] / max(1, cpus):.2f} "
                     f"h wall on {cpus} CPUs (searches: ASHA-expected epochs, calibrated where marked; tables: "
                     f"recorded epochs where marked, else the epoch cap, an upper bound)")
    return "\n".join(lines)
