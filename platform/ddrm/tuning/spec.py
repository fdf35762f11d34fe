"""Study specs: search-space YAML (``ddrm tune``) and ablation YAML (``ddrm ablate``), schema-validated.

Both are checked completely before Ray starts; every error names the file and the key. Search space::

    name: mf_ml1m_ddrm            # MLflow experiment / Tune run name
    mode: tpe                     # tpe (seeded Optuna TPE) | grid (every combination of `choice` values)
    num_samples: 24               # tpe: trials; grid: repeats of the whole grid
    seeds: [0]                    # run seed(s); tpe takes exactly one
    metric: recall_at_20          # validation metric to maximise
    base: {model: {name: mf}, train: {epochs: 20}}          # a config (sections data/model/denoise/ddrm/train)
    space:
      ddrm.steps: {type: choice, values: [10, 20, 30]}
      ddrm.noise_scale: {type: loguniform, low: 1.0e-4, high: 1.0e-3}
    scheduler: {type: asha, grace_period: 2, max_t: 20, reduction_factor: 2}   # or {type: fifo}
    max_concurrent: 2
    resources: {cpu: 1, gpu: 0}
    max_failures: 1

Ablation::

    name: item_only
    base: {...}
    seeds: [0, 1, 2]
    variants: {full: {}, item_only: {ddrm.denoise_users: false}}
    reference: full               # optional: the row significance is computed against
    baseline: [ease/tuned, itemknn/tuned]   # optional: "<model>/<variant>" row(s) every row is also tested against
    family: [reference, baselines]          # optional: the tests Holm adjusts together (ddrm.tuning.comparisons)
    claims:                                 # optional: named claims, each one comparison, with a verdict
      - {name: DDRM improves MF, row: mf/ddrm, over: mf/alone, metric: recall_at_20}
    resources: {cpu: 1, gpu: 0}
    max_concurrent: 2
    models:                       # optional: cross every variant with each model's overrides
      mf: {model.name: mf}
      sgl: {model.name: sgl, ddrm.steps: 50}
      ease: {model.name: ease, variants: [full]}   # `variants`: cross only these with this model
      lightgcn: {model.name: lightgcn, settings: {full: {ddrm.steps: 40}}}  # this model's own settings
                                  # of a variant (e.g. each backend's searched DDRM config), on top of both

With ``models`` the trials are model x variant x seed; internally each pair is the variant
``"<model>/<variant>"`` (model overrides first, the variant's on top), logged to MLflow with the tags
``model`` and ``variant`` so that ``ddrm report`` compares each model's variants with its own reference.

A little over the project's ~350 lines on purpose: the schema reference above is part of the module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..config import MAX_SEED, SECTIONS, Config, apply_overrides, config_from_dict
from ..legacy import rename_flat_keys
from .comparisons import Declared, parse_declared
from ..errors import ConfigError

DISTRIBUTIONS = {
    "choice": ("values",),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "randint": ("low", "high"),
}
SEARCH_KEYS = {"name", "mode", "num_samples", "seeds", "metric", "base", "space", "scheduler", "max_concurrent",
               "resources", "max_failures", "description"}
ABLATION_KEYS = {"name", "base", "seeds", "variants", "reference", "baseline", "family", "claims", "resources",
                 "max_concurrent", "max_failures", "description", "expected_minutes", "models"}
MODEL_SEPARATOR = "/"  # "<model>/<variant>" names the trials of a spec with `models`
MODEL_VARIANTS_KEY = "variants"  # in a `models` entry: the variants crossed with that model (default: all)
MODEL_SETTINGS_KEY = "settings"  # in a `models` entry: {variant: overrides} for that model's row of the variant
SCHEDULER_KEYS = {"type", "grace_period", "max_t", "reduction_factor"}
VALID_METRICS = {f"{kind}_at_{k}" for kind in ("recall", "ndcg") for k in (10, 20, 50, 100)}


@dataclass(frozen=True)
class Resources:
    """Per-trial resources; ``gpu`` may be fractional. ``device``: every trial's ``train.device`` (None: its
    config's), set when the trial is built (:meth:`.plan.StudyPlan.config`): where a trial computes, not what, so
    it enters no study key and a study resumes across devices."""

    cpu: float = 1.0
    gpu: float = 0.0
    device: str | None = None


@dataclass(frozen=True)
class SearchSpec:
    name: str
    mode: str
    num_samples: int
    seeds: tuple[int, ...]
    metric: str
    base: dict[str, Any]
    space: dict[str, dict[str, Any]]
    scheduler: dict[str, Any]
    max_concurrent: int
    resources: Resources
    max_failures: int
    source: str = ""


@dataclass(frozen=True)
class AblationSpec:
    name: str
    base: dict[str, Any]
    seeds: tuple[int, ...]
    variants: dict[str, dict[str, Any]]
    reference: str | None
    resources: Resources
    max_concurrent: int
    max_failures: int
    source: str = ""
    description: str = ""
    expected_minutes: float | None = None
    trials: list[tuple[str, int]] = field(default_factory=list)
    declared: Declared = field(default_factory=Declared)  # baseline rows, test family, claims (the report's)

    @property
    def baseline(self) -> tuple[str, ...]:
        """The ``"<model>/<variant>"`` rows the report also tests every row against."""
        return self.declared.baselines

    def report_tags(self) -> dict[str, str]:
        """The parent-run tags ``ddrm report`` reads its comparisons from: declared before the study runs."""
        return {"reference": self.reference or "", **self.declared.tags()}

    def configs(self) -> dict[tuple[str, int], Config]:
        """``{(variant, seed): Config}`` of every trial, in trial order (``variant`` is ``<model>/<variant>``
        with a ``models`` block): the one place an ablation's configs are built."""
        return {(v, s): config_from_dict(apply_overrides(self.base, {**self.variants[v], "seed": s}))
                for v, s in self.trials}


def _fail(source: str, message: str) -> None:
    raise ConfigError(f"{source}: {message}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"spec file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def _read_spec(path: str | Path, allowed: set[str]) -> tuple[str, dict[str, Any]]:
    """``(source name, top-level mapping)``; unknown top-level keys are an error."""
    raw = read_yaml(path)
    unknown = set(raw) - allowed
    if unknown:
        _fail(str(path), f"unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return str(path), raw


def _resources(raw: Any, source: str) -> Resources:
    if raw is None:
        return Resources()
    if not isinstance(raw, Mapping) or set(raw) - {"cpu", "gpu"}:
        _fail(source, f"key 'resources' must be a mapping with 'cpu' and/or 'gpu', got {raw!r}")
    cpu, gpu = raw.get("cpu", 1), raw.get("gpu", 0)
    if not isinstance(cpu, (int, float)) or cpu <= 0:
        _fail(source, f"key 'resources.cpu': {cpu!r} is not allowed; expected a number > 0")
    if not isinstance(gpu, (int, float)) or gpu < 0:
        _fail(source, f"key 'resources.gpu': {gpu!r} is not allowed; expected a number >= 0 (fractions allowed)")
    return Resources(float(cpu), float(gpu))


def _seeds(raw: Any, source: str) -> tuple[int, ...]:
    seeds = [raw] if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < MAX_SEED for s in seeds)):
        _fail(source, f"key 'seeds': {raw!r} is not allowed; expected a non-empty list of integers in [0, {MAX_SEED})")
    return tuple(seeds)


def _positive_int(raw: Mapping[str, Any], key: str, default: int, source: str, minimum: int = 1) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(source, f"key '{key}': {value!r} is not allowed; expected an integer >= {minimum}")
    return value


def _base(raw: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> dict[str, Any]:
    base = raw.get("base") or {}
    if not isinstance(base, Mapping):
        _fail(source, f"key 'base' must be a config mapping (sections {list(SECTIONS)}, seed)")
    try:
        merged = apply_overrides(base, overrides)
        config_from_dict(merged)
    except ConfigError as exc:
        _fail(source, f"in 'base' (with --set overrides): {exc}")
    return merged


def _check_point(base: Mapping[str, Any], overrides: Mapping[str, Any], source: str, where: str) -> Config:
    try:
        return config_from_dict(apply_overrides(base, overrides))
    except ConfigError as exc:
        _fail(source, f"{where}: {exc}")
        raise  # unreachable


def _distribution(key: str, dist: Any, base: Mapping[str, Any], source: str) -> dict[str, Any]:
    if key.partition(".")[0] not in SECTIONS or key == "seed":
        _fail(source, f"space key '{key}' is not a config key; expected '<section>.<key>' with a section in "
                      f"{list(SECTIONS)} (the seed is set by 'seeds')")
    if not isinstance(dist, Mapping) or "type" not in dist:
        _fail(source, f"space.{key}: expected a mapping with 'type' (one of {sorted(DISTRIBUTIONS)})")
    kind = dist["type"]
    if kind not in DISTRIBUTIONS:
        _fail(source, f"space.{key}: unknown distribution {kind!r}; allowed: {sorted(DISTRIBUTIONS)}")
    required = DISTRIBUTIONS[kind]
    extra = set(dist) - {"type", *required}
    missing = [k for k in required if k not in dist]
    if missing or extra:
        _fail(source, f"space.{key}: a {kind} distribution takes exactly {list(required)}"
                      f"{f'; missing {missing}' if missing else ''}{f'; unknown {sorted(extra)}' if extra else ''}")
    if kind == "choice":
        values = dist["values"]
        if not isinstance(values, list) or not values:
            _fail(source, f"space.{key}.values: expected a non-empty list")
        for value in values:
            _check_point(base, {key: value}, source, f"space.{key} value {value!r}")
    else:
        low, high = dist["low"], dist["high"]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numeric or not low < high or (kind == "loguniform" and low <= 0):
            _fail(source, f"space.{key}: low {low!r} / high {high!r} are not allowed; expected numbers with low < high"
                          f"{' and low > 0' if kind == 'loguniform' else ''}")
        if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
            _fail(source, f"space.{key}: randint bounds must be integers")
        _check_point(base, {key: low}, source, f"space.{key} low")
        _check_point(base, {key: high - 1 if kind == "randint" else high}, source, f"space.{key} high")
    return dict(dist)


def load_search_spec(path: str | Path, overrides: Mapping[str, Any] | None = None,
                     num_samples: int | None = None) -> SearchSpec:
    """Parse and validate a search-space YAML; ``overrides`` (``--set``) apply to every trial."""
    source, raw = _read_spec(path, SEARCH_KEYS)
    name = raw.get("name") or Path(path).stem
    mode = raw.get("mode", "tpe")
    if mode not in ("tpe", "grid"):
        _fail(source, f"key 'mode': {mode!r} is not allowed; expected 'tpe' or 'grid'")
    metric = raw.get("metric", "recall_at_20")
    if metric not in VALID_METRICS:
        _fail(source, f"key 'metric': {metric!r} is not allowed; expected one of {sorted(VALID_METRICS)}")
    base = _base(raw, overrides or {}, source)
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, Mapping) or not space_raw:
        _fail(source, "key 'space' must map config keys to distributions")
    space = {key: _distribution(key, dist, base, source) for key, dist in rename_flat_keys(space_raw).items()}
    overridden = sorted(set(space) & set(overrides or {}))
    if overridden:
        _fail(source, f"--set fixes {overridden}, which the space searches; drop one of them")
    if mode == "grid" and any(d["type"] != "choice" for d in space.values()):
        bad = sorted(k for k, d in space.items() if d["type"] != "choice")
        _fail(source, f"mode 'grid' needs 'choice' distributions only; not: {bad}")
    seeds = _seeds(raw.get("seeds", [0]), source)
    if mode == "tpe" and len(seeds) != 1:
        _fail(source, "key 'seeds': mode 'tpe' takes exactly one seed (use mode 'grid' or `ddrm ablate` for repeats)")
    scheduler = dict(raw.get("scheduler") or {"type": "fifo"})
    if set(scheduler) - SCHEDULER_KEYS or scheduler.get("type") not in ("asha", "fifo"):
        _fail(source, f"key 'scheduler': {scheduler!r} is not allowed; expected type asha|fifo with "
                      f"grace_period/max_t/reduction_factor")
    for key, default, minimum in (("grace_period", 1, 1), ("max_t", 100, 1), ("reduction_factor", 2, 2)):
        scheduler[key] = _positive_int(scheduler, key, default, f"{source}: scheduler", minimum)
    samples = num_samples if num_samples is not None else raw.get("num_samples", 1 if mode == "grid" else 10)
    samples = _positive_int({"num_samples": samples}, "num_samples", 1, source)
    return SearchSpec(name=name, mode=mode, num_samples=samples, seeds=seeds, metric=metric, base=base, space=space,
                      scheduler=scheduler, max_concurrent=_positive_int(raw, "max_concurrent", 2, source),
                      resources=_resources(raw.get("resources"), source),
                      max_failures=_positive_int(raw, "max_failures", 1, source, minimum=0), source=source)


def _named_overrides(raw: Any, key: str, source: str) -> dict[str, dict[str, Any]]:
    """``{name: {dotted.key: value}}`` of a spec's ``variants`` or ``models``; names without '/'."""
    if not isinstance(raw, Mapping) or not raw:
        _fail(source, f"key '{key}' must map names to dotted overrides, e.g. {{full: {{}}, "
                      f"item_only: {{ddrm.denoise_users: false}}}}")
    out = {}
    for name, changes in raw.items():
        if MODEL_SEPARATOR in str(name) or not str(name):
            _fail(source, f"key '{key}': name {name!r} must be non-empty and contain no '{MODEL_SEPARATOR}'")
        if changes is not None and not isinstance(changes, Mapping):
            _fail(source, f"key '{key}': {name!r} must map dotted keys to values, got {changes!r}")
        out[str(name)] = rename_flat_keys(changes or {})
    return out


def _select(named: dict[str, dict[str, Any]], wanted: Sequence[str], what: str,
            source: str) -> dict[str, dict[str, Any]]:
    """The spec's ``what`` (models/variants) restricted to ``wanted`` (in the spec's order); unknown names fail."""
    names = [m for m in named if m]
    if not names:
        _fail(source, f"--{what} {','.join(wanted)}: this spec has no '{what}' block to choose from")
    unknown = [m for m in wanted if m not in named]
    if unknown or not wanted:
        _fail(source, f"--{what} {','.join(wanted)}: unknown {what[:-1]}(s) {unknown}; the spec's {what}: {names}")
    return {m: changes for m, changes in named.items() if m in wanted}


def _spec_rows(raw: Mapping[str, Any], plain: Mapping[str, Any]) -> set[str]:
    """Every "<model>/<variant>" row of a spec with ``models`` (before --models/--variants narrow them)."""
    rows = set()
    for model, changes in (raw.get("models") or {}).items():
        crossed = (changes or {}).get(MODEL_VARIANTS_KEY) if isinstance(changes, Mapping) else None
        rows |= {f"{model}{MODEL_SEPARATOR}{v}" for v in plain if not isinstance(crossed, list) or v in crossed}
    return rows


def load_declared(path: str | Path) -> tuple[str | None, Declared]:
    """An ablation spec's ``reference`` and its declared comparisons (baseline, family, claims), checked without
    building its configs: what ``ddrm report --spec`` reads."""
    source, raw = _read_spec(path, ABLATION_KEYS)
    variants = raw.get("variants") if isinstance(raw.get("variants"), Mapping) else {}
    return raw.get("reference"), parse_declared(raw, source, _spec_rows(raw, variants) if "models" in raw else None)


def load_ablation_spec(path: str | Path, overrides: Mapping[str, Any] | None = None,
                       seeds: int | Sequence[int] | None = None,
                       only_models: Sequence[str] | None = None,
                       only_variants: Sequence[str] | None = None) -> AblationSpec:
    """Parse and validate an ablation YAML.

    ``seeds`` replaces the spec's seed list: an int N (``--seeds N``) by 0..N-1, a sequence (``--seed-list
    3,4``) by exactly those seeds, e.g. to add seeds to a finished study (``ddrm report`` pools an
    experiment's studies by model, variant and seed). ``only_models`` (``--models a,b``) keeps only those
    entries of the spec's ``models`` block (each must exist); ``only_variants`` (``--variants a,b``) likewise
    keeps only those variants, e.g. to add the missing variants to an experiment whose reference rows
    were measured by an earlier study in the same tracking store (the report pools them).
    """
    source, raw = _read_spec(path, ABLATION_KEYS)
    base = _base(raw, overrides or {}, source)
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, Mapping) or not variants_raw:
        _fail(source, "key 'variants' must map variant names to dotted overrides, e.g. {full: {}, "
                      "item_only: {ddrm.denoise_users: false}}")
    models = _named_overrides(raw.get("models") or {"": {}}, "models", source) if "models" in raw else {"": {}}
    if only_models is not None:
        models = _select(models, only_models, "models", source)
    plain = _named_overrides(variants_raw, "variants", source)
    reference = raw.get("reference")
    if reference is not None and reference not in plain:
        _fail(source, f"key 'reference': {reference!r} is not a variant; variants: {sorted(plain)}")
    if only_variants is not None:
        plain = _select(plain, only_variants, "variants", source)
    variants: dict[str, dict[str, Any]] = {}
    for model, model_changes in models.items():
        crossed = model_changes.pop(MODEL_VARIANTS_KEY, None)  # this model's rows: a subset of the variants
        own = model_changes.pop(MODEL_SETTINGS_KEY, None) or {}  # this model's settings of some variants
        every = _named_overrides(variants_raw, "variants", source)  # before --variants narrows them
        if not isinstance(own, Mapping) or any(v not in every or not isinstance(o, Mapping) for v, o in own.items()):
            _fail(source, f"key 'models.{model}.{MODEL_SETTINGS_KEY}': {own!r} is not allowed; expected a mapping "
                          f"from variants {sorted(every)} to dotted overrides")
        if crossed is not None and (not isinstance(crossed, list) or not crossed
                                    or any(v not in _named_overrides(variants_raw, "variants", source) for v in crossed)):
            _fail(source, f"key 'models.{model}.{MODEL_VARIANTS_KEY}': {crossed!r} is not allowed; expected a "
                          f"non-empty list of the spec's variants {sorted(plain)}")
        if model:
            _check_point(base, model_changes, source, f"model {model!r}")
        for name, changes in plain.items():
            if crossed is not None and name not in crossed:
                continue
            full_name = f"{model}{MODEL_SEPARATOR}{name}" if model else name
            merged = {**model_changes, **changes, **own.get(name, {})}
            _check_point(base, merged, source, f"variant {full_name!r}")
            variants[full_name] = merged
    declared = parse_declared(raw, source, _spec_rows(raw, variants_raw) if "models" in raw else None)
    if seeds is None:
        seed_list = _seeds(raw.get("seeds", [0]), source)
    elif isinstance(seeds, int):
        if seeds < 1:
            _fail(source, f"--seeds {seeds}: expected an integer >= 1")
        seed_list = tuple(range(seeds))
    else:
        seed_list = tuple(seeds)
        if not seed_list or any(not 0 <= s < MAX_SEED for s in seed_list) or len(set(seed_list)) != len(seed_list):
            _fail(source, f"--seed-list {','.join(map(str, seed_list))}: expected distinct integers in [0, {MAX_SEED})")
    expected = raw.get("expected_minutes")
    return AblationSpec(name=raw.get("name") or Path(path).stem, base=base, seeds=seed_list, variants=variants,
                        reference=reference, resources=_resources(raw.get("resources"), source),
                        max_concurrent=_positive_int(raw, "max_concurrent", 2, source),
                        max_failures=_positive_int(raw, "max_failures", 1, source, minimum=0), source=source,
                        description=str(raw.get("description", "")), expected_minutes=expected,
                        trials=[(v, s) for v in variants for s in seed_list], declared=declared)
