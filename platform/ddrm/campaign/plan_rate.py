"""The CPU-seconds per epoch a table's estimate charges (:class:`Rate`): a finished search's chosen trial's recorded
rate (:func:`.records.recorded_rate`) where its cost is of the same epochs (:func:`row_rate`, :func:`backend_rate`),
else the probe's (:func:`probe_rate`) and, where records exist but give no rate, why not. Searches keep the probe:
a search's own records never estimate it, and another stage's trials ran another config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .plan_bases import Basis
from .records import ChosenTrials, recorded_rate
from .spec import CampaignSpec

RECORDS = "rate from records"
PROBE = "rate from the probe"


@dataclass(frozen=True)
class Rate:
    """CPU-seconds per epoch (a one-fit row: of its fit; None when the plan has no probe) and the rule they come
    from: ``rate from records of <stage>`` or ``rate from the probe``, with ``note``: why not records, where the
    stage finished but its records give no rate."""

    cpu_seconds: float | None
    rule: str
    note: str = ""

    def fields(self) -> dict[str, Any]:
        """The rate as a plan entry's keys: ``cpu_seconds_per_epoch``, ``rate_rule`` and any ``rate_note``."""
        return {"cpu_seconds_per_epoch": self.cpu_seconds, "rate_rule": self.rule,
                **({"rate_note": self.note} if self.note else {})}


def probe_rate(seconds: float | None, spec: CampaignSpec) -> Rate:
    """The probe's seconds per epoch (one trial's CPUs busy for them) as CPU-seconds per epoch."""
    return Rate(None if seconds is None else seconds * spec.cpus_per_trial, PROBE)


def row_rate(stage: str, basis: Basis, chosen: ChosenTrials, probe: Rate) -> Rate:
    """A table row's rate of its final stage: its stage's chosen trial's recorded rate once the search finished
    here, else ``probe`` (with why not, where it finished)."""
    if basis.source != "chosen":
        return probe
    row = chosen.row(stage)
    if row is None:
        return replace(probe, note=f"no row of {stage}'s runs.csv is its chosen config")
    rate, why = recorded_rate(row)
    return Rate(rate, f"{RECORDS} of {stage}") if rate is not None else replace(probe, note=f"{stage}: {why}")


def backend_rate(found: tuple[int, str] | None, bases: dict[str, Basis], chosen: ChosenTrials,
                 probe: Rate) -> Rate:
    """A backend's rate from the stage whose chosen trial gave its epochs (``found``:
    :func:`.plan_stage.backend_record`): that trial's recorded rate when it trained the backend alone (a standalone
    backend stage); a DDRM trial that trained its own backend has one cost for both stages, so ``probe``."""
    if found is None:
        return probe
    stage = found[1]
    if bases[stage].config.final_stage != "backend":
        return replace(probe, note=f"{stage}'s chosen trial trained its backend and DDRM under one cost")
    return row_rate(stage, bases[stage], chosen, probe)
