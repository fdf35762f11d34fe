"""The trial plan of a study: one typed object holding what every trial shares, built once by the driver.

Tune's ``param_space`` holds only what varies between trials — an ablation's ``variant`` and ``seed``, a
search's sampled dotted keys and ``seed`` — and the :class:`StudyPlan` travels beside it: to the trainable
through ``tune.with_parameters`` (stored once in Ray's object store, not copied into every trial's config)
and to the MLflow callback by its constructor. Trials, the callback, the runner and the CLI all get a trial's
:class:`~ddrm.config.Config` from :meth:`StudyPlan.config`; nothing else rebuilds one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..config import Config, apply_overrides, config_from_dict

NO_VARIANT = "trial"  # the variant name of a search's trials (in trial keys)


@dataclass(frozen=True)
class StudyContext:
    """Where a study lives: Tune's results folder, the shared backend cache, the datasets, the tracking store."""

    storage: Path
    cache_dir: Path
    data_dir: Path
    tracking_uri: str


def study_context(storage: str | None, data_dir: str | None, tracking_uri: str | None) -> StudyContext:
    """Paths resolved; the backend cache is ``$DDRM_CACHE_DIR`` when set, else ``<storage>/backend_cache``."""
    from ..data.prepared import resolve_data_dir
    from ..tracking import resolve_tracking_uri

    storage_path = Path(storage or "ray_results").resolve()
    cache = Path(os.environ.get("DDRM_CACHE_DIR") or storage_path / "backend_cache").resolve()
    return StudyContext(storage_path, cache, resolve_data_dir(data_dir).resolve(), resolve_tracking_uri(tracking_uri))


def trial_key(variant: str, seed: int) -> str:
    """How a study names one trial in :attr:`StudyPlan.reuse` / :attr:`StudyPlan.resumed_runs`."""
    return f"{variant}|{int(seed)}"


def encode_choice(value: Any) -> Any:
    """Optuna/Tune choices must be scalars: a list (or dict) travels as YAML text (:meth:`StudyPlan.decode`)."""
    return yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, (list, dict)) else value


@dataclass(frozen=True)
class StudyPlan:
    """What every trial of one study shares.

    ``base``: the spec's base config (``--set`` applied); ``trials``: an ablation's ``{trial_key(variant, seed):
    Config}`` (empty for a search, whose configs are sampled); ``encoded``: searched keys whose choices travel
    as YAML text; ``threads``: the planned torch threads per trial (a trial uses the CPUs Ray assigns it);
    ``reuse``: ``{trial_key: replay record}`` of trials replayed instead of trained (:mod:`.reuse`);
    ``resumed_runs``: ``{trial_key: run id}`` of trials that finished before a resume from the tracking store
    (their runs are not logged to again); ``evaluate_test``: whether the trials score the test split — true for
    an ablation (its table is of test metrics), false for a search, whose trials choose on validation and never
    compute test (``train.run(evaluate_test=...)``); ``device``: every trial's ``train.device`` (None: the
    config's), applied to the trial's config only: ``base`` and ``trials`` (the study's identity) stay without it.
    """

    base: dict[str, Any]
    data_dir: str = ""
    cache_dir: str | None = None
    threads: int = 1
    trials: dict[str, Config] = field(default_factory=dict)
    encoded: tuple[str, ...] = ()
    reuse: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed_runs: dict[str, str] = field(default_factory=dict)
    evaluate_test: bool = True
    device: str | None = None

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's ``param_space`` values with list-valued choices decoded (``variant`` left out)."""
        return {k: (yaml.safe_load(v) if k in self.encoded and isinstance(v, str) else v)
                for k, v in params.items() if k != "variant"}

    def key(self, params: Mapping[str, Any]) -> str:
        """The trial's key: ``trial_key(variant, seed)`` (a search's trials are all ``"trial"``)."""
        return trial_key(str(params.get("variant", NO_VARIANT)), params.get("seed", 0))

    def config(self, params: Mapping[str, Any]) -> Config:
        """The validated config of the trial with these ``param_space`` values (``device`` applied)."""
        if "variant" in params:
            config = self.trials[self.key(params)]
        else:
            config = config_from_dict(apply_overrides(self.base, self.decode(params)))
        if self.device is None or config.train.device == self.device:
            return config
        return config.replace({"train.device": self.device})

    def base_config(self) -> Config:
        return config_from_dict(self.base)

    def replay_record(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The earlier run this trial replays instead of training, or None."""
        return self.reuse.get(self.key(params))

    def resumed_run(self, params: Mapping[str, Any]) -> str | None:
        """The run of a trial that finished before a resume from the tracking store, or None."""
        return self.resumed_runs.get(self.key(params))

    def with_changes(self, **changes: Any) -> "StudyPlan":
        return replace(self, **changes)
