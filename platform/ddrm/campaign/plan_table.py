"""A table's entry of the campaign plan: per row its final stage's epochs per seed and their rule (the chosen
trial's records, else the cap, or one fit) and its CPU-seconds per epoch and theirs (the chosen trial's recorded
rate, else the probe's: :mod:`.plan_rate`), each distinct backend once per seed likewise, and the CPU-hours over
the seeds."""

from __future__ import annotations

from typing import Any

from .estimate import backend_key, final_epochs_cap, probe_key
from .plan_bases import Basis
from .plan_rate import Rate, backend_rate, probe_rate, row_rate
from .plan_stage import Seconds, backend_cap, backend_record
from .records import ChosenTrials, final_epochs
from .spec import CampaignSpec


def _cost(seeds: int, units: float, rate: Rate) -> dict[str, float]:
    """``{cpu_hours}`` of ``units`` epochs (or fits) per seed at ``rate`` (none without a rate: no probe)."""
    return {} if rate.cpu_seconds is None else {"cpu_hours": seeds * units * rate.cpu_seconds / 3600}


def table_entry(spec: CampaignSpec, name: str, bases: dict[str, Basis], chosen: ChosenTrials,
                seconds_of: Seconds) -> dict[str, Any]:
    """A table's plan: per row its final stage's epochs per seed (records / cap / one fit), CPU-seconds per epoch
    (records / probe) and CPU-hours over the seeds (a backend row's: its backend's); each distinct backend once
    per seed likewise; and the table's CPU-hours, their sum."""
    seeds = len(spec.table_seeds)
    rows: dict[str, Any] = {}
    backends: dict[str, dict[str, Any]] = {}
    have_seconds = True
    for row, stage in spec.tables[name].rows.items():
        config = bases[stage].config
        per_epoch = seconds_of(config)
        have_seconds = have_seconds and per_epoch is not None
        final_probe, backend_probe = (probe_rate(s, spec) for s in (per_epoch or (None, None)))
        estimate: dict[str, Any] = {"stage": stage, "model": probe_key(config)}
        if config.final_stage != "backend":  # the DDRM stage or a standalone model: per row
            cap = final_epochs_cap(config)
            record = chosen.row(stage) if bases[stage].source == "chosen" else None
            recorded = final_epochs(record) if record is not None else None
            epochs, rule = ((0, "one fit") if not cap else (min(recorded, cap), "records") if recorded is not None
                            else (cap, "cap"))
            rate = row_rate(stage, bases[stage], chosen, final_probe) if cap else final_probe
            estimate.update(epochs=epochs, rule=rule, **rate.fields(), **_cost(seeds, epochs if cap else 1, rate))
        if config.final_stage in ("backend", "ddrm"):  # its backend: once per seed for the rows that share it
            key = backend_key(config)
            if key not in backends:
                record = backend_record(config, bases, chosen)
                epochs = record[0] if record else backend_cap(config)
                probe = final_probe if config.final_stage == "backend" else backend_probe
                rate = backend_rate(record, bases, chosen, probe)
                backends[key] = {"model": config.model.name, "rows": [], "epochs": epochs,
                                 "rule": f"records of {record[1]}" if record else "cap", **rate.fields(),
                                 **_cost(seeds, epochs, rate)}
            backends[key]["rows"].append(row)
            if config.final_stage == "backend":  # its cost is its backend's (the backend's cpu_hours and rate_note)
                shared = backends[key]
                estimate.update({k: shared[k] for k in ("epochs", "rule", "cpu_seconds_per_epoch", "rate_rule")})
            estimate["backend"] = list(backends).index(key)
        rows[row] = estimate
    total = sum(part.get("cpu_hours", 0.0) for part in [*rows.values(), *backends.values()])
    entry = {"rows": len(rows), "seeds": list(spec.table_seeds), "runs": len(rows) * seeds, "row_estimates": rows,
             "backends": list(backends.values())}
    return {**entry, **({"cpu_hours": total} if have_seconds else {})}
