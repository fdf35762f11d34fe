"""Continue a study from its tracking store when Tune's own folder is gone (a new machine, a lost node).

Only what is committed lasts between sessions: the MLflow store of a search holds, for every trial run under
the study's parent run, the sampled values (params) and what Tune saw (per-epoch validation metrics, and the
final best metrics of trials that trained to the end; a search's trials score no test). :func:`previous_trials` turns the FINISHED ones
into Optuna's ``points_to_evaluate`` + ``evaluated_rewards``, so the resumed search is told their results
without training them again, and runs only the remaining ``num_samples``; a grid search runs only its points
no finished trial holds (:func:`remaining_grid_points`). Trials that were still RUNNING when
the driver died lost their Tune checkpoints with the folder: they are marked FAILED (tag ``interrupted``) and
sampled anew. ASHA's rungs start empty: resumed trials are compared only with each other for early stopping.
An ablation resumed the same way replays its finished (variant, seed) trials into their existing runs
(:func:`finished_ablation_trials`) and trains only the others.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from ..config import parse_value
from ..legacy import upgrade_params
from ..metrics import BEST, VALID
from ..tracking import _client, search_all_runs


@dataclass
class PreviousTrial:
    """One finished trial of the search, as the store recorded it."""

    run_id: str
    point: dict[str, Any]  # the sampled value of every searched key, as the searcher encodes it
    reward: float  # the objective Tune saw last (best validation value for a trial that trained to the end)
    metrics: dict[str, float] = field(default_factory=dict)
    trial_id: str = ""  # Tune's id of the trial that logged the run


def _match_choice(text: str, choices: list[Any]) -> Any:
    """The choice (as encoded for Optuna) whose value equals the logged param ``text``; KeyError if none."""
    value = parse_value(text)
    for choice in choices:
        decoded = parse_value(choice) if isinstance(choice, str) and choice[:1] in "[{" else choice
        if decoded == value or (isinstance(decoded, list) and isinstance(value, (list, tuple))
                                and list(value) == decoded):
            return choice
        if isinstance(decoded, (int, float)) and isinstance(value, (int, float)) and math.isclose(decoded, value):
            return choice
    raise KeyError(text)


def finished_children(uri: str, parent_run_id: str) -> list[Any]:
    """FINISHED trial runs under ``parent_run_id``; RUNNING ones are marked FAILED with the tag ``interrupted``
    (their Tune state went with the folder; they are trained anew)."""
    client = _client(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = search_all_runs(client, [experiment_id], f"tags.role = 'trial' and tags.parent_run = '{parent_run_id}'")
    for run in runs:
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "interrupted", "the driver stopped; resumed from the tracking store")
            client.set_terminated(run.info.run_id, status="FAILED")
    return [run for run in runs if run.info.status == "FINISHED"]


def finished_ablation_trials(uri: str, parent_run_id: str) -> dict[str, Any]:
    """``{trial_key("<model>/<variant>" or variant, seed): run}`` of the FINISHED trials of an ablation."""
    from .reuse import trial_key
    from .spec import MODEL_SEPARATOR

    found: dict[str, Any] = {}
    for run in finished_children(uri, parent_run_id):
        tags = run.data.tags
        variant = tags.get("variant", "trial")
        if tags.get("model"):
            variant = f"{tags['model']}{MODEL_SEPARATOR}{variant}"
        found.setdefault(trial_key(variant, int(tags.get("seed", 0))), run)
    return found


def previous_trials(uri: str, parent_run_id: str, space: dict[str, Any], metric: str,
                    with_seed: bool = False) -> list[PreviousTrial]:
    """FINISHED trial runs under ``parent_run_id`` whose logged params fit ``space`` (Optuna distributions);
    ``with_seed``: each point also holds the trial's ``seed`` (a grid repeats its points over seeds).

    Runs still RUNNING are marked FAILED with the tag ``interrupted``: their Tune state is gone.
    """
    from optuna.distributions import CategoricalDistribution

    found: list[PreviousTrial] = []
    for run in finished_children(uri, parent_run_id):
        params = upgrade_params(run.data.params)  # runs logged in the old config shape: ddrm.legacy
        metrics = dict(run.data.metrics)
        reward = metrics.get(BEST + metric, metrics.get(VALID + metric))
        if reward is None:
            continue
        point: dict[str, Any] = {}
        try:
            for key, dist in space.items():
                text = params[key]
                if isinstance(dist, CategoricalDistribution):
                    point[key] = _match_choice(text, list(dist.choices))
                else:
                    point[key] = type(dist.low)(parse_value(text))
            if with_seed:
                point["seed"] = int(params["seed"])
        except KeyError:
            continue  # a run of another space under the same parent: not this search's trial
        found.append(PreviousTrial(run.info.run_id, point, float(reward), metrics, run.data.tags.get("trial_id", "")))
    return found


def remaining_grid_points(grid: dict[str, list[Any]], seeds: list[int], repeats: int,
                          previous: list[PreviousTrial]) -> list[dict[str, Any]]:
    """The points of a grid search still to train: every combination of ``grid``'s (encoded) values and each
    seed, ``repeats`` times over, less one occurrence per finished ``previous`` trial (points with ``seed``)."""
    keys = list(grid)
    todo = [{**dict(zip(keys, values)), "seed": seed}
            for _ in range(repeats) for seed in seeds for values in itertools.product(*(grid[k] for k in keys))]
    for trial in previous:
        if trial.point in todo:
            todo.remove(trial.point)
    return todo
