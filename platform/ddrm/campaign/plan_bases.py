"""The stages as the campaign plan stands them in (:func:`stage_bases`): each stage's config and search, the rows it
imports from an earlier search, and whether the run would use that config or the plan guesses it.

A stage's config is its ``chosen_config.yaml`` when an earlier run finished its search in the campaign folder; else,
for a search that imports an earlier one, the best imported row (what the search chooses if no trial it trains does
better); else its base config (with the stage's override on the dataset, :mod:`.overrides`: a probe of a stage
overridden to ``train.precision: bf16`` runs at bf16). A stage's imported rows are counted by the run's own selection
(:func:`.run.earlier_search`); the count is *provisional* while an upstream stage it inherits from is not chosen
(nor settled by an import that fills its budget), since the rows that are its experiment depend on that choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..config import Config, config_from_dict
from ..tuning.spec import SearchSpec
from .estimate import search_epochs
from .imports import Selection, stage_base
from .overrides import check_ran_with, recorded_overrides
from .run import CHOSEN_FILE, best_config, earlier_search, fixed_config, search_spec
from .spec import CampaignSpec, stage_order


@dataclass
class Basis:
    """One stage as the plan stands it in: its config and search, its imported rows, and whether the run would use
    this config (``final``) or the plan guesses it."""

    config: Config
    source: str  # "chosen" (chosen_config.yaml) | "fixed" | "best imported row" | "base"
    final: bool
    search: SearchSpec | None = None
    selection: Selection | None = None
    provisional: list[str] = field(default_factory=list)  # upstream stages not settled: its imports may change


def best_imported(search: SearchSpec, selection: Selection | None) -> Config | None:
    """The config ``search`` would choose among its imported rows alone (the best validation objective of the
    rows that trained to the end, :func:`.run.best_config`), or None when none did."""
    from ..metrics import BEST
    from ..report.runs import best_run
    from .records import row_config

    if selection is None or selection.rows.empty:
        return None
    objective = BEST + search.metric
    if objective not in selection.rows.columns:
        return None
    rows = selection.rows.assign(**{objective: pd.to_numeric(selection.rows[objective], errors="coerce")})
    best = best_run(rows, search.metric)
    flat = row_config(best) if best is not None else None
    if flat is None:
        return None
    return best_config(search, {"best": {"params": {k: flat[k] for k in search.space if k in flat}}})


def stage_bases(spec: CampaignSpec, dataset: str, out: Path) -> dict[str, Basis]:
    """Every stage's :class:`Basis`, in dependency order (module docstring)."""
    bases: dict[str, Basis] = {}
    ran_with = recorded_overrides(out)
    for level in stage_order(spec):
        for stage in level:
            configs = {name: basis.config for name, basis in bases.items()}
            pending = [up for up in spec.stages[stage].inherit if not bases[up].final]
            path = out / "stages" / stage / CHOSEN_FILE
            if spec.stages[stage].fixed is not None:
                config = fixed_config(spec, stage, dataset, configs)
                check_ran_with(spec, stage, dataset, config.to_flat_dict(), out, ran_with)
                bases[stage] = Basis(config, "fixed", not pending, provisional=pending)
                continue
            search = search_spec(spec, stage, dataset, configs)
            check_ran_with(spec, stage, dataset, stage_base(search), out, ran_with)
            selection = earlier_search(spec, stage, dataset, search, announce=False)
            if path.is_file():
                config, source, final = config_from_dict(yaml.safe_load(path.read_text())), "chosen", True
            elif (best := best_imported(search, selection)) is not None:
                trials = search_epochs(search, best)[0]
                config, source, final = best, "best imported row", not pending and len(selection.rows) >= trials
            else:
                config, source, final = config_from_dict(search.base), "base", False
            bases[stage] = Basis(config, source, final, search, selection, pending)
    return bases


def stand_in_configs(spec: CampaignSpec, dataset: str, out: Path) -> dict[str, Config]:
    """Each stage's config as the plan stands it in (:func:`stage_bases`)."""
    return {stage: basis.config for stage, basis in stage_bases(spec, dataset, Path(out)).items()}

