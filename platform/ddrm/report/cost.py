"""What a study's runs cost, summed: the ``cost:`` line of ``table.md``.

Every trial run logs its cost (:mod:`ddrm.metrics`): ``cost_wall_seconds`` and ``cost_cpu_seconds`` (the trial's
own ``run`` call: wall time and process CPU time) and ``cost_epochs`` (the training epochs its stages ran; a
backend loaded from the cache counts 0). A trial a scheduler stopped keeps its cost up to the stop. A replayed
run (``reused_from``: ``--reuse-from``) carries its source's cost and is not counted again; runs logged before
costs were recorded are counted apart. The wall hours are summed over runs (trials run side by side overlap).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..metrics import COST_CPU, COST_EPOCHS, COST_WALL


def study_cost(frame: pd.DataFrame) -> dict[str, Any]:
    """``{runs, epochs, cpu_hours, wall_hours, replayed, unrecorded}`` over the rows of ``frame`` (one per run):
    the sums over the runs counted (``runs``: neither replayed nor without a cost record)."""
    replayed = (frame["reused_from"].fillna("").astype(str).ne("") if "reused_from" in frame.columns
                else pd.Series(False, index=frame.index))
    recorded = (frame[COST_WALL].notna() if COST_WALL in frame.columns else pd.Series(False, index=frame.index))
    counted = frame[recorded & ~replayed]

    def total(column: str) -> float:
        return float(counted[column].fillna(0.0).sum()) if column in counted.columns else 0.0

    return {"runs": len(counted), "epochs": int(round(total(COST_EPOCHS))), "cpu_hours": total(COST_CPU) / 3600.0,
            "wall_hours": total(COST_WALL) / 3600.0, "replayed": int(replayed.sum()),
            "unrecorded": int((~recorded & ~replayed).sum())}


def cost_line(frame: pd.DataFrame) -> str | None:
    """``cost: N runs, X trial-epochs, Y CPU-hours, Z wall-hours`` (and how many runs were replayed or have no
    cost record, not counted); None when no run recorded a cost (a store from before costs were logged)."""
    cost = study_cost(frame)
    if not cost["runs"] and not cost["replayed"]:
        return None
    line = (f"cost: {cost['runs']} runs, {cost['epochs']} trial-epochs, {cost['cpu_hours']:.3f} CPU-hours, "
            f"{cost['wall_hours']:.3f} wall-hours")
    apart = ([f"{cost['replayed']} replayed (cost paid by their source runs)"] if cost["replayed"] else []) + (
        [f"{cost['unrecorded']} without a cost record"] if cost["unrecorded"] else [])
    return line + (f" (not counted: {'; '.join(apart)})" if apart else "") + "."
