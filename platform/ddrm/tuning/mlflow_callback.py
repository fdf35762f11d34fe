"""A Tune ``Callback`` that logs every trial as a nested MLflow child run (see :mod:`ddrm.tracking`): per evaluation
``valid_*``, ``loss``, ``epoch`` and the cost so far (``cost_*``, step = epoch), then the final ``best_*``, ``test_*``
(ablations only: a search's trials score no test), ``diag_*`` and ``cost_*``."""

from __future__ import annotations

import time
from typing import Any

import yaml
from ray.tune import Callback

from ..codeversion import run_tags
from ..host import HOST_TAGS, PLACEMENT_COLUMNS
from ..metrics import epoch_metrics, final_metrics, is_final
from ..tracking import _client, _error_text, get_or_create_experiment
from .plan import StudyPlan
from .reuse import REUSE_TAG, flat_params
from .spec import MODEL_SEPARATOR


# reported by the trainable with every result: where the trial ran, its device and resource shares, and on what
# (CPU model, torch kernels)
PLACEMENT_TAGS = ("node_id", "node_ip", *PLACEMENT_COLUMNS, *HOST_TAGS)


class MLflowTrialCallback(Callback):
    """Child run per trial under ``parent_run_id``; safe to pickle (the client is created lazily). A trial's
    config, replay record and earlier run come from the study's ``plan``."""

    def __init__(self, uri: str, parent_run_id: str, experiment: str, plan: StudyPlan) -> None:
        self.uri, self.parent_run_id, self.experiment, self.plan = uri, parent_run_id, experiment, plan
        self.runs: dict[str, str] = {}  # Tune trial id -> run id
        self.frozen: set[str] = set()  # runs that finished before a resume: never logged to again
        self.last_step: dict[str, int] = {}  # run id -> the last epoch logged (each epoch is logged once)
        self._client_obj = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client_obj": None}

    @property
    def client(self):
        if self._client_obj is None:
            self._client_obj = _client(self.uri)
            self._experiment_id = get_or_create_experiment(self.uri, self.experiment)
        return self._client_obj

    def run_for(self, trial) -> str:
        """The child run of ``trial``: cached, found by tag (after a driver restart), or created."""
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        client = self.client
        resumed = self.plan.resumed_run(trial.config)
        if resumed:  # finished before a resume from the store: the trial replays it, nothing is logged again
            self.frozen.add(resumed)
            self.runs[trial.trial_id] = resumed
            return resumed
        found = client.search_runs(
            [self._experiment_id],
            filter_string=f"tags.trial_id = '{trial.trial_id}' and tags.parent_run = '{self.parent_run_id}'",
            max_results=1)
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            # a trial that trains again from an earlier epoch than it had logged (its checkpoint was gone, or
            # older than its last report) logs only the epochs after the last one its run holds
            logged = found[0].data.metrics.get("epoch")
            if logged is not None:
                self.last_step[run_id] = int(logged)
        else:
            from mlflow.entities import Param

            config = self.plan.config(trial.config)
            variant = str(trial.config.get("variant", "trial"))
            model, _, plain = variant.rpartition(MODEL_SEPARATOR)  # "<model>/<variant>" with spec `models`
            tags = {"mlflow.parentRunId": self.parent_run_id, "parent_run": self.parent_run_id,
                    "trial_id": trial.trial_id, "variant": plain, "seed": str(config.seed), "role": "trial",
                    **({"model": model} if model else {}), **run_tags(config)}
            reused = self.plan.replay_record(trial.config)
            if reused:
                tags[REUSE_TAG] = reused["source"]
            run_name = run_name_for(trial, self.plan)
            run_id = client.create_run(self._experiment_id, run_name=run_name, tags=tags).info.run_id
            params = [Param(k, v) for k, v in flat_params(config).items()]
            client.log_batch(run_id, params=params)
            client.log_text(run_id, yaml.safe_dump(config.to_dict(), sort_keys=False), "config.yaml")
        self.runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric, RunTag

        run_id = self.run_for(trial)
        if run_id in self.frozen:
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        # the trainable's final report carries best_epoch (and test metrics unless the trial is a search's); Tune
        # also sets ``done`` on the evaluation at which a scheduler (ASHA) stops a trial, and that one is an epoch
        # like any other (its cost_* so far are the trial's cost)
        final = bool(result.get("done")) and is_final(result)
        if final:
            metrics = final_metrics(result)
            if isinstance(result.get("gpu_max_memory_mb"), (int, float)):
                metrics["gpu_max_memory_mb"] = float(result["gpu_max_memory_mb"])
        else:
            metrics = epoch_metrics(result)
            # a trial restarted from an earlier point (its node died before the driver registered a checkpoint)
            # reports epochs again with the same values: each epoch is logged once
            if step <= self.last_step.get(run_id, -1):
                metrics = {}
            self.last_step[run_id] = max(step, self.last_step.get(run_id, -1))
        # where the trial ran (the trainable reports it; the last node wins after a retry on another node)
        tags = [RunTag(k, str(result[k])) for k in PLACEMENT_TAGS if result.get(k) is not None]
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]  # step = epoch: the UI draws learning curves
        if final:
            batch += curve_metrics(result.get("history"), now)  # a backend the driver pretrained: its curve
        for start in range(0, max(1, len(batch)), 1000):  # MLflow takes at most 1000 metrics per batch
            if batch[start:start + 1000] or (tags and not start):
                self.client.log_batch(run_id, metrics=batch[start:start + 1000], tags=tags if not start else [])

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self.run_for(trial)
        if run_id not in self.frozen:
            self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_for(trial)
        self.client.set_tag(run_id, "error", _error_text(trial)[:5000])
        self.client.set_terminated(run_id, status="FAILED")


def curve_metrics(history: Any, timestamp: int) -> list:
    """MLflow metrics (``step`` = epoch) of a stage's per-evaluation ``history`` (``StageResult.history``, or
    its JSON text), named as live reports are: ``valid_recall_at_20``, ..., ``loss``, ``epoch``."""
    import json

    from mlflow.entities import Metric

    if isinstance(history, str):
        try:
            history = json.loads(history)
        except ValueError:
            return []
    metrics = []
    for entry in history if isinstance(history, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("epoch"), (int, float)):
            metrics += [Metric(k, v, timestamp, int(entry["epoch"])) for k, v in epoch_metrics(entry).items()]
    return metrics


def _short_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value).replace(" ", "")


def run_name_for(trial, plan: StudyPlan) -> str:
    """A child run's name: ``<model>/<variant>/seed<N>`` for an ablation trial (the model being the spec's
    ``models`` entry, else ``model.name``); for a search ``trial<N>`` (Tune's trial number, as in its trial
    folder ``ddrm_trainable_<study hash>_<id>_<N>_...``) and the sampled values that differ from the base config,
    e.g. ``trial7 steps=30 bpr_weight=0.4``. ``trial``: Tune's Trial (``config``, ``experiment_tag``,
    ``trial_id``)."""
    from .progress import short_key

    params = trial.config
    config = plan.config(params)
    if "variant" in params:
        variant = str(params["variant"])
        if MODEL_SEPARATOR not in variant:
            variant = f"{config.model.name}{MODEL_SEPARATOR}{variant}"
        return f"{variant}/seed{config.seed}"
    number = str(getattr(trial, "experiment_tag", "") or "").partition("_")[0]
    name = f"trial{int(number)}" if number.isdigit() else f"trial-{trial.trial_id}"
    keys = list(params)
    flat, base = config.to_flat_dict(), plan.base_config().to_flat_dict()
    changed = [f"{short_key(k, keys)}={_short_value(flat[k])}" for k in keys if k in flat and flat[k] != base.get(k)]
    return " ".join([name, *changed])
