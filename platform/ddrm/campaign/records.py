"""What earlier runs recorded, read for the plan's estimate: a finished search's chosen trial and the epochs it
trained, and the trial-epochs a search spent beside ASHA's expectation.

A search stage's folder ``<out>/stages/<stage>`` holds ``runs.csv`` (one row per trial) and, once the search
finished, ``chosen_config.yaml`` (:func:`.run._write_chosen`: the best trial's config, :func:`.run.best_config`).
The chosen trial is the row whose config equals the chosen config on every key but where it ran
(:data:`IGNORED_KEYS`), floats to the 8 significant digits ``runs.csv`` keeps; a row that trained to the end (it has
``best_epoch``) comes first. A row's epochs:

- ``epoch``: the epochs its final stage trained (the trial's last report: the DDRM stage's for a DDRM trial, the
  backend's or the standalone model's otherwise; where ASHA stopped it for a stopped trial), the quantity ASHA's
  expectation and a stage's epoch cap count;
- ``cost_epochs - epoch``: its backend's epochs, when the trial trained the backend itself
  (``cost_backend_from_cache`` 0; a search's DDRM trials load the backend its driver pretrained, so theirs is 1).

A row's CPU-seconds per epoch (:func:`recorded_rate`): ``cost_cpu_seconds / cost_epochs`` (the whole trial: data
loading, training and the per-epoch validation) where ``cost_epochs`` is ``epoch``, i.e. the cost is of its final
stage's epochs alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml

from ..config import Config, config_from_dict
from ..errors import ConfigError
from ..metrics import BEST_EPOCH, COST_CPU, COST_EPOCHS, COST_FROM_CACHE
from ..tuning.importer import number, read_runs_csv as read_runs
from .imports import RUNTIME_KEYS, same_value

IGNORED_KEYS = (*RUNTIME_KEYS, "train.device")  # where a trial ran (the device enters no identity), not what it ran
MIN_TRIALS = 5  # a search's records calibrate the plan only with at least this many trials


def row_config(row: pd.Series) -> dict[str, Any] | None:
    """The flat validated config of a ``runs.csv`` row (its ``param.*`` columns), None when it does not validate."""
    from ..report.runs import config_of

    try:
        return config_from_dict(config_of(row)).to_flat_dict()
    except ConfigError:
        return None


def same_config(row: dict[str, Any], chosen: dict[str, Any]) -> bool:
    """Whether two flat configs are one experiment: equal on every key but :data:`IGNORED_KEYS`."""
    keys = (set(row) | set(chosen)) - set(IGNORED_KEYS)
    return all(k in row and k in chosen and same_value(row[k], chosen[k]) for k in keys)


def final_epochs(row: pd.Series) -> int | None:
    """The epochs the row's final stage trained (``epoch``), or None when not recorded."""
    value = number(row.get("epoch"))
    return None if value is None else int(round(value))


def backend_epochs(row: pd.Series) -> int | None:
    """The epochs a DDRM row's trial spent training its backend itself (``cost_epochs - epoch``), or None when the
    backend came from the cache (``cost_backend_from_cache`` not 0) or the columns are missing."""
    cost, final = number(row.get(COST_EPOCHS)), number(row.get("epoch"))
    if number(row.get(COST_FROM_CACHE)) != 0.0 or cost is None or final is None:
        return None
    return max(0, int(round(cost - final)))


def recorded_rate(row: pd.Series) -> tuple[float | None, str]:
    """``(CPU-seconds per epoch, "")`` of a row's final stage: ``cost_cpu_seconds / cost_epochs`` when the cost is
    of the epochs that stage trained alone (``cost_epochs`` = ``epoch``: a standalone model, or a DDRM trial on a
    backend its driver pretrained); else ``(None, why not)``. A trial that trained its backend too (or resumed after
    it did: the checkpoint's ``other_epochs``) has one cost for both stages' epochs; a backend loaded from the cache
    counts none (:class:`ddrm.tuning.trainable.TrialCost`, :class:`ddrm.loop.RunCost`)."""
    cpu, spent, final = number(row.get(COST_CPU)), number(row.get(COST_EPOCHS)), number(row.get("epoch"))
    if cpu is None or spent is None:
        return None, "no cost_cpu_seconds / cost_epochs recorded"
    if spent <= 0 or cpu <= 0:
        return None, f"cost_epochs {spent:g}, cost_cpu_seconds {cpu:g}: no epochs to divide by"
    if final is None or round(spent) != round(final):
        trained = "no epoch recorded" if final is None else f"its final stage trained {final:g}"
        return None, (f"cost_epochs {spent:g} but {trained}: its one cost counts another stage's epochs too, e.g. "
                      f"a backend the trial trained itself")
    return cpu / spent, ""


def recorded_cpu_hours(frame: pd.DataFrame) -> float:
    """The ``cost_cpu_seconds`` the rows of ``frame`` recorded, in hours (0 where none)."""
    if COST_CPU not in frame.columns:
        return 0.0
    return float(pd.to_numeric(frame[COST_CPU], errors="coerce").fillna(0.0).sum()) / 3600


class ChosenTrials:
    """The chosen trials of the finished searches in one campaign folder ``out`` (each read once)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._rows: dict[str, pd.Series | None] = {}

    def row(self, stage: str) -> pd.Series | None:
        """The ``runs.csv`` row of ``stage``'s chosen trial; None when the search has not finished here (no
        ``chosen_config.yaml`` or ``runs.csv``) or no row is the chosen config."""
        if stage not in self._rows:
            self._rows[stage] = chosen_row(self.out / "stages" / stage)
        return self._rows[stage]


def chosen_row(folder: Path) -> pd.Series | None:
    """The row of ``folder/runs.csv`` that is the config of ``folder/chosen_config.yaml`` (module docstring)."""
    from .run import CHOSEN_FILE

    runs, chosen = folder / "runs.csv", folder / CHOSEN_FILE
    if not (runs.is_file() and chosen.is_file()):
        return None
    target = config_from_dict(yaml.safe_load(chosen.read_text())).to_flat_dict()
    matches = [row for _, row in read_runs(runs).iterrows() if (flat := row_config(row)) and same_config(flat, target)]
    ended = [row for row in matches if number(row.get(BEST_EPOCH)) is not None]
    return (ended or matches or [None])[0]


@dataclass
class EpochRecord:
    """The trial-epochs one search's trials recorded beside ASHA's expectation for as many trials."""

    source: str  # what the records are: "<dataset>/<stage>" or an earlier search's runs.csv
    trials: int  # rows with a recorded ``epoch``
    recorded: int  # their epochs (final stage), summed
    expected: float  # ASHA's expected epochs of as many trials of that search

    @property
    def ratio(self) -> float:
        return self.recorded / self.expected if self.expected > 0 else 1.0

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def epoch_record(frame: pd.DataFrame, per_trial: float, source: str) -> EpochRecord | None:
    """``frame``'s trials (rows with a recorded ``epoch``) against ``per_trial`` expected epochs each; None with
    fewer than :data:`MIN_TRIALS` of them or nothing expected (a closed-form model)."""
    column = frame["epoch"] if "epoch" in frame.columns else pd.Series(dtype=float)
    epochs = pd.to_numeric(column, errors="coerce").dropna()
    if len(epochs) < MIN_TRIALS or per_trial <= 0:
        return None
    return EpochRecord(source=source, trials=len(epochs), recorded=int(round(epochs.sum())),
                       expected=len(epochs) * per_trial)


def sibling_records(out: Path, campaign: str, stage: str,
                    per_trial: Callable[[Config], float]) -> list[EpochRecord]:
    """The finished searches of ``stage`` in the other dataset folders beside ``out`` (``out``'s siblings whose
    ``campaign.json`` names ``campaign``), each against ``per_trial(its chosen config)`` expected epochs per trial
    (its own epoch cap). ``out`` itself is never read: a stage's own records do not estimate it."""
    from .run import CHOSEN_FILE

    out = Path(out).resolve()
    records: list[EpochRecord] = []
    if not out.parent.is_dir():
        return records
    for other in sorted(p for p in out.parent.iterdir() if p.is_dir() and p.resolve() != out):
        folder = other / "stages" / stage
        finished = (folder / "runs.csv").is_file() and (folder / CHOSEN_FILE).is_file()
        if not (finished and _same_campaign(other, campaign)):
            continue
        config = config_from_dict(yaml.safe_load((folder / CHOSEN_FILE).read_text()))
        found = epoch_record(read_runs(folder / "runs.csv"), per_trial(config), f"{other.name}/{stage}")
        if found is not None:
            records.append(found)
    return records


def _same_campaign(folder: Path, campaign: str) -> bool:
    path = folder / "campaign.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("campaign") == campaign
    except (json.JSONDecodeError, AttributeError):
        return False
