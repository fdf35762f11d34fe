"""The Ray Tune function trainable around the pure ``train.run`` loop.

A trial's ``params`` hold the sampled dotted keys (``"ddrm.steps": 30``), ``"seed"``, optionally
``"variant"`` (ablations), and the study context under ``"_study"``: the base config, the variants,
the data dir, the backend cache dir and the planned CPU count (a trial's threads follow the CPUs Ray
assigns it). Every evaluation is reported with ``tune.report`` together with a checkpoint; a retried trial
resumes from ``tune.get_checkpoint()``. The backend is never trained here when the driver pre-trained it
(it is loaded from the shared cache). A trial listed in ``_study["reuse"]`` (see :mod:`.reuse`) replays
an earlier identical run's metrics instead of training.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
FAULT_ENV = "DDRM_TEST_CRASH_ONCE"  # fault injection: marker path; the trial kills its worker once
HOLD_ENV = "DDRM_TEST_HOLD"  # fault tests: after its epoch-1 checkpoint a trial waits until this file exists


def trial_config(params: dict[str, Any]):
    """The validated :class:`~ddrm.config.Config` of one trial."""
    from ..config import apply_overrides, config_from_dict

    import yaml

    study = params["_study"]
    encoded = set(study.get("encoded", []))
    overrides = {k: (yaml.safe_load(v) if k in encoded and isinstance(v, str) else v)
                 for k, v in params.items() if not k.startswith("_") and k != "variant"}
    if "variant" in params:
        overrides = {**study["variants"][params["variant"]], **overrides}
    return config_from_dict(apply_overrides(study["base"], overrides))


def _metrics(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items() if k != "n_users"}


def trial_threads(study: dict[str, Any]) -> int:
    """Torch threads for this trial: the CPUs Ray assigned to it, so a study resumed on more (or fewer) CPUs
    uses them; the study's planned count outside a Ray worker."""
    import ray

    assigned = None
    if ray.is_initialized():
        try:
            assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except AssertionError:  # the driver process: Ray assigns it nothing
            pass
    return max(1, int(assigned or study.get("threads", 1)))


def trial_placement(device_name: str) -> dict[str, str]:
    """Where this trial runs, reported with every result (the MLflow callback tags the run with it): Ray's
    node id (distinct for nodes that share an IP), the node's IP and the torch device (``cpu``, ``cuda:0``)."""
    import ray

    from ..train import select_device

    device = select_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    placement = {"device": str(device)}
    if ray.is_initialized():
        context = ray.get_runtime_context()
        placement["node_id"] = context.get_node_id()
        placement["node_ip"] = ray.util.get_node_ip_address()
    return placement


def ddrm_trainable(params: dict[str, Any]) -> None:
    """Train one trial; report validation metrics per evaluation and test metrics at the end."""
    from ray import tune

    from ..train import TrainingDiverged, run
    from .reuse import replay, trial_key

    # Ray Train logs "Checkpoint successfully created at ..." (INFO) per report; the driver would echo every one
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    study = params["_study"]
    reused = study.get("reuse", {}).get(trial_key(params.get("variant", "trial"), params.get("seed", 0)))
    if reused:
        replay(reused, tune.report)
        return
    os.environ["DDRM_CACHE_DIR"] = study["cache_dir"]
    torch.set_num_threads(trial_threads(study))
    config = trial_config(params)
    tuned_stage = "model" if config.model.name else ("ddrm" if config.ddrm.enabled else "backend")

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)

    crash_marker = study.get("crash_once_marker") or os.environ.get(FAULT_ENV)
    hold = os.environ.get(HOLD_ENV)
    placement = trial_placement(config.train.device)

    def report(event) -> None:
        if event.stage != tuned_stage:
            return
        metrics = {"epoch": event.epoch, "loss": event.loss, **event.valid, **_metrics("best_", event.best_valid),
                   **placement}
        if placement["device"].startswith("cuda"):  # per epoch: a trial ASHA stops never sends a final result
            metrics["gpu_max_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        with tempfile.TemporaryDirectory() as folder:
            torch.save(event.state(), Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        while hold and event.epoch == 1 and not Path(hold).exists():
            time.sleep(0.2)  # a fault test kills this node (or the tracking server) now
        if crash_marker and event.epoch == 1 and not Path(crash_marker).exists():
            Path(crash_marker).write_text("crashed once")
            os._exit(1)  # simulate a worker dying mid-trial (fault-tolerance test)

    try:
        result = run(config, data_dir=study["data_dir"], callback=report, progress=False, resume=resume)
    except TrainingDiverged as exc:
        raise RuntimeError(f"trial diverged: {exc}") from None
    stage = result.ddrm or result.backend
    final = {"epoch": stage.epochs_run, "done": True, **result.valid, **_metrics("best_", result.valid),
             **_metrics("test_", result.test), "best_epoch": stage.best_epoch,
             **_metrics("diag_", result.diagnostics), **placement}
    if placement["device"].startswith("cuda"):
        final["gpu_max_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if stage.from_cache:  # pretrained by the driver, so no per-epoch report came from here: send its curve along
        final["history"] = json.dumps(stage.history)  # a string: Tune's TensorBoard logger skips it quietly
    tune.report(final)
