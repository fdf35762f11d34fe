"""The Ray Tune function trainable around the pure ``train.run`` loop.

A trial's ``params`` are its ``param_space`` values (the sampled dotted keys, ``"seed"``, an ablation's
``"variant"``); everything the trials share comes as the :class:`~.plan.StudyPlan` (``tune.with_parameters``),
which also gives the trial's config. Every evaluation is reported with ``tune.report`` together with a
checkpoint; a retried trial resumes from ``tune.get_checkpoint()``. The backend is never trained here when the
driver pre-trained it (it is loaded from the plan's backend cache). A trial the plan lists in ``reuse`` (see
:mod:`.reuse`) replays an earlier identical run's metrics instead of training. A search's trials (the plan's
``evaluate_test`` false) never score the test split: their final report has no ``test_`` metric.

Every report carries the trial's cost so far (``cost_*``, :class:`TrialCost`): wall and process CPU seconds
measured over this trial's own ``run`` call (a Ray worker process may run several trials one after another) and
the epochs its stages trained; a trial resumed from a checkpoint adds what it had spent up to that checkpoint.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..metrics import BEST, COST_CPU, COST_EPOCHS, COST_FROM_CACHE, COST_WALL, DIAG, TEST, add_prefix
from .plan import StudyPlan

STATE_FILE = "state.pt"
COST_STATE = "cost"  # the checkpoint's entry beside the resume state: what the trial had spent up to it


class TrialCost:
    """One trial's cost across its attempts: the clocks start when this attempt's ``run`` call does (wall time,
    ``time.process_time`` of the worker process as a delta), plus ``earlier`` (:meth:`state` of the checkpoint
    this attempt resumes from). Epochs are those of the evaluations seen (a stage's counter goes on after a
    resume; the stages before the checkpoint's, e.g. a backend now loaded from the cache, come from ``earlier``)."""

    def __init__(self, earlier: dict[str, float] | None = None) -> None:
        earlier = earlier or {}
        self.wall = float(earlier.get("wall_seconds", 0.0))
        self.cpu = float(earlier.get("cpu_seconds", 0.0))
        self.other_epochs = int(earlier.get("other_epochs", 0))
        self.epochs: dict[str, int] = {}  # stage -> its last evaluated epoch in this attempt
        self.start_wall, self.start_cpu = time.perf_counter(), time.process_time()

    def observe(self, event) -> None:
        self.epochs[event.stage] = int(event.epoch)

    def so_far(self) -> dict[str, float]:
        """``cost_wall_seconds``, ``cost_cpu_seconds``, ``cost_epochs`` up to now."""
        return {COST_WALL: self.wall + time.perf_counter() - self.start_wall,
                COST_CPU: self.cpu + time.process_time() - self.start_cpu,
                COST_EPOCHS: float(self.other_epochs + sum(self.epochs.values()))}

    def state(self, stage: str) -> dict[str, float]:
        """What a checkpoint taken during ``stage`` stores (its own epochs go on in the resumed stage)."""
        now = self.so_far()
        return {"wall_seconds": now[COST_WALL], "cpu_seconds": now[COST_CPU],
                "other_epochs": self.other_epochs + sum(e for s, e in self.epochs.items() if s != stage)}

    def final(self, cost) -> dict[str, float]:
        """The final report's ``cost_*``: this attempt's :class:`~ddrm.loop.RunCost` plus the earlier attempts'."""
        return {COST_WALL: self.wall + cost.wall_seconds, COST_CPU: self.cpu + cost.cpu_seconds,
                COST_EPOCHS: float(self.other_epochs + cost.epochs), COST_FROM_CACHE: float(cost.backend_from_cache)}


def trial_threads(planned: int) -> int:
    """Torch threads for this trial: the CPUs Ray assigned to it, so a study resumed on more (or fewer) CPUs
    uses them; the study's ``planned`` count outside a Ray worker."""
    import ray

    assigned = None
    if ray.is_initialized():
        try:
            assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except AssertionError:  # the driver process: Ray assigns it nothing
            pass
    return max(1, int(assigned or planned or 1))


def trial_placement(device_name: str) -> dict[str, str]:
    """Where this trial runs, reported with every result (the MLflow callback tags the run with it): Ray's
    node id (distinct for nodes that share an IP), the node's IP, the torch device (``cpu``, ``cuda:0``), the CPU
    and GPU shares Ray assigned the trial (``trial_cpus``, ``trial_gpus``) and the host's CPU model / torch
    kernel ISA / torch version (:func:`ddrm.host.host_tags`)."""
    import ray

    from ..host import host_tags
    from ..train import select_device

    device = select_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    placement = {"device": str(device), **host_tags()}
    if ray.is_initialized():
        context = ray.get_runtime_context()
        placement["node_id"] = context.get_node_id()
        placement["node_ip"] = ray.util.get_node_ip_address()
        try:
            assigned = context.get_assigned_resources()
        except AssertionError:  # the driver process: Ray assigns it nothing
            assigned = None
        if assigned is not None:
            placement["trial_cpus"] = f"{assigned.get('CPU', 0.0):g}"
            placement["trial_gpus"] = f"{assigned.get('GPU', 0.0):g}"
    return placement


def ddrm_trainable(params: dict[str, Any], plan: StudyPlan) -> None:
    """Train one trial; report validation metrics (and the cost so far) per evaluation, and the final result at the
    end: the selected epoch, its test metrics (an ablation's trials; a search's score no test), diagnostics and
    the cost."""
    from ray import tune

    from ..train import TrainingDiverged, run
    from .reuse import replay

    # Ray Train logs "Checkpoint successfully created at ..." (INFO) per report; the driver would echo every one
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    reused = plan.replay_record(params)
    if reused:
        replay(reused, tune.report)
        return
    torch.set_num_threads(trial_threads(plan.threads))
    config = plan.config(params)
    tuned_stage = config.final_stage

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)

    placement = trial_placement(config.train.device)
    if placement["device"].startswith("cuda"):  # the worker may have run an earlier trial (reused actors)
        torch.cuda.reset_peak_memory_stats()
    cost = TrialCost(resume.pop(COST_STATE, None) if resume else None)

    def report(event) -> None:
        cost.observe(event)
        if event.stage != tuned_stage:
            return
        metrics = {"epoch": event.epoch, "loss": event.loss, **event.valid, **add_prefix(BEST, event.best_valid),
                   **cost.so_far(), **placement}  # the cost with every epoch: ASHA may stop the trial after it
        if placement["device"].startswith("cuda"):  # per epoch: a trial ASHA stops never sends a final result
            metrics["gpu_max_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        with tempfile.TemporaryDirectory() as folder:
            torch.save({**event.state(), COST_STATE: cost.state(event.stage)}, Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        result = run(config, data_dir=plan.data_dir, callback=report, progress=False, resume=resume,
                     cache_dir=plan.cache_dir, evaluate_test=plan.evaluate_test)
    except TrainingDiverged as exc:
        raise RuntimeError(f"trial diverged: {exc}") from None
    stage = result.ddrm or result.backend
    final = {"epoch": stage.epochs_run, "done": True, **result.valid, **add_prefix(BEST, result.valid),
             **add_prefix(TEST, result.test), "best_epoch": stage.best_epoch,  # no test_ in a search's trial
             **add_prefix(DIAG, result.diagnostics), **cost.final(result.cost), **placement}
    if placement["device"].startswith("cuda"):
        final["gpu_max_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if stage.from_cache:  # pretrained by the driver, so no per-epoch report came from here: send its curve along
        final["history"] = json.dumps(stage.history)  # a string: Tune's TensorBoard logger skips it quietly
    tune.report(final)
