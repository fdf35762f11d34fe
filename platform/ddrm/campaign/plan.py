"""``ddrm campaign plan``: the stage graph, each stage's trials and trial-epoch cap, and the estimated CPU-hours.

Before a campaign has run, a dependent stage's upstream configs are not chosen yet: the plan stands in each
search stage's base config (its model and defaults), or the ``chosen_config.yaml`` an earlier run left in the
campaign folder. The estimate's rules are in :mod:`.estimate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, config_from_dict
from .estimate import (epoch_seconds, final_epochs_cap, load_probes, probe_epoch, probe_key, save_probes,
                       search_epochs)
from .run import CHOSEN_FILE, fixed_config, resources_record, search_spec
from .spec import CampaignSpec, stage_order


def stand_in_configs(spec: CampaignSpec, dataset: str, out: Path) -> dict[str, Config]:
    """Each stage's chosen config if an earlier run wrote it, else its search's base config."""
    configs: dict[str, Config] = {}
    for level in stage_order(spec):
        for stage in level:
            path = out / "stages" / stage / CHOSEN_FILE
            if path.is_file():
                configs[stage] = config_from_dict(yaml.safe_load(path.read_text()))
            elif spec.stages[stage].fixed is not None:
                configs[stage] = fixed_config(spec, stage, dataset, configs)
            else:
                configs[stage] = config_from_dict(search_spec(spec, stage, dataset, configs).base)
    return configs


def plan_campaign(spec: CampaignSpec, dataset: str, out: str | Path, data_dir: str | None = None,
                  probe: bool = True) -> dict[str, Any]:
    """The plan: ``levels`` (stage names), per stage its trials, cap, expected epochs and estimated CPU-hours,
    per table its runs and estimate, and the total. ``probe``: measure epochs on this host (else no hours)."""
    from ..host import host_tags

    out = Path(out)
    configs = stand_in_configs(spec, dataset, out)
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

    stages: dict[str, Any] = {}
    for level in stage_order(spec):
        for stage in level:
            config = configs[stage]
            entry: dict[str, Any] = {"inherits": {k: list(v) for k, v in spec.stages[stage].inherit.items()},
                                     "model": probe_key(config), "imports": spec.imports.get(dataset, {}).get(stage)}
            if spec.stages[stage].fixed is not None:
                entry.update(kind="fixed", trials=0, epoch_cap=0, expected_epochs=0.0, cpu_hours=0.0)
            else:
                search = search_spec(spec, stage, dataset, configs)
                trials, cap, expected = search_epochs(search, config)
                entry.update(kind=search.mode, trials=trials, epoch_cap=cap, expected_epochs=expected)
                per_epoch = seconds_of(config)
                if per_epoch is not None:
                    final, backend = per_epoch
                    fits = trials if cap == 0 else 0  # a closed-form trial is one fit
                    backend_once = backend * config.train.stage_epochs(getattr(config.model, "epochs", None))
                    entry["cpu_hours"] = (expected * final + fits * final + backend_once) * spec.cpus_per_trial / 3600
            stages[stage] = entry
    tables: dict[str, Any] = {}
    for name, table in spec.tables.items():
        runs = len(table.rows) * len(spec.table_seeds)
        hours, backends = 0.0, set()
        for stage in table.rows.values():
            config = configs[stage]
            per_epoch = seconds_of(config)
            if per_epoch is None:
                continue
            final, backend = per_epoch
            cap = final_epochs_cap(config)
            hours += len(spec.table_seeds) * (cap * final if cap else final) / 3600
            if backend:
                key = json.dumps(config.model.settings(), sort_keys=True, default=str)
                if key not in backends:  # rows on one backend share its cached training
                    backends.add(key)
                    hours += len(spec.table_seeds) * config.train.stage_epochs(config.model.epochs) * backend / 3600
        tables[name] = {"rows": len(table.rows), "seeds": list(spec.table_seeds), "runs": runs,
                        **({"cpu_hours": hours * spec.cpus_per_trial} if probe else {})}
    total = sum(s.get("cpu_hours", 0.0) for s in stages.values()) + sum(t.get("cpu_hours", 0.0) for t in tables.values())
    return {"campaign": spec.name, "dataset": dataset, "budget": spec.budget, "search_seed": spec.search_seed,
            "table_seeds": list(spec.table_seeds), "levels": stage_order(spec), "stages": stages, "tables": tables,
            "resources": resources_record(spec),
            "cpu_hours": total if probe else None, "probes": {k: v for k, v in probes.items()} if probe else {}}


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
            s = plan["stages"][stage]
            inherits = "".join(f" <- {up}[{', '.join(keys)}]" for up, keys in s["inherits"].items())
            hours = f", est. {s['cpu_hours']:.2f} CPU-h" if "cpu_hours" in s else ""
            imports = f"; imports {s['imports']}" if s.get("imports") else ""  # its rows count toward the trials
            lines.append(f"  {stage}{inherits}: {s['model']}, {s['kind']}, {s['trials']} trials, <= {s['epoch_cap']} "
                         f"epochs each, ~{s['expected_epochs']:.0f} trial-epochs{hours}{imports}")
    for name, t in plan["tables"].items():
        hours = f", est. {t['cpu_hours']:.2f} CPU-h" if "cpu_hours" in t else ""
        lines.append(f"table {name}: {t['rows']} rows x {len(t['seeds'])} seeds = {t['runs']} runs{hours}")
    if plan["cpu_hours"] is not None:
        lines.append(f"total: est. {plan['cpu_hours']:.2f} CPU-hours, ~{plan['cpu_hours'] / max(1, cpus):.2f} h wall on "
                     f"{cpus} CPUs (upper-bound epochs for tables; ASHA-expected for searches)")
    return "\n".join(lines)
