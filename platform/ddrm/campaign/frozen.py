"""The estimate each stage and table of a campaign is judged against: the plan's, frozen when the part starts.

``ddrm campaign run`` recomputes the plan at every launch and keeps it as ``campaign.json`` ``estimate`` (the plan as
it stands now). A part's entry there can change after the part ran (a sibling dataset's finished search calibrates
it, its backend's chosen trial changes the pretraining charge), so the recorded cost is set beside the entry made
before the part trained anything: ``estimate.frozen.stages[stage]`` and ``estimate.frozen.tables[table]``, a copy
of the plan's entry taken when the run starts the part (:func:`freeze_at_start`), plus ``made`` (which plan:
:data:`LAUNCH`, :data:`REPLANNED` or :data:`OLDER`), ``made_at`` (when that plan was made, UTC ISO) and
``frozen_at`` (when the part started). Where the launch's plan stood the part in on upstream stages that were not
chosen yet (a provisional stage, a table whose rows' searches had not finished) and they are chosen by the time it
starts, the run re-plans first (:func:`stale`): a table's estimate is then made from its rows' chosen trials (their
epochs and CPU-seconds per epoch), records of earlier runs, never of its own. Every launch carries the frozen
entries over from the previous ``campaign.json`` (:func:`carry_frozen`); a part keeps the first one it got.

Older records (a ``campaign.json`` written before estimates were frozen: an ``estimate`` without ``frozen``): each
stage and table that had started by then (in its ``stages`` / ``tables``, or with a ``runs.csv`` in its folder)
takes the entry of that ``estimate``, the one its earlier launches stored (their rules read no record of the
part's own trials), with ``made`` :data:`OLDER` and no ``made_at``; the others are frozen when they start.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

FROZEN = "frozen"
KINDS = ("stages", "tables")
LAUNCH = "the plan of the launch that started it"
REPLANNED = "re-planned when it started (its upstream stages chosen since the launch)"
OLDER = "older record: the estimate campaign.json held when estimates began to be frozen"


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _empty() -> dict[str, dict[str, Any]]:
    return {kind: {} for kind in KINDS}


def started_parts(out: Path, record: dict[str, Any]) -> dict[str, set[str]]:
    """The stages and tables a campaign folder shows started: in ``record`` (``campaign.json``) or with a
    ``runs.csv`` in their folder (a search or table stopped part-way)."""
    found = {kind: set(record.get(kind) or {}) for kind in KINDS}
    for kind in KINDS:
        folder = out / kind
        if folder.is_dir():
            found[kind] |= {p.parent.name for p in folder.glob("*/runs.csv")}
    return found


def carry_frozen(out: Path) -> dict[str, dict[str, Any]]:
    """The frozen estimates ``<out>/campaign.json`` holds (none without it); for an older record, the entries its
    ``estimate`` held for the parts that had started (module docstring)."""
    path = out / "campaign.json"
    if not path.is_file():
        return _empty()
    previous = json.loads(path.read_text())
    estimate = previous.get("estimate") or {}
    if FROZEN in estimate:
        return {kind: dict((estimate[FROZEN] or {}).get(kind) or {}) for kind in KINDS}
    frozen, now = _empty(), utc_now()
    for kind, names in started_parts(out, previous).items():
        for name in sorted(names):
            entry = (estimate.get(kind) or {}).get(name)
            if entry is not None and entry.get("kind") != "fixed":
                frozen[kind][name] = {**entry, "made": OLDER, "made_at": None, "frozen_at": now}
    return frozen


def with_frozen(plan: dict[str, Any], frozen: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """``plan`` (the current estimate) with ``frozen`` (the entries earlier starts froze) under ``frozen``."""
    return {**plan, FROZEN: {kind: dict((frozen or {}).get(kind) or {}) for kind in KINDS}}


def stale(estimate: dict[str, Any], kind: str, name: str) -> bool:
    """Whether the plan in ``estimate`` stood ``name`` in on upstream stages not chosen when it was made (so a
    re-plan once they are chosen knows more): a stage whose entry is provisional, a table with a row whose stage was
    not chosen (nor fixed); or a plan without the part."""
    entry = (estimate.get(kind) or {}).get(name)
    if entry is None:
        return True
    if kind == "stages":
        return bool(entry.get("provisional"))
    stages = estimate.get("stages") or {}
    return any((stages.get(row["stage"]) or {}).get("basis") not in ("chosen", "fixed")
               for row in (entry.get("row_estimates") or {}).values())


def freeze(estimate: dict[str, Any], kind: str, name: str, made: str = LAUNCH) -> bool:
    """Copy ``estimate``'s entry of ``name`` into ``estimate.frozen`` unless it is frozen already (or the plan has
    no such entry); True when it froze one."""
    frozen = estimate.setdefault(FROZEN, _empty()).setdefault(kind, {})
    entry = (estimate.get(kind) or {}).get(name)
    if name in frozen or entry is None:
        return False
    frozen[name] = {**entry, "made": made, "made_at": estimate.get("made_at"), "frozen_at": utc_now()}
    return True


def freeze_at_start(record: dict[str, Any], kind: str, name: str,
                    replan: Callable[[], dict[str, Any]] | None = None) -> bool:
    """Freeze the estimate of the stage or table ``name`` (``kind``: ``stages`` / ``tables``) as it starts, unless
    an earlier start froze it: from ``record['estimate']`` (the launch's plan), or from a new plan (``replan()``,
    which then becomes ``record['estimate']``) when the launch's was :func:`stale` for it. True when it froze."""
    estimate = record.setdefault("estimate", {})
    if name in ((estimate.get(FROZEN) or {}).get(kind) or {}):
        return False
    made = LAUNCH
    if replan is not None and stale(estimate, kind, name):
        print(f"re-planning before {kind[:-1]} {name}: the plan of this launch stood it in on stages chosen since",
              flush=True)
        estimate = record["estimate"] = with_frozen(replan(), estimate.get(FROZEN))
        made = REPLANNED
    return freeze(estimate, kind, name, made)


def judged(estimate: dict[str, Any] | None, kind: str, name: str) -> dict[str, Any] | None:
    """The estimate ``name``'s recorded cost is set beside: its frozen entry, else (an older record no launch has
    resumed since, or a part not started) the plan's."""
    estimate = estimate or {}
    frozen = ((estimate.get(FROZEN) or {}).get(kind) or {}).get(name)
    return frozen if frozen is not None else (estimate.get(kind) or {}).get(name)
