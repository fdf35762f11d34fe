"""A Tune ``Callback`` that logs every trial as a nested MLflow child run (see :mod:`ddrm.tracking`)."""

from __future__ import annotations

import time
from typing import Any

import yaml
from ray.tune import Callback

from ..tracking import _client, _error_text, _numeric, get_or_create_experiment
from .reuse import REUSE_TAG, flat_params, trial_key
from .spec import MODEL_SEPARATOR
from .trainable import trial_config


class MLflowTrialCallback(Callback):
    """Child run per trial under ``parent_run_id``; safe to pickle (the client is created lazily)."""

    def __init__(self, uri: str, parent_run_id: str, experiment: str) -> None:
        self.uri, self.parent_run_id, self.experiment = uri, parent_run_id, experiment
        self.runs: dict[str, str] = {}
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
        found = client.search_runs(
            [self._experiment_id],
            filter_string=f"tags.trial_id = '{trial.trial_id}' and tags.parent_run = '{self.parent_run_id}'",
            max_results=1)
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            from mlflow.entities import Param

            config = trial_config(trial.config)
            variant = str(trial.config.get("variant", "trial"))
            model, _, plain = variant.rpartition(MODEL_SEPARATOR)  # "<model>/<variant>" with spec `models`
            tags = {"mlflow.parentRunId": self.parent_run_id, "parent_run": self.parent_run_id,
                    "trial_id": trial.trial_id, "variant": plain, "seed": str(config.seed), "role": "trial",
                    **({"model": model} if model else {})}
            reused = trial.config.get("_study", {}).get("reuse", {}).get(trial_key(variant, config.seed))
            if reused:
                tags[REUSE_TAG] = reused["source"]
            run_name = f"{variant.replace(MODEL_SEPARATOR, '-')}-seed{config.seed}-{trial.trial_id}"
            run_id = client.create_run(self._experiment_id, run_name=run_name, tags=tags).info.run_id
            params = [Param(k, v) for k, v in flat_params(config).items()]
            client.log_batch(run_id, params=params)
            client.log_text(run_id, yaml.safe_dump(config.to_dict(), sort_keys=False), "config.yaml")
        self.runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self.run_for(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = _numeric(result)
        if result.get("done"):
            metrics = {k: v for k, v in metrics.items() if k.startswith(("test_", "best_", "diag_"))}
        else:
            metrics = {(f"valid_{k}" if k.startswith(("recall_at_", "ndcg_at_")) else k): v
                       for k, v in metrics.items() if not k.startswith("best_")}
        if metrics:
            self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.client.set_terminated(self.run_for(trial), status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_for(trial)
        self.client.set_tag(run_id, "error", _error_text(trial)[:5000])
        self.client.set_terminated(run_id, status="FAILED")
