"""``ddrm campaign plan``: the stage graph, each stage's trials and trial-epoch cap, and the estimated CPU-hours.

The plan (:func:`plan_campaign`) is built from: each stage as the run would have it (:mod:`.plan_bases`: its
chosen config, the best imported row or its base; its imported rows, counted by the run's own selection, and
whether that count is provisional), each search stage's entry (:mod:`.plan_stage`: only the trials left to train
are estimated), each table's (:mod:`.plan_table`); :mod:`.plan_format` prints it.

The estimate's rules (:data:`RULES`; each number in the plan, and so in ``campaign.json``'s ``estimate``, names
its rule):

- a search stage: ``trials left x epochs per trial x seconds per epoch`` (the probe, :mod:`.estimate`), the epochs
  per trial ASHA's expectation (FIFO: the cap), *calibrated* by earlier records of the same stage where there are
  some (:func:`.plan_stage.calibration`); a closed-form trial is one fit. A DDRM / mean-of-liked-items stage whose
  space searches no model key adds its backend's pretraining by the study's driver, once: at its recorded epochs
  when a finished stage here trained that backend (:func:`.plan_stage.backend_record`), else at its cap (an upper
  bound: 0 when the cache already holds it). The driver's pretraining is in no trial's ``runs.csv`` row, so
  ``trials_cpu_hours`` (the trials alone) is what ``campaign.md`` sets beside the recorded cost.
- a table: per row and seed its final stage's epochs, *from records* (the chosen trial's ``epoch``,
  :mod:`.records`) when its stage's search finished in the campaign folder, else at the epoch cap; plus each
  distinct backend (:func:`.estimate.backend_key`: a standalone backend row, its mean-of-liked-items and DDRM rows
  share one) once per seed, from records or at its cap likewise. Each x its CPU-seconds per epoch, *from records*
  likewise (that chosen trial's ``cost_cpu_seconds / cost_epochs``, when its cost is of those epochs alone:
  :mod:`.plan_rate`), else the probe's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Config
from .estimate import epoch_seconds, load_probes, probe_epoch, probe_key, save_probes
from .frozen import utc_now
from .plan_bases import Basis, best_imported, stage_bases, stand_in_configs  # noqa: F401 - the plan's public names
from .plan_format import format_plan  # noqa: F401
from .plan_rate import PROBE, RECORDS
from .plan_stage import (PRETRAINED, Seconds, backend_record, calibration, search_backend,  # noqa: F401
                         search_entry, stage_entry)
from .plan_table import table_entry
from .records import ChosenTrials
from .run import resources_record
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
    RECORDS: "a table row's CPU-seconds per epoch (a backend's: of the finished stage that gave its epochs): its "
             "stage's chosen trial's runs.csv cost_cpu_seconds / cost_epochs (data loading and the per-epoch "
             "validation included), used only when that cost is of the epochs its final stage trained alone "
             "(cost_epochs = epoch; not a DDRM trial that trained its own backend); else the probe's, with why",
    PROBE: "seconds per epoch (a one-fit model: per fit): one epoch (train + validation) measured on this host by "
           "the probe (probe.json), x cpus_per_trial; every search, and each table row without a recorded rate",
}


def plan_campaign(spec: CampaignSpec, dataset: str, out: str | Path, data_dir: str | None = None,
                  probe: bool = True) -> dict[str, Any]:
    """The plan: ``levels`` (stage names), per stage its trials (imported, left), cap, expected epochs, rule and
    estimated CPU-hours, per table its runs, rows' epochs and estimate, the total (what is left to train),
    ``rules`` (:data:`RULES`) and ``made_at`` (UTC; a run freezes each part's entry when it starts:
    :mod:`.frozen`). ``probe``: measure epochs on this host (else no hours)."""
    from ..host import host_tags

    out = Path(out)
    made_at = utc_now()
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
    return {"campaign": spec.name, "dataset": dataset, "made_at": made_at, "budget": spec.budget,
            "search_seed": spec.search_seed, "table_seeds": list(spec.table_seeds), "levels": stage_order(spec),
            "stages": stages, "tables": tables,
            "resources": resources_record(spec), "rules": dict(RULES),
            "cpu_hours": total if probe else None, "probes": {k: v for k, v in probes.items()} if probe else {}}

