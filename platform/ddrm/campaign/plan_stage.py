"""A search stage's entry of the campaign plan: its trials (imported, left), epochs per trial and their rule
(ASHA's expectation or the cap, calibrated by earlier records of the stage: :func:`calibration`), a DDRM / mean
search's backend pretraining (:func:`search_backend`), and the CPU-hours (:func:`search_entry`).
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any, Callable

from ..config import Config
from ..tuning.spec import SearchSpec
from .estimate import backend_key, per_trial_epochs, probe_key, search_epochs
from .plan_bases import Basis
from .plan_rate import PROBE
from .records import (ChosenTrials, EpochRecord, backend_epochs, epoch_record, final_epochs, recorded_cpu_hours,
                      sibling_records)
from .overrides import stage_keys
from .spec import CampaignSpec

Seconds = Callable[[Config], "tuple[float, float] | None"]  # (final stage's, backend's) seconds per epoch, or None
PRETRAINED = "once, by the driver"


def hours(seconds: float, spec: CampaignSpec) -> float:
    """Seconds of one trial's CPUs as CPU-hours."""
    return seconds * spec.cpus_per_trial / 3600


def backend_cap(config: Config) -> int:
    """The epoch cap of ``config``'s backend."""
    return config.train.stage_epochs(getattr(config.model, "epochs", None))


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
            return min(epochs, backend_cap(config)), stage
    return None


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
    return {"epochs": record[0] if record else backend_cap(config),
            "rule": f"records of {record[1]}" if record else "cap",
            "trained": PRETRAINED if pretrained else "in every trial"}


def search_entry(spec: CampaignSpec, stage: str, basis: Basis, bases: dict[str, Basis], out: Path,
                 chosen: ChosenTrials, seconds_of: Seconds) -> dict[str, Any]:
    """A search stage's plan: trials (imported, left), epochs per trial and its rule, and CPU-hours at the probe's
    seconds per epoch (``rate_rule``): the trials left (``trials_cpu_hours``, what runs.csv will record), the
    driver's backend pretraining, their sum (``cpu_hours``), and all trials from scratch."""
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

    pretrain = hours(backend_seconds if pretrained else 0.0, spec)
    entry.update(rate_rule=PROBE, trials_cpu_hours=hours(trials_seconds(left), spec), pretrain_cpu_hours=pretrain,
                 cpu_hours=hours(trials_seconds(left), spec) + pretrain,
                 from_scratch_cpu_hours=hours(trials_seconds(trials), spec) + pretrain)
    return entry


def stage_entry(spec: CampaignSpec, stage: str, dataset: str, bases: dict[str, Basis], out: Path,
                chosen: ChosenTrials, seconds_of: Seconds) -> dict[str, Any]:
    """One stage's entry of the plan (a fixed stage: nothing to train); ``overrides``: the keys the stage's
    override sets on the dataset, where it has one (its config, and so its estimate, has them already)."""
    basis = bases[stage]
    entry: dict[str, Any] = {"inherits": {k: list(v) for k, v in spec.stages[stage].inherit.items()},
                             "model": probe_key(basis.config), "imports": spec.imports.get(dataset, {}).get(stage)}
    if own := stage_keys(spec, stage, dataset):  # only where there are some: other plans keep their shape
        entry["overrides"] = own
    if basis.search is None:
        entry.update(kind="fixed", basis="fixed", trials=0, imported=0, left=0, epoch_cap=0, expected_epochs=0.0,
                     rule="fixed", cpu_hours=0.0, trials_cpu_hours=0.0)
        return entry
    return {**entry, **search_entry(spec, stage, basis, bases, out, chosen, seconds_of)}

