"""The comparisons an ablation declares before it runs (DESIGN §4a): baselines, the test family, the claims.

Three optional keys of an ablation spec, read here for ``load_ablation_spec``, for the parent run's tags a
study writes when it starts (:meth:`Declared.tags`) and for ``ddrm report`` (:meth:`Declared.from_tags`,
``--spec``)::

    baseline: [ease/tuned, itemknn/tuned]   # "<model>/<variant>" rows every row is tested against (one string
                                            # or a list; on the command line comma-separated)
    family:                                 # the tests Holm adjusts together; claims always belong to it
      tests: [reference, baselines]         # reference: each row vs its model's reference row;
                                            # baselines: each row vs every baseline row
      metrics: [recall_at_20, ndcg_at_20]   # default: the table's test metrics (R@10, R@20, N@10, N@20)
    # short form: family: [reference, baselines]  (metrics: the default)
    claims:                                 # named paper claims: `row` is better than `over` on `metric`
      - {name: DDRM improves MF, row: mf/tuned_ddrm, over: mf/alone, metric: recall_at_20}
      - {name: ..., row: ..., over: ..., metric: ndcg_at_20, direction: lower}   # direction: higher (default)

A metric is a ranking metric (``recall_at_20``: the test value, ``test_recall_at_20``) or a full column name
(``test_<m>``, ``diag_<m>``). Pure: no numpy, pandas or MLflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ConfigError
from ..metrics import DIAG, RANKING_KINDS, TEST

FAMILY_TESTS = ("reference", "baselines")
DIRECTIONS = ("higher", "lower")
CLAIM_KEYS = {"name", "row", "over", "metric", "direction"}
TAG_KEYS = ("baseline", "family", "claims")  # parent-run tags (the reference has its own, written beside them)
TAG_LIMIT = 8000  # characters of an MLflow tag value


def metric_column(name: str) -> str:
    """``recall_at_20`` -> ``test_recall_at_20``; ``test_*`` / ``diag_*`` names are kept as they are."""
    if name.startswith((TEST, DIAG)):
        return name
    kind, _, k = name.partition("_at_")
    if kind not in RANKING_KINDS or not k.isdigit():
        raise ValueError(f"{name!r} is not a metric; expected e.g. recall_at_20, ndcg_at_10, test_<m> or diag_<m>")
    return TEST + name


def split_row(text: str) -> tuple[str, str]:
    """``"ease/tuned"`` -> ``("ease", "tuned")`` (a model name has no ``/``; a variant may)."""
    model, _, variant = str(text).partition("/")
    return model, variant


@dataclass(frozen=True)
class Claim:
    """A paper claim as one comparison: ``row`` is better than ``over`` on ``metric`` (higher, or lower)."""

    name: str
    row: str  # "<model>/<variant>"
    over: str
    metric: str  # a column: test_recall_at_20
    direction: str = "higher"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "row": self.row, "over": self.over, "metric": self.metric,
                "direction": self.direction}


@dataclass(frozen=True)
class Family:
    """The tests Holm adjusts together: ``tests`` of :data:`FAMILY_TESTS` on ``metrics`` (None: the table's
    test metrics), and every claim."""

    tests: tuple[str, ...] = FAMILY_TESTS
    metrics: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"tests": list(self.tests), "metrics": None if self.metrics is None else list(self.metrics)}


@dataclass(frozen=True)
class Declared:
    """What a spec (or ``ddrm report``'s flags) declares; ``family`` None: not declared (the report's default)."""

    baselines: tuple[str, ...] = ()
    family: Family | None = None
    claims: tuple[Claim, ...] = field(default_factory=tuple)

    def tags(self) -> dict[str, str]:
        """The parent-run tags of a study: ``baseline`` comma-separated, ``family`` and ``claims`` as JSON
        (empty strings when not declared)."""
        return {"baseline": ",".join(self.baselines),
                "family": json.dumps(self.family.as_dict()) if self.family is not None else "",
                "claims": json.dumps([c.as_dict() for c in self.claims]) if self.claims else ""}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> "Declared":
        """The inverse of :meth:`tags` (a study started before these tags existed has ``baseline`` alone)."""
        family = json.loads(tags["family"]) if tags.get("family") else None
        claims = json.loads(tags["claims"]) if tags.get("claims") else None
        return parse_declared({"baseline": tags.get("baseline") or None, "family": family, "claims": claims},
                              "the study's tags")


def parse_rows(value: Any, key: str = "baseline") -> tuple[str, ...]:
    """One ``"<model>/<variant>"`` string (comma-separated rows allowed) or a list of them."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"key '{key}': {value!r} is not allowed; expected '<model>/<variant>' or a list of them")
    if any(not isinstance(item, str) or not all(split_row(item.strip())) for item in items):
        raise ValueError(f"key '{key}': {value!r} is not allowed; expected '<model>/<variant>' rows, e.g. "
                         f"ease/tuned (the model as the report names it: the spec's model, else model.name or "
                         f"backend.name)")
    return tuple(dict.fromkeys(item.strip() for item in items))


def parse_family(value: Any) -> Family:
    """``[reference, baselines]`` or ``{tests: [...], metrics: [...]}``."""
    raw = {"tests": value} if isinstance(value, list) else value
    if not isinstance(raw, Mapping) or set(raw) - {"tests", "metrics"}:
        raise ValueError(f"key 'family': {value!r} is not allowed; expected a list of {list(FAMILY_TESTS)} or "
                         f"{{tests: [...], metrics: [...]}}")
    tests = raw.get("tests", list(FAMILY_TESTS))
    if not isinstance(tests, list) or any(t not in FAMILY_TESTS for t in tests):
        raise ValueError(f"key 'family.tests': {tests!r} is not allowed; expected a list of {list(FAMILY_TESTS)}")
    metrics = raw.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not metrics:
            raise ValueError(f"key 'family.metrics': {metrics!r} is not allowed; expected a non-empty list")
        try:
            metrics = tuple(dict.fromkeys(metric_column(str(m)) for m in metrics))
        except ValueError as exc:
            raise ValueError(f"key 'family.metrics': {exc}") from None
    return Family(tuple(dict.fromkeys(tests)), metrics)


def parse_claims(value: Any) -> tuple[Claim, ...]:
    """A list of ``{name, row, over, metric[, direction]}``; names unique."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"key 'claims': {value!r} is not allowed; expected a non-empty list of "
                         f"{{name, row, over, metric[, direction]}}")
    claims = []
    for i, item in enumerate(value):
        where = f"key 'claims[{i}]'"
        if not isinstance(item, Mapping) or not CLAIM_KEYS - {"direction"} <= set(item) <= CLAIM_KEYS:
            raise ValueError(f"{where}: {item!r} is not allowed; expected {{name, row, over, metric[, direction]}}")
        row, over = (parse_rows(item[k], f"claims[{i}].{k}") for k in ("row", "over"))
        if len(row) != 1 or len(over) != 1 or row == over:
            raise ValueError(f"{where}: 'row' and 'over' must be two different '<model>/<variant>' rows")
        direction = item.get("direction", "higher")
        if direction not in DIRECTIONS:
            raise ValueError(f"{where}: direction {direction!r} is not allowed; expected one of {list(DIRECTIONS)}")
        try:
            metric = metric_column(str(item["metric"]))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        claims.append(Claim(str(item["name"]), row[0], over[0], metric, direction))
    names = [c.name for c in claims]
    if len(set(names)) != len(names):
        raise ValueError(f"key 'claims': names must be unique, got {names}")
    return tuple(claims)


def parse_declared(raw: Mapping[str, Any], source: str, rows: set[str] | None = None) -> Declared:
    """The ``baseline``, ``family`` and ``claims`` keys of ``raw``; ``rows``: the spec's "<model>/<variant>"
    rows when it has a ``models`` block (every named row must be one of them). Raises :class:`ConfigError`
    naming ``source`` and the key."""
    try:
        baselines = parse_rows(raw["baseline"]) if raw.get("baseline") is not None else ()
        family = parse_family(raw["family"]) if raw.get("family") is not None else None
        claims = parse_claims(raw["claims"]) if raw.get("claims") is not None else ()
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if rows is not None:
        named = [("baseline", r) for r in baselines] + [(f"claims ({c.name!r})", r) for c in claims
                                                         for r in (c.row, c.over)]
        unknown = [f"{key}: {r}" for key, r in named if r not in rows]
        if unknown:
            raise ConfigError(f"{source}: {'; '.join(unknown)} is not a row of the spec; rows: {sorted(rows)}")
    declared = Declared(baselines, family, claims)
    too_long = {k: len(v) for k, v in declared.tags().items() if len(v) > TAG_LIMIT}
    if too_long:
        raise ConfigError(f"{source}: key(s) {sorted(too_long)} take {too_long} characters as the study's tags; MLflow "
                          f"keeps {TAG_LIMIT}: shorten the claims' names or declare fewer")
    return declared
