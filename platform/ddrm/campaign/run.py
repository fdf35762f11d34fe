"""Run a campaign on one dataset: every stage's search in dependency order, and every table, into one store.

A stage starts as soon as the stages it inherits from are chosen, a table as soon as its rows' stages are;
independent ones run side by side (``stages_at_once``, by default one per trial slot), sharing the campaign's
``max_concurrent`` trial slots (:mod:`.schedule`, :mod:`.jobs`). Each search stage is a ``ddrm tune`` study
named ``<campaign>-<dataset>-<stage>`` at the campaign's search seed and budget, its base completed with the
dataset and the keys it inherits from its upstream stages' *chosen* configs (best validation trial). Each table
is a ``ddrm ablate`` study whose rows are those chosen configs rerun at the table seeds. Everything resumes: a
study continues from the tracking store, else from the ``runs.csv`` the campaign folder holds (committed by an
earlier session), so no finished trial is trained twice. The campaign folder ``<out>`` holds per stage its
report and ``chosen_config.yaml``, per table its report, and ``campaign.json`` (what ran, what was imported, the
estimated and the actual cost; stages and tables in spec order). A stage may also import an earlier search (spec
``imports``): its rows that are the stage's experiment join the study, without test metrics, and count toward
the budget (:mod:`.imports`). A stage's base may be set further on one dataset (spec ``overrides``,
:mod:`.overrides`): ``campaign.json`` records the overrides in force (``overrides``, only where there are some),
and a stage whose folder ran otherwise on an overridden key is refused before it starts.

A SIGINT stops the campaign cleanly: every study running its trials ends (its finished trials are in the
folder's ``runs.csv`` already, its unfinished ones resume from its Tune folder) and the campaign stops there
(:class:`CampaignInterrupted`, no chosen config from a partial search); a study doing anything else stops at
once with the campaign. Rerunning the same command resumes.
"""

from __future__ import annotations

import contextlib

import fnmatch
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import Config, apply_overrides, config_from_dict, flatten
from ..errors import ConfigError
from ..tuning.spec import AblationSpec, Resources, SearchSpec, load_search_spec
from .frozen import carry_frozen, freeze_at_start, with_frozen
from .imports import Selection, select_rows
from .overrides import dataset_overrides, describe, refuse_searched, searched_keys, stage_keys
from .schedule import CampaignInterrupted, run_jobs
from .spec import CampaignSpec, import_path, space_path, stages_at_once

CHOSEN_FILE = "chosen_config.yaml"


def stop_if_interrupted(summary: dict[str, Any], part: str, folder: Path) -> None:
    """:class:`CampaignInterrupted` when the study of ``part`` was stopped before its end."""
    if summary.get("interrupted"):
        raise CampaignInterrupted(f"{part} was interrupted; its ended trials are kept in {folder / 'runs.csv'}; "
                                  f"rerun the command to resume")


def study_name(spec: CampaignSpec, dataset: str, part: str) -> str:
    """The MLflow experiment / Tune run name of one stage or table of the campaign on ``dataset``."""
    return f"{spec.name}-{dataset}-{part}"


def inherited(spec: CampaignSpec, stage: str, chosen: dict[str, Config]) -> dict[str, Any]:
    """The dotted keys ``stage`` takes from its upstream stages' chosen configs (later upstreams win)."""
    keys: dict[str, Any] = {}
    for upstream, patterns in spec.stages[stage].inherit.items():
        flat = chosen[upstream].to_flat_dict()
        keys.update({k: v for k, v in flat.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)})
    return keys


def stage_overrides(spec: CampaignSpec, stage: str, dataset: str, chosen: dict[str, Config]) -> dict[str, Any]:
    """What every trial of ``stage`` gets on top of its space's base: the campaign's base, the dataset, then the
    inherited keys (the stage's own override on the dataset comes last, :func:`search_spec`, :func:`fixed_config`)."""
    return {**flatten(spec.base), "data.name": dataset, **inherited(spec, stage, chosen)}


def trial_resources(spec: CampaignSpec) -> Resources:
    """Every trial's CPU and GPU share and device (:class:`Resources`: where it runs, not part of its config's
    identity, so a stage resumes on another device from its runs.csv)."""
    return Resources(spec.cpus_per_trial, spec.gpus_per_trial, spec.device)


def resources_record(spec: CampaignSpec) -> dict[str, Any]:
    """The resources as ``campaign.json`` and the plan record them (where studies and trials run, how many at
    once: a resumed campaign may run with others)."""
    return {"max_concurrent": spec.max_concurrent, "cpus_per_trial": spec.cpus_per_trial,
            "gpus_per_trial": spec.gpus_per_trial, "device": spec.device, "stages_at_once": stages_at_once(spec)}


def grid_size(search: SearchSpec) -> int:
    return math.prod(len(d["values"]) for d in search.space.values()) * search.num_samples


def search_spec(spec: CampaignSpec, stage: str, dataset: str, chosen: dict[str, Config]) -> SearchSpec:
    """The ``ddrm tune`` study of ``stage``: its space at the campaign's seed, budget and resources, its base the
    space's < the campaign's < the dataset < the inherited keys < the stage's override on ``dataset`` (spec
    ``overrides``, :mod:`.overrides`). A grid runs whole and must fit the budget; TPE runs exactly ``budget``
    trials (equal budget, DESIGN §4a)."""
    path = space_path(spec, stage)
    overrides = stage_overrides(spec, stage, dataset, chosen)
    searched = searched_keys(spec, stage)
    overrides = {k: v for k, v in overrides.items() if k not in searched}  # the space's own keys are searched
    own = stage_keys(spec, stage, dataset)
    refuse_searched(spec, stage, dataset, own, searched)  # load_campaign refused it already
    try:
        search = load_search_spec(path, {**overrides, **own})
    except ConfigError as exc:
        if not own:
            raise
        raise ConfigError(f"{spec.source}: overrides.{dataset}.{stage} ({describe(own)}) with the stage's inherited "
                          f"keys: {exc}") from None
    search = replace(search, name=study_name(spec, dataset, stage), seeds=(spec.search_seed,),
                     max_concurrent=spec.max_concurrent, resources=trial_resources(spec))
    if search.mode == "grid":
        if grid_size(search) > spec.budget:
            raise ConfigError(f"{path}: its grid has {grid_size(search)} points, over the campaign's budget of "
                              f"{spec.budget} trials; use mode tpe (equal budget) or a smaller grid")
        return search
    return replace(search, num_samples=spec.budget)


def fixed_config(spec: CampaignSpec, stage: str, dataset: str, chosen: dict[str, Config]) -> Config:
    """The config of a ``fixed`` stage (nothing to search): the campaign's base < the dataset < the inherited keys
    < ``fixed`` < the stage's override on ``dataset``."""
    base = apply_overrides({}, stage_overrides(spec, stage, dataset, chosen))
    config = apply_overrides(base, flatten(spec.stages[stage].fixed or {}))
    return config_from_dict(apply_overrides(config, stage_keys(spec, stage, dataset)))


def best_config(search: SearchSpec, summary: dict[str, Any]) -> Config:
    """The chosen config of a finished search: its base with the best trial's sampled values."""
    if summary.get("best") is None:
        raise ConfigError(f"search {search.name}: no trial finished, so there is no chosen config")
    params = {k: v for k, v in summary["best"]["params"].items() if k != "seed"}
    return config_from_dict(apply_overrides(search.base, {**params, "seed": search.seeds[0]}))


def table_spec(spec: CampaignSpec, table: str, dataset: str, chosen: dict[str, Config]) -> AblationSpec:
    """The ``ddrm ablate`` study of ``table``: each row's chosen config at every table seed."""
    rows = spec.tables[table].rows
    variants = {row: {k: v for k, v in chosen[stage].to_flat_dict().items() if k not in ("seed", "data.dir")}
                for row, stage in rows.items()}
    return AblationSpec(name=study_name(spec, dataset, table), base={}, seeds=tuple(spec.table_seeds),
                        variants=variants, reference=spec.tables[table].reference,
                        resources=trial_resources(spec), max_concurrent=spec.max_concurrent,
                        max_failures=1, source=spec.source, description=spec.tables[table].description,
                        trials=[(v, s) for v in variants for s in spec.table_seeds],
                        declared=spec.tables[table].declared(f"{spec.source}: tables.{table}"))


def earlier_search(spec: CampaignSpec, stage: str, dataset: str, search: SearchSpec,
                   announce: bool = True) -> Selection | None:
    """The rows of the earlier search ``stage`` imports on ``dataset`` (spec ``imports``) that are its
    experiment, test columns dropped (:mod:`.imports`); None when it imports none. ``announce``: print one line,
    how many rows are imported and why the others are left out (the plan counts them the same way, quietly)."""
    path = import_path(spec, dataset, stage)
    if path is None:
        return None
    selection = select_rows(path, search, source=_relative(str(path)))
    if announce:
        print(selection.line(stage), flush=True)
    return selection


def _copy_report(report: Path | None, to: Path) -> None:
    if report is not None and Path(report).is_dir():
        shutil.copytree(report, to, dirs_exist_ok=True)


def _runs_csv(folder: Path) -> str | None:
    path = folder / "runs.csv"
    return str(path) if path.is_file() else None


def _relative(path: str | None) -> str | None:
    """A path as committed files name it: relative to the working directory (no machine path)."""
    from ..report.runs import relative_path

    return relative_path(str(Path(path).resolve())) if path else None


def _write_chosen(folder: Path, config: Config, note: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = f"# {note}\n" + yaml.safe_dump(config.to_dict(), sort_keys=False)
    tmp = folder / f".{CHOSEN_FILE}.tmp"
    tmp.write_text(text)
    tmp.replace(folder / CHOSEN_FILE)


def dataset_facts(dataset: str, data_dir: str | None) -> dict[str, Any]:
    """What every report of the campaign says about its data: the split (kind and rule) and the sizes."""
    from ..data.prepared import load_prepared

    data = load_prepared(dataset, data_dir)
    return {"name": dataset, "split": data.split_label, "users": data.n_users, "items": data.n_items,
            **{split: int(len(data.split(split))) for split in ("train", "valid", "test")}}


def run_campaign(spec: CampaignSpec, dataset: str, out: str | Path, storage: str | None = None,
                 tracking_uri: str | None = None, data_dir: str | None = None,
                 estimate: dict[str, Any] | None = None,
                 replan: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every stage as soon as the stages it inherits from are chosen, every table as soon as its rows' stages
    are, up to :func:`~.spec.stages_at_once` side by side and ``max_concurrent`` trials in all (:mod:`.schedule`);
    returns and writes ``<out>/campaign.json``. ``estimate``: the launch's plan, kept with the estimates frozen
    when each part started (:mod:`.frozen`: carried over from the folder's ``campaign.json``, the others frozen as
    they start); ``replan``: makes a new plan, for a part the launch's plan stood in on stages chosen since."""
    from ..tuning.slots import SlotPool, sharing
    from .jobs import CampaignRun

    out = Path(out)
    overrides = dataset_overrides(spec, dataset)  # recorded where there are some (the spec's on this dataset)
    record: dict[str, Any] = {"campaign": spec.name, "dataset": dataset, "source": _relative(spec.source),
                              "budget": spec.budget, "search_seed": spec.search_seed,
                              "table_seeds": spec.table_seeds, **({"overrides": overrides} if overrides else {}),
                              "stages": {}, "tables": {},
                              "resources": resources_record(spec),
                              "data": dataset_facts(dataset, data_dir),
                              "estimate": with_frozen(estimate or {}, carry_frozen(out))}
    campaign = CampaignRun(spec, dataset, out, record, storage, tracking_uri, data_dir, replan)
    at_once = stages_at_once(spec)
    # one study at a time needs no shared slots (its own limit is the campaign's), and without them its Tune reuses
    # finished trials' workers (tuning/runner.py reuse_actors)
    with sharing(SlotPool(spec.max_concurrent)) if at_once > 1 else contextlib.nullcontext():
        run_jobs(campaign.jobs(), at_once)
    write_record(out, record)
    return record


def write_record(out: Path, record: dict[str, Any]) -> None:
    """``campaign.json`` (atomically) and ``campaign.md`` from ``record``: written after every stage and table, so
    a campaign stopped part-way says what it has done so far."""
    from .summary import campaign_markdown

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".campaign.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(out / "campaign.json")
    (out / "campaign.md").write_text(campaign_markdown(out))
