"""Campaign specs: a dataset's whole tuned comparison as stages (searches) and tables, validated before anything runs.

::

    name: tuned
    budget: 40                    # TPE + ASHA trials of every searched stage (a grid: all of it, if not larger)
    search_seed: 0                # every search runs at this seed ...
    table_seeds: [1, 2, 3, 4, 5]  # ... and every table at these, which must not include it
    base: {train: {epochs: 100}}  # config applied to every stage (the dataset is set by --dataset)
    max_concurrent: 2             # trials at once in all (--max-concurrent), each with
    cpus_per_trial: 1             # ... this many CPUs (--cpus-per-trial) and
    gpus_per_trial: 0             # ... this share of a GPU (--gpus-per-trial; 0.125: eight trials on one GPU)
    device: null                  # every trial's train.device (--device cuda|cpu|auto); null: the spaces' own
    stages_at_once: null          # stages (and tables) run side by side (--stages-at-once); null: max_concurrent
    stages:
      mf: {space: spaces/mf.yaml}                                  # a search (path relative to this file)
      mf_ddrm: {space: spaces/ddrm.yaml, inherit: {mf: ["model.*"]}}  # DDRM on mf's chosen backend
      mostpop: {fixed: {model: {name: mostpop}}}                   # nothing to search: this config as chosen
    imports:                      # per dataset, an earlier search of a stage (its runs.csv, relative to this file)
      ml-1m_noisy: {mf: ../docs/results/tuned_ml1m/mf_ml1m_backend/runs.csv}
    overrides:                    # per dataset, config keys set on a stage's base there (and nowhere else)
      yelp-hin_noisy: {diffrec: {train.precision: bf16}}
    tables:
      main:
        rows: {mf/alone: mf, mf/ddrm: mf_ddrm, mostpop/fixed: mostpop}  # "<model>/<variant>": a stage
        reference: alone          # each model's rows are tested against its own row of this variant
        baselines: [mostpop/fixed]

``inherit`` copies the keys of an upstream stage's *chosen* config that match the patterns (fnmatch on dotted
keys) into this stage's base: a plug-in is searched on its backend's tuned config, and no config is ever copied
by hand. The protocol rules this file enforces (DESIGN §4a): equal budget, table seeds disjoint from the search
seed, stages in dependency order. The resources and the device say where trials run, not what they compute:
they enter no study key, so a campaign made on CPUs resumes on a GPU and back (:class:`ddrm.tuning.spec.Resources`);
``stages_at_once`` neither (:mod:`.schedule`).

``imports`` names, per dataset and search stage, the ``runs.csv`` of a search run before the campaign: its rows
that are the same experiment as the stage (:mod:`.imports`) join the stage's study as finished trials, without
their test metrics, and count toward its budget.

``overrides`` sets, per dataset and stage, dotted config keys on the stage's base on that dataset alone, last
(after ``inherit``); a searched, inherited or campaign-set key is refused (:mod:`.overrides`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import TrainConfig

DEVICES = get_args(TrainConfig.model_fields["device"].annotation)  # train.device's values: auto, cpu, cuda
from ..errors import ConfigError
from ..params import MAX_SEED
from .overrides import check_configs, check_structure


def gpu_share_error(value: float) -> str | None:
    """Why ``value`` is not a GPU share Ray can schedule (a fraction in (0, 1] or a whole number; 0: no GPU),
    or None."""
    if value < 0 or (value > 1 and not float(value).is_integer()):
        return "expected a fraction of one GPU in (0, 1] or a whole number of GPUs (0: none)"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageSpec(_Strict):
    """A search over ``space`` (a search-space YAML without dataset or seeds), or a ``fixed`` config."""

    space: str | None = None
    fixed: dict[str, Any] | None = None
    inherit: dict[str, list[str]] = Field(default_factory=dict)  # {upstream stage: [dotted key patterns]}
    description: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> "StageSpec":
        if (self.space is None) == (self.fixed is None):
            raise ValueError("a stage has exactly one of 'space' (a search) or 'fixed' (a config)")
        return self


class TableSpec(_Strict):
    """Rows ``"<model>/<variant>" -> stage``: each stage's chosen config rerun at the table seeds."""

    rows: dict[str, str] = Field(min_length=1)
    reference: str | None = None  # the variant each model's rows are tested against
    baselines: list[str] = Field(default_factory=list)  # "<model>/<variant>" rows every row is tested against
    family: Any = None  # the tests Holm adjusts together (ablation spec key `family`, ddrm.tuning.comparisons)
    claims: list[dict[str, Any]] = Field(default_factory=list)  # named paper claims, each with a verdict
    description: str = ""

    def declared(self, source: str):
        """The table's baselines, family and claims as an ablation declares them (checked against its rows)."""
        from ..tuning.comparisons import parse_declared

        raw = {"baseline": self.baselines or None, "family": self.family, "claims": self.claims or None}
        return parse_declared(raw, source, rows=set(self.rows))


class CampaignSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    budget: int = Field(default=40, ge=1)
    search_seed: int = Field(default=0, ge=0, lt=MAX_SEED)
    table_seeds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)
    max_concurrent: int = Field(default=2, ge=1)
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)  # a fraction of one GPU in (0, 1], or whole GPUs
    device: Literal[DEVICES] | None = None  # every trial's train.device; None: what the spaces say
    stages_at_once: int | None = Field(default=None, ge=1)  # stages side by side; None: max_concurrent
    results: str | None = None  # the campaign folders' parent, relative to this file (one folder per dataset)
    stages: dict[str, StageSpec] = Field(min_length=1)
    imports: dict[str, dict[str, str]] = Field(default_factory=dict)  # {dataset: {stage: runs.csv}}, relative
    overrides: dict[Any, Any] = Field(default_factory=dict)  # {dataset: {stage: {dotted key: value}}} (.overrides)
    tables: dict[str, TableSpec] = Field(default_factory=dict)
    source: str = ""  # the file it was read from (set by load_campaign)

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpu_share(cls, value: float) -> float:
        if gpu_share_error(value):
            raise ValueError(f"{value:g}: {gpu_share_error(value)}")
        return value

    @model_validator(mode="after")
    def _protocol(self) -> "CampaignSpec":
        if self.search_seed in self.table_seeds:
            raise ValueError(f"table_seeds {self.table_seeds} include the search seed {self.search_seed}: a table's "
                             f"seeds must be disjoint from its searches' (the searches chose on that seed)")
        if len(set(self.table_seeds)) != len(self.table_seeds) or not all(0 <= s < MAX_SEED for s in self.table_seeds):
            raise ValueError(f"table_seeds {self.table_seeds}: expected distinct integers in [0, {MAX_SEED})")
        for name, stage in self.stages.items():
            if "/" in name or not name:
                raise ValueError(f"stage name {name!r}: non-empty, without '/'")
            for upstream in stage.inherit:
                if upstream not in self.stages:
                    raise ValueError(f"stage {name!r} inherits from {upstream!r}, which is not a stage; stages: "
                                     f"{list(self.stages)}")
        for dataset, stages in self.imports.items():
            for name in stages:
                where = f"imports.{dataset}.{name}"
                if name not in self.stages:
                    raise ValueError(f"{where}: {name!r} is not a stage; stages: {list(self.stages)}")
                if self.stages[name].fixed is not None:
                    raise ValueError(f"{where}: stage {name!r} is fixed (nothing searched), so it has no search "
                                     f"to import into")
        check_structure(self)  # overrides: shape, stages, refused keys (ValueError naming the key path)
        for table_name, table in self.tables.items():
            for row, stage in table.rows.items():
                if stage not in self.stages:
                    raise ValueError(f"table {table_name!r} row {row!r} names stage {stage!r}, which is not a stage")
                if row.count("/") != 1 or not all(row.split("/")):
                    raise ValueError(f"table {table_name!r} row {row!r}: expected '<model>/<variant>'")
            for baseline in table.baselines:
                if baseline not in table.rows:
                    raise ValueError(f"table {table_name!r} baseline {baseline!r} is not one of its rows")
        stage_order(self)  # raises on a cycle
        return self


def stages_at_once(spec: CampaignSpec) -> int:
    """How many stages and tables run side by side: the spec's ``stages_at_once``, else one per trial slot."""
    return spec.stages_at_once or spec.max_concurrent


def stage_order(spec: CampaignSpec) -> list[list[str]]:
    """The stages in dependency levels: each level's stages depend only on earlier levels (run side by side)."""
    done: list[str] = []
    levels: list[list[str]] = []
    left = dict(spec.stages)
    while left:
        level = [name for name, stage in left.items() if all(up in done for up in stage.inherit)]
        if not level:
            raise ValueError(f"the stages {sorted(left)} inherit from each other in a cycle")
        levels.append(level)
        done += level
        for name in level:
            del left[name]
    return levels


def load_campaign(path: str | Path) -> CampaignSpec:
    """Read and validate a campaign YAML; every error is one :class:`ConfigError` line naming the file and key."""
    from ..tuning.spec import read_yaml

    path = Path(path)
    raw = read_yaml(path)
    try:
        spec = CampaignSpec.model_validate({**raw, "source": str(path)})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{path}: {where + ': ' if where else ''}{message}") from None
    for name, table in spec.tables.items():
        table.declared(f"{path}: tables.{name}")  # one ConfigError naming the key
    for name, stage in spec.stages.items():
        if stage.space is not None and not (path.parent / stage.space).is_file():
            raise ConfigError(f"{path}: stages.{name}.space: {stage.space} does not exist (relative to {path.parent})")
    for dataset, stages in spec.imports.items():
        for name, runs in stages.items():
            if not (path.parent / runs).is_file():
                raise ConfigError(f"{path}: imports.{dataset}.{name}: {runs} does not exist (relative to "
                                  f"{path.parent})")
    check_configs(spec)  # overrides against the configs they set, every dataset's (one ConfigError naming the key)
    return spec


def space_path(spec: CampaignSpec, stage: str) -> Path:
    """The search-space file of ``stage``, resolved against the campaign file's folder."""
    return Path(spec.source).parent / str(spec.stages[stage].space)


def import_path(spec: CampaignSpec, dataset: str, stage: str) -> Path | None:
    """The earlier search's ``runs.csv`` that ``stage`` imports on ``dataset`` (resolved), or None."""
    runs = spec.imports.get(dataset, {}).get(stage)
    return Path(spec.source).parent / runs if runs else None
