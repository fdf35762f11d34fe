"""A table's entry of the campaign plan: per row its final stage's epochs per seed and their rule (the chosen
trial's records, else the cap, or one fit), each distinct backend once per seed, and the CPU-hours over the seeds."""

from __future__ import annotations

from typing import Any

from .estimate import backend_key, final_epochs_cap, probe_key
from .plan_bases import Basis
from .plan_stage import Seconds, backend_cap, backend_record, hours
from .records import ChosenTrials, final_epochs
from .spec import CampaignSpec


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
                                 "epochs": record[0] if record else backend_cap(config),
                                 "rule": f"records of {record[1]}" if record else "cap"}
                seconds += seeds * backends[key]["epochs"] * (final_s if config.final_stage == "backend" else backend_s)
            backends[key]["rows"].append(row)
            if config.final_stage == "backend":
                estimate.update(epochs=backends[key]["epochs"], rule=backends[key]["rule"])
            estimate["backend"] = list(backends).index(key)
        rows[row] = estimate
    entry = {"rows": len(rows), "seeds": list(spec.table_seeds), "runs": len(rows) * seeds, "row_estimates": rows,
             "backends": list(backends.values())}
    return {**entry, **({"cpu_hours": hours(seconds, spec)} if have_seconds else {})}

