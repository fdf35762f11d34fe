"""What a campaign will cost before it runs: trials and trial-epochs per stage, and CPU-hours from a probe.

The probe trains each distinct model of the campaign (a stage's final stage: backend, DDRM, standalone model)
for one epoch on the dataset, one thread, and times its epoch (train + validation, from the loop's evaluation
events). A search stage costs ``trials left x epochs per trial x seconds per epoch``, where the epochs per trial
follow ASHA's rungs (every trial reaches the grace period, one in ``reduction_factor`` the next rung, ...), scaled
by the recorded / expected ratio of earlier finished searches of the stage where there are some (the plan's
calibration, :mod:`.plan_stage`); a closed-form trial is one fit. A DDRM or mean-of-liked-items stage adds its backend's
pretraining once (the study's driver trains it before the trials, so no trial's ``runs.csv`` row records it). A
table row costs ``seeds x`` its final stage's epochs (the chosen trial's recorded epochs, else the stage's epoch
cap) plus, once per backend and seed, the backend it trains (rows on one backend share it: :func:`backend_key`),
each at the chosen trial's recorded CPU-seconds per epoch where its search finished (:mod:`.plan_rate`), else the
probe's. Probes are kept in ``<out>/probe.json`` per host and reused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..tuning.spec import SearchSpec


def asha_expected_epochs(grace: int, max_t: int, reduction: int) -> float:
    """Expected epochs of one trial under ASHA with rungs at ``grace * reduction**k`` below ``max_t``."""
    expected, reached, survive = float(min(grace, max_t)), min(grace, max_t), 1.0
    while reached < max_t:
        survive /= reduction
        nxt = min(reached * reduction, max_t)
        expected += (nxt - reached) * survive
        reached = nxt
    return expected


def final_epochs_cap(config: Config) -> int:
    """The epoch cap of a config's final stage (0 for a closed-form model: one fit)."""
    stage = config.final_stage
    if stage == "ddrm":
        d = config.ddrm
        if d.reverse_steps == 0 and d.inference_start == "mean" and d.freeze_backend:
            return 0  # the mean of liked items: nothing to train (train.fit_ddrm)
        return config.train.stage_epochs(d.epochs)
    if config.model.name in ("ease", "itemknn", "mostpop"):
        return 0
    return config.train.stage_epochs(getattr(config.model, "epochs", None))


def per_trial_epochs(search: SearchSpec, config: Config) -> tuple[int, float]:
    """``(epoch cap per trial, ASHA-expected epochs of one trial)`` of a search whose trials run ``config``'s
    final stage (FIFO: the cap; a closed-form model: ``(0, 0.0)``)."""
    cap = final_epochs_cap(config)
    if search.scheduler["type"] == "asha" and cap:
        cap = min(cap, search.scheduler["max_t"])
        return cap, asha_expected_epochs(search.scheduler["grace_period"], cap, search.scheduler["reduction_factor"])
    return cap, float(cap)


def search_epochs(search: SearchSpec, config: Config) -> tuple[int, int, float]:
    """``(trials, epoch cap per trial, expected epochs over all trials)`` of a search."""
    from .run import grid_size

    trials = grid_size(search) if search.mode == "grid" else search.num_samples
    cap, per_trial = per_trial_epochs(search, config)
    return trials, cap, trials * per_trial


def backend_key(config: Config) -> str:
    """What makes two runs train the same backend at one seed (the backend cache's key without the data, seed and
    code, :func:`ddrm.stages.backend_cache_key`): its model's and loss plug-in's settings, the loop's epoch cap,
    patience, batch size, evaluation period and time budget, and its precision. A table's rows on one backend
    (alone, mean of liked items, DDRM) train it once per seed."""
    from ..precision import stage_precision

    train = config.train
    return json.dumps({"model": config.model.settings(),
                       "denoise": config.denoise.settings() if config.denoise.name != "none" else None,
                       "loop": [train.stage_epochs(getattr(config.model, "epochs", None)),
                                getattr(config.model, "patience", None) or train.patience, train.batch_size,
                                train.eval_every, train.time_budget_minutes],
                       "precision": stage_precision(train.precision, "backend")}, sort_keys=True, default=str)


def probe_key(config: Config) -> str:
    """What a probe measures: the model, its plug-in, and DDRM trained, DDRM with nothing to train (the mean of
    liked items) or none (their epoch costs differ); and the precision its trained final stage (DDRM's denoisers,
    the backend or the standalone model) runs at, unless fp32 (:func:`ddrm.precision.stage_precision`: DDRM's
    denoisers and the standalone models that support bf16, Mult-VAE and DiffRec; a backend alone under
    ``train.precision: bf16`` shares the fp32 probe; a campaign override of the precision is keyed like that)."""
    from ..precision import stage_precision

    wrapper = "alone"
    if config.ddrm.enabled:
        wrapper = "ddrm" if final_epochs_cap(config) else "mean"
    stage = {"ddrm": "ddrm", "mean": None}.get(wrapper, "model" if config.final_stage == "model" else "backend")
    precision = stage_precision(config.train.precision, stage, config.model.name) if stage else "fp32"
    if precision != "fp32":  # the epoch depends on it
        wrapper += f"@{precision}"
    return f"{config.model.name}+{config.denoise.name}+{wrapper}"


def probe_epoch(config: Config, data_dir: str | None, threads: int = 1) -> dict[str, float]:
    """Seconds of one epoch (train + validation) of each stage of ``config``, measured on this host."""
    from ..train import run

    seconds: dict[str, float] = {}

    def on_eval(event) -> None:
        seconds.setdefault(event.stage, event.seconds)

    probe = config.replace({"train.epochs": 1, "train.max_epochs": 1, "train.threads": threads, "train.patience": 1})
    start = time.perf_counter()
    run(probe, data_dir=data_dir, callback=on_eval, progress=False, use_cache=False)
    seconds["total"] = time.perf_counter() - start
    return seconds


def load_probes(path: Path, host: str) -> dict[str, Any]:
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("host") == host:
            return stored.get("probes", {})
    return {}


def save_probes(path: Path, host: str, probes: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": host, "probes": probes}, indent=2) + "\n")
    tmp.replace(path)


def epoch_seconds(probe: dict[str, float], config: Config) -> tuple[float, float]:
    """``(seconds per epoch of the final stage, seconds per backend epoch or 0)`` from a probe."""
    stage = config.final_stage
    final = probe.get(stage, probe.get("total", 0.0))
    backend = probe.get("backend", 0.0) if stage == "ddrm" or config.denoise.name != "none" else 0.0
    if stage == "ddrm":
        return final, backend
    return final, 0.0
