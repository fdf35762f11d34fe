"""Per-dataset, per-stage config overrides (spec ``overrides``): what a stage's base config is set to on one dataset.

::

    overrides:                        # dataset -> stage -> dotted config keys (or nested sections) and values
      yelp-hin_noisy:
        diffrec: {train.precision: bf16}
        multivae: {train.precision: bf16}

An override is the last word on the stage's base on that dataset and nowhere else: a search stage's base is its
space's ``base`` < the campaign's ``base`` < ``data.name`` (``--dataset``) < the keys it inherits < its override
(a fixed stage's: the campaign's ``base`` < ``data.name`` < the inherited keys < ``fixed`` < its override). It
therefore enters everything the base does: the stage's study (its key: a stage with an override is another study
than the same stage without one), its chosen config, the table rows that rerun that config, the rows of an
earlier search it imports (only those run at the override's value are its experiment), the plan's stand-in
configs and probes. A plug-in stage gets a backend stage's override through ``inherit`` alone, i.e. only for keys
its patterns match (``model.*`` in campaigns/tuned.yaml): ``lightgcn: {model.layers: 2}`` reaches lightgcn_ddrm,
``lightgcn: {train.batch_size: 4096}`` does not (set it on each stage that needs it).

Refused with one line naming the file and ``overrides.<dataset>.<stage>.<key>`` (:func:`check_structure` when the
spec is read, :func:`check_configs` once its space files are found), for every dataset alike, the one run or not:
a dataset name that is not a string naming a dataset folder; a stage the spec does not have; a key the stage's
config does not have or a value it does not allow (the config's own validation, on the stage's base as the run
builds it without the inherited keys); a key the stage's space searches (the search sets it); a key the stage
inherits (it is the upstream stage's chosen value: override that stage); a key the campaign sets (``seed``,
``data.name``); where trials run, not what they compute (:data:`.records.IGNORED_KEYS`: the spec's resources and
``--data-dir``); and what the stage is (``model.name``, ``denoise.name``, ``ddrm.enabled``: its space's, the same
on every dataset, so a table row names one model on each).

A stage that already ran is not changed under its records (:func:`check_ran_with`): where the stage's folder holds
trials or a chosen config run at another value of a key its override sets now, or that an override recorded in
``campaign.json`` set and the spec no longer does, plan and run refuse with one line instead of mixing them into
one search. An override for another dataset changes nothing here: the stage's base is built from this dataset's
overrides alone.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from ..config import apply_overrides, config_from_dict, flatten
from ..errors import ConfigError

if TYPE_CHECKING:
    from .spec import CampaignSpec

WHAT_IT_IS = ("what the stage is (its model, its plug-in, DDRM on or off) is its space's on every dataset; an "
              "override changes how it trains, a different model is another stage")
WHERE_IT_RUNS = ("where trials run, not what they compute (the spec's device and cpus_per_trial, --data-dir): it "
                 "enters no study key")
REFUSED = {"seed": "the campaign sets it (search_seed; a table's table_seeds)",
           "data.name": "the campaign sets it (--dataset)",
           "data.dir": WHERE_IT_RUNS, "train.threads": WHERE_IT_RUNS, "train.device": WHERE_IT_RUNS,
           "model.name": WHAT_IT_IS, "denoise.name": WHAT_IT_IS, "ddrm.enabled": WHAT_IT_IS}


def flat_keys(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's override as dotted keys (nested sections flattened; old key names renamed, :mod:`ddrm.legacy`)."""
    from ..legacy import rename_flat_keys

    return rename_flat_keys(flatten(changes))


def dataset_overrides(spec: "CampaignSpec", dataset: str) -> dict[str, dict[str, Any]]:
    """``{stage: {dotted key: value}}``: the overrides in force on ``dataset``, stages in spec order."""
    mine = spec.overrides.get(dataset) or {}
    return {stage: flat_keys(mine[stage]) for stage in spec.stages if mine.get(stage)}


def stage_keys(spec: "CampaignSpec", stage: str, dataset: str) -> dict[str, Any]:
    """The dotted keys ``stage``'s override sets on ``dataset`` (none: ``{}``)."""
    return dataset_overrides(spec, dataset).get(stage, {})


def describe(keys: Mapping[str, Any]) -> str:
    """``train.precision=bf16, model.dim=64``."""
    return ", ".join(f"{k}={v}" for k, v in keys.items())


def check_structure(spec: "CampaignSpec") -> None:
    """The overrides' shape, stages and refused keys (no file read); ``ValueError`` naming the key path."""
    from pydantic import ValidationError

    from ..config import DataConfig

    for dataset, stages in spec.overrides.items():
        where = f"overrides.{dataset}"
        if not isinstance(dataset, str):
            raise ValueError(f"overrides: dataset {dataset!r} ({type(dataset).__name__}) is not a dataset name; "
                             f"expected a string, a prepared dataset's folder name (data.name; quote it in YAML)")
        try:
            DataConfig(name=dataset)
        except ValidationError:
            raise ValueError(f"{where}: {dataset!r} is not a dataset name (a folder name: non-empty, no '/')") \
                from None
        if not isinstance(stages, Mapping):
            raise ValueError(f"{where}: expected a mapping of stages to their config keys, got {stages!r}")
        for stage, changes in stages.items():
            here = f"{where}.{stage}"
            if stage not in spec.stages:
                raise ValueError(f"{here}: {stage!r} is not a stage; stages: {list(spec.stages)}")
            if not isinstance(changes, Mapping) or not changes:
                raise ValueError(f"{here}: expected a mapping of dotted config keys to values, e.g. "
                                 f"{{train.precision: bf16}}, got {changes!r}")
            inherit = spec.stages[stage].inherit
            for key, value in flat_keys(changes).items():
                if key in REFUSED:
                    raise ValueError(f"{here}.{key}: {value!r} is not allowed; {REFUSED[key]}")
                for upstream, patterns in inherit.items():
                    if any(fnmatch.fnmatchcase(key, p) for p in patterns):
                        raise ValueError(f"{here}.{key}: stage {stage!r} inherits {key} from the chosen config of "
                                         f"{upstream!r} (inherit {patterns}); an override of {upstream!r} reaches "
                                         f"it through inherit")


def searched_keys(spec: "CampaignSpec", stage: str) -> set[str]:
    """The dotted keys ``stage``'s space searches (none for a fixed stage)."""
    from ..legacy import rename_flat_keys
    from .spec import space_path

    if spec.stages[stage].space is None:
        return set()
    raw = yaml.safe_load(space_path(spec, stage).read_text()) or {}
    space = raw.get("space") if isinstance(raw, Mapping) else None
    return set(rename_flat_keys(space)) if isinstance(space, Mapping) else set()


def refuse_searched(spec: "CampaignSpec", stage: str, dataset: str, keys: Mapping[str, Any],
                    searched: set[str]) -> None:
    """One :class:`ConfigError` line when the override sets a key the stage's space searches."""
    for key in keys:
        if key in searched:
            raise ConfigError(f"{spec.source}: overrides.{dataset}.{stage}.{key}: {keys[key]!r} is not allowed; "
                              f"stage {stage!r} searches {key} (its space {spec.stages[stage].space}), so the "
                              f"search sets it")


def _own_base(spec: "CampaignSpec", stage: str, dataset: str) -> dict[str, Any]:
    """The stage's nested base on ``dataset`` as the run builds it, without its inherited keys and its override."""
    from .spec import space_path

    common = {**flatten(spec.base), "data.name": dataset}
    definition = spec.stages[stage]
    if definition.fixed is not None:
        return apply_overrides(apply_overrides({}, common), flatten(definition.fixed))
    raw = yaml.safe_load(space_path(spec, stage).read_text()) or {}
    base = raw.get("base") if isinstance(raw, Mapping) else None
    return apply_overrides(base if isinstance(base, Mapping) else {}, common)


def check_configs(spec: "CampaignSpec") -> None:
    """Every dataset's overrides against the configs they set (the space files exist): no searched key, and the
    stage's base with the override validates, and so does every point of its space. One :class:`ConfigError` line
    naming the file and ``overrides.<dataset>.<stage>[.<key>]``."""
    from ..tuning.spec import load_search_spec
    from .spec import space_path

    for dataset, stages in spec.overrides.items():
        for stage, changes in stages.items():
            keys, where = flat_keys(changes), f"{spec.source}: overrides.{dataset}.{stage}"
            refuse_searched(spec, stage, dataset, keys, searched_keys(spec, stage))
            try:
                config_from_dict(apply_overrides(_own_base(spec, stage, dataset), keys))
            except ConfigError as exc:
                named = [k for k in keys if f"'{k}'" in str(exc)]
                raise ConfigError(f"{where}{'.' + named[0] if named else ''}: {exc}") from None
            if spec.stages[stage].space is not None:  # the space's points on the overridden base
                try:
                    load_search_spec(space_path(spec, stage), {**flatten(spec.base), "data.name": dataset, **keys})
                except ConfigError as exc:
                    raise ConfigError(f"{where}: with {describe(keys)}: {exc}") from None


# ------------------------------------------------------------------------------------- a stage that already ran
def recorded_overrides(out: Path) -> dict[str, dict[str, Any]]:
    """The overrides ``<out>/campaign.json`` records (the launch that wrote it ran with them; none: ``{}``)."""
    import json

    path = Path(out) / "campaign.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("overrides") or {})
    except (ValueError, AttributeError):
        return {}


def check_ran_with(spec: "CampaignSpec", stage: str, dataset: str, base: Mapping[str, Any], out: Path,
                   recorded: Mapping[str, Mapping[str, Any]]) -> None:
    """One :class:`ConfigError` line when ``stage``'s folder in ``out`` holds trials (``runs.csv``) or a chosen
    config run at another value than its ``base`` (flat, validated) on a key its override sets now or an override
    recorded in ``campaign.json`` (``recorded``) set: the override was added, changed or removed after the stage
    ran, and its records would join a search they are not part of. Stages without such keys read nothing."""
    from ..tuning.importer import read_runs_csv
    from .imports import same_value
    from .records import row_config
    from .run import CHOSEN_FILE

    now, before = stage_keys(spec, stage, dataset), dict(recorded.get(stage) or {})
    keys = list(dict.fromkeys([*now, *before]))
    folder = Path(out) / "stages" / stage
    if not keys or not folder.is_dir():
        return
    found: list[tuple[str, dict[str, Any]]] = []  # (file, flat config) of each record
    if (folder / "runs.csv").is_file():
        found += [("runs.csv", flat) for _, row in read_runs_csv(folder / "runs.csv").iterrows()
                  if (flat := row_config(row)) is not None]
    if (folder / CHOSEN_FILE).is_file():
        found.append((CHOSEN_FILE, config_from_dict(yaml.safe_load((folder / CHOSEN_FILE).read_text())).to_flat_dict()))
    for key in keys:
        other = [(name, flat.get(key)) for name, flat in found if not same_value(flat.get(key), base.get(key))]
        if not other:
            continue
        trials = sum(1 for name, _ in other if name == "runs.csv")
        parts = [f"{trials} trial(s) of its runs.csv"] if trials else []
        parts += [f"its {CHOSEN_FILE}"] if any(name == CHOSEN_FILE for name, _ in other) else []
        what = " and ".join(parts)
        if key in now:
            why = f"the override sets {key} {now[key]!r}, but {what} ran with {other[0][1]!r}"
        else:
            why = (f"campaign.json records that the stage ran with the override {key} {before[key]!r}, which the "
                   f"spec no longer sets ({base.get(key)!r} now), and {what} ran with {other[0][1]!r}")
        raise ConfigError(f"{spec.source}: overrides.{dataset}.{stage}.{key}: {why} (in {folder}): a changed override "
                          f"would mix them into a search they are not part of; restore the override as it ran, or "
                          f"move {folder} aside to run the stage anew")
