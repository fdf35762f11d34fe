"""The training loop and the stages it runs: backend pretraining, then DDRM (or a standalone model).

``run(config)`` trains (or loads from cache) the backend, trains DDRM on its final embeddings, selects
epochs on validation Recall@20 and returns validation + test metrics (``evaluate_test=False``: validation only,
the test split is never scored — a search's trials) and the run's cost (:class:`~ddrm.loop.RunCost`). ``callback(event)`` is called
after each evaluation, so Tune / MLflow can observe without this module importing them. The loop's
vocabulary (model contract, batch kinds, early stopping, events) is :mod:`ddrm.loop`; the stages' other
parts are :mod:`ddrm.stages`. Pure: no Ray, no MLflow.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import cache
from .backends.base import Backend
from .config import Config
from .data.prepared import InteractionData
from .data.sampling import BPRSampler, UserBatchSampler
from .diffusion.ddrm import DDRM
from .evaluation import evaluate
from .loop import (
    BatchKind, Callback, EarlyStopping, EvalEvent, RunCost, StageResult, StopRules, TrainableModel, TrainingDiverged,
    snapshot,
)
from .precision import describe as describe_precision, stage_precision, warn_if_emulated
from .registry import get_model
from .stages import (
    backend_cache_key, backend_optimizer, build_backend, evaluate_checkpoint, fit_closed_form, load_dataset,
    select_device, stage_diagnostics,
)


@dataclass
class RunResult:
    """``valid``/``test`` of the final model (DDRM if enabled, else the model itself); ``test`` is ``{}`` when
    the run was told not to score the test split (``evaluate_test=False``)."""

    valid: dict[str, float]
    test: dict[str, float]
    backend: StageResult  # the first stage: the backend, or a standalone model
    ddrm: StageResult | None
    config: dict[str, Any]
    info: dict[str, Any]
    diagnostics: dict[str, float] = field(default_factory=dict)  # known-noise data only (ddrm.diagnostics)
    first_stage: str = "backend"  # "model" for a standalone model
    cost: RunCost = field(default_factory=RunCost)

    def to_json(self) -> dict[str, Any]:
        out = {"valid": self.valid, "test": self.test, "config": self.config, self.first_stage: asdict(self.backend),
               "info": self.info, "cost": asdict(self.cost)}
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.ddrm is not None:
            out["ddrm"] = asdict(self.ddrm)
        return out


def fit(model: TrainableModel, data: InteractionData, optimizer: torch.optim.Optimizer, *, epochs: int,
        config: Config, stage: str, seed: int, device: torch.device, callback: Callback | None = None,
        progress: bool = True, patience: int | None = None, sampling: str = "user",
        resume: dict[str, Any] | None = None, batch_size: int | None = None,
        evaluate_test: bool = True) -> StageResult:
    """Train ``model`` with early stopping on validation :data:`SELECTION_METRIC` (Recall@20).

    Batches are those of ``model.batch_kind``: BPR triples ``(u, i, j)`` with positives by ``sampling``
    (interaction | user), or 1-tuples of user ids; ``batch_size`` defaults to ``train.batch_size``. Each batch
    is one ``model.training_step`` (by default one optimiser update on ``model.loss(*batch)``).

    Evaluates validation every ``train.eval_every`` epochs (and once at epoch 0 when ``epochs`` is 0), keeps the
    best state, restores it and evaluates test there (unless ``evaluate_test`` is false: then ``test`` is ``{}``
    and the test split is never scored). Stops on the first of :class:`StopRules` (epochs, patience,
    ``train.time_budget_minutes``; ``StageResult.stop_reason`` says which).
    ``resume`` is a dict from ``EvalEvent.state()``: training continues after that evaluation with the same
    model, optimiser, early-stopping and random-number state, so a resumed run ends where an uninterrupted one
    would. ``progress``: a tqdm bar per epoch, drawn only when stderr is a terminal (in a log file or a Ray
    worker a bar is carriage-return noise; the callback prints a line per evaluation instead).
    """
    tc = config.train
    rules = StopRules(epochs, patience or tc.patience, tc.time_budget_minutes)
    sampler = model.batch_kind.sampler(data.csr("train"), seed, sampling)
    generator = torch.Generator().manual_seed(seed)
    stopping = EarlyStopping()
    start, cpu_start = time.perf_counter(), time.process_time()
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        sampler.rng.bit_generator.state = resume["sampler_rng"]
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        stopping = EarlyStopping(**resume["track"])
        start -= stopping.history[-1]["seconds"] if stopping.history else 0.0
    state = partial(_resume_state, stage, model, optimizer, sampler, generator, stopping)

    def evaluate_now(epoch: int, loss: float) -> None:
        model.eval()
        valid = evaluate(model.scorer(), data, "valid", batch_size=tc.eval_batch_size, device=device)
        elapsed = time.perf_counter() - start
        stopping.observe(epoch, loss, valid, elapsed, rules, partial(snapshot, model))
        if callback is not None:
            callback(EvalEvent(stage, epoch, loss, valid, stopping.best_valid, elapsed, model, state))

    if epochs == 0 and resume is None:
        evaluate_now(0, float("nan"))
    epoch = stopping.epoch
    while not stopping.stopped and epoch < epochs:
        epoch += 1
        loss = _train_epoch(model, sampler, optimizer, generator, stage=stage, epoch=epoch,
                            batch_size=batch_size or tc.batch_size, device=device, progress=progress)
        if epoch % tc.eval_every == 0 or epoch == epochs:
            evaluate_now(epoch, loss)
    if stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
    model.eval()
    test = evaluate(model.scorer(), data, "test", batch_size=tc.eval_batch_size, device=device) if evaluate_test else {}
    return StageResult(stopping.best_epoch, epoch, stopping.best_valid, test, stopping.history,
                       time.perf_counter() - start, stop_reason=stopping.stop_reason,
                       cpu_seconds=time.process_time() - cpu_start)


def _train_epoch(model: TrainableModel, sampler: BPRSampler | UserBatchSampler, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, *, stage: str, epoch: int, batch_size: int, device: torch.device,
                 progress: bool) -> float:
    """One epoch of ``model.training_step`` over the sampler's batches; the mean batch loss."""
    model.train()
    model.start_epoch(epoch, generator)
    total, batches = 0.0, 0
    bar = tqdm(sampler.batches(batch_size, device), total=math.ceil(sampler.n_train / batch_size),
               desc=f"{stage} epoch {epoch}", leave=False, disable=not (progress and sys.stderr.isatty()),
               unit="batch")  # in a log file: no \r bars
    for batch in bar:
        loss = model.training_step(batch, optimizer)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{stage} loss became {loss.item()} at epoch {epoch}, batch {batches + 1}")
        total += loss.item()
        batches += 1
    return total / max(1, batches)


def _resume_state(stage: str, model: TrainableModel, optimizer: torch.optim.Optimizer,
                  sampler: BPRSampler | UserBatchSampler, generator: torch.Generator,
                  stopping: EarlyStopping) -> dict[str, Any]:
    """Everything needed to continue after the current evaluation (CPU tensors): ``EvalEvent.state()``."""
    return {"stage": stage, "model": snapshot(model), "optimizer": copy.deepcopy(optimizer.state_dict()),
            "sampler_rng": sampler.rng.bit_generator.state, "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "track": stopping.as_dict()}


def fit_backend(config: Config, data: InteractionData, device: torch.device, callback: Callback | None = None,
                progress: bool = True, use_cache: bool = True, resume: dict[str, Any] | None = None,
                cache_dir: str | os.PathLike | None = None, evaluate_test: bool = True) -> tuple[Backend, StageResult]:
    """Train the backend, or load it from the cache when an identical one was trained before.

    ``cache_dir``: the backend cache's folder (None: ``$DDRM_CACHE_DIR``, else ``~/.cache/ddrm``; see :mod:`.cache`).
    ``evaluate_test``: score the test split (else ``test`` is ``{}``). A cache entry holds the test metrics of
    the run that trained it, if that run scored test; a hit that lacks them scores the loaded backend (the best
    state, as cached), and a hit with ``evaluate_test`` false returns none.
    """
    torch.manual_seed(config.seed)
    backend = build_backend(config, data, device)
    if config.model.checkpoint:
        return backend, evaluate_checkpoint(backend, config, data, device, evaluate_test)
    key = backend_cache_key(config, data)
    if use_cache and resume is None:
        hit = cache.load_entry(key, cache_dir)
        if hit is not None:
            state, info = hit
            backend.load_state_dict(state)
            # entries written before stop_reason existed lack it
            result = StageResult(**{"stop_reason": "unknown", **info["result"], "from_cache": True})
            if not evaluate_test:
                result = replace(result, test={})
            elif not result.test:  # trained by a run that did not score test (a search's trial)
                backend.eval()
                result = replace(result, test=evaluate(backend.scorer(), data, "test",
                                                       batch_size=config.train.eval_batch_size, device=device))
            return backend, result
    optimizer = backend_optimizer(backend, config)
    epochs = config.train.stage_epochs(config.model.epochs)
    result = fit(backend, data, optimizer, epochs=epochs, config=config, stage="backend", seed=config.seed,
                 device=device, callback=callback, progress=progress, patience=config.model.patience,
                 sampling=config.model.sampling, resume=resume, evaluate_test=evaluate_test)
    if use_cache:
        cache.save_entry(key, backend.state_dict(), {"result": asdict(result), "config": config.to_dict(),
                                                     "dataset": str(data.path)}, cache_dir)
    return backend, result


def fit_ddrm(config: Config, data: InteractionData, backend: Backend, device: torch.device,
             callback: Callback | None = None, progress: bool = True,
             resume: dict[str, Any] | None = None, evaluate_test: bool = True) -> tuple[DDRM, StageResult]:
    """Train DDRM's denoisers (and the backend too when ``freeze_backend`` is false)."""
    dc = config.ddrm
    torch.manual_seed(config.seed + 1)
    if not dc.freeze_backend:  # fine-tune a copy: the caller's (cached) backend stays as trained
        trained = backend
        backend = build_backend(config, data, device)
        backend.load_state_dict(trained.state_dict())
    model = DDRM(dc, backend, data.csr("train"), seed=config.seed,
                 precision=stage_precision(config.train.precision, "ddrm")).to(device)
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith("backend.")],
               "lr": dc.lr, "weight_decay": dc.weight_decay}]
    if model.backend is not None:
        groups.append({"params": list(model.backend.parameters()), "lr": config.model.lr, "weight_decay": 0.0})
    epochs = config.train.stage_epochs(dc.epochs)
    if dc.reverse_steps == 0 and dc.inference_start == "mean" and dc.freeze_backend:
        epochs = 0  # mean of liked items: nothing to train
    result = fit(model, data, torch.optim.Adam(groups), epochs=epochs, config=config, stage="ddrm",
                 seed=config.seed + 1, device=device, callback=callback, progress=progress, sampling=dc.sampling,
                 patience=dc.patience, resume=resume, evaluate_test=evaluate_test)
    return model, result


def fit_model(config: Config, data: InteractionData, device: torch.device, callback: Callback | None = None,
              progress: bool = True, resume: dict[str, Any] | None = None,
              evaluate_test: bool = True) -> tuple[torch.nn.Module, StageResult]:
    """Train the standalone model ``model.name`` names (stage ``"model"``; no DDRM). Under ``train.precision: bf16``
    a model that declares ``supports_bf16`` (Mult-VAE, DiffRec) runs its MLPs under bf16 autocast
    (``model.precision``); any other stays fp32 (see :mod:`ddrm.precision`)."""
    mc = config.model
    torch.manual_seed(config.seed)
    model = get_model(mc.name)(mc, data.n_users, data.n_items, data.csr("train")).to(device)
    precision = stage_precision(config.train.precision, "model", mc.name)
    if precision != "fp32":  # a model with supports_bf16 (Mult-VAE, DiffRec): its MLPs under bf16 autocast
        warn_if_emulated(precision, device)  # one line, once per process
        model.precision = precision
    if model.batch_kind is BatchKind.NONE:  # closed form (EASE, ItemKNN, MostPop): fit once, evaluate at epoch 0
        return model, fit_closed_form(model, config, data, device, callback, evaluate_test)
    optimizer = torch.optim.Adam(model.parameters(), lr=mc.lr, weight_decay=mc.weight_decay)
    epochs = config.train.stage_epochs(mc.epochs)
    result = fit(model, data, optimizer, epochs=epochs, config=config, stage="model", seed=config.seed,
                 device=device, callback=callback, progress=progress, patience=mc.patience,
                 sampling=model.bpr_sampling, resume=resume, batch_size=mc.batch_size, evaluate_test=evaluate_test)
    return model, result


def run(config: Config, data: InteractionData | None = None, data_dir: str | os.PathLike | None = None,
        callback: Callback | None = None, progress: bool = True, use_cache: bool = True,
        resume: dict[str, Any] | None = None, cache_dir: str | os.PathLike | None = None,
        evaluate_test: bool = True) -> RunResult:
    """Backend (cached) then DDRM; metrics of the final model on validation and test, and the run's cost.

    ``resume``: a snapshot from ``EvalEvent.state()`` of an interrupted run of the same config; the run
    continues from it (its ``stage`` says whether the backend or DDRM was training).
    ``cache_dir``: the backend cache's folder (None: ``$DDRM_CACHE_DIR``, else ``~/.cache/ddrm``).
    ``evaluate_test``: false for a search's trial: no stage scores the test split (every ``test`` is ``{}``);
    nothing else changes (evaluation draws no random numbers, so training and validation are the same).
    ``cost`` (:class:`~ddrm.loop.RunCost`): wall and process CPU seconds of this call, and the epochs its
    stages trained (a backend from the cache: 0).
    """
    wall_start, cpu_start = time.perf_counter(), time.process_time()

    def cost(*stages: StageResult) -> RunCost:
        return RunCost(time.perf_counter() - wall_start, time.process_time() - cpu_start,
                       sum(s.epochs_run for s in stages if not s.from_cache),
                       config.final_stage != "model" and stages[0].from_cache)

    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    np.random.seed(config.seed)
    device = select_device(config.train.device)
    if data is None:
        data = load_dataset(config, data_dir)
    stage = resume["stage"] if resume else None
    if config.final_stage == "model":
        model, result = fit_model(config, data, device, callback, progress, resume, evaluate_test)
        info = {"device": str(device), "threads": torch.get_num_threads(), "dataset": str(data.path),
                "model": config.model.name, **describe_precision(config.train.precision, device, config.model.name)}
        diagnostics = stage_diagnostics("model", model, config, data, device)
        return RunResult(result.valid, result.test, result, None, config.to_dict(), info, diagnostics,
                         first_stage="model", cost=cost(result))
    backend, backend_result = fit_backend(config, data, device, callback, progress, use_cache,
                                          resume if stage == "backend" else None, cache_dir=cache_dir,
                                          evaluate_test=evaluate_test)
    info: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "dataset": str(data.path),
                            "backend_from_cache": backend_result.from_cache,
                            **describe_precision(config.train.precision, device, config.model.name)}
    diagnostics = stage_diagnostics("backend", backend, config, data, device)
    if not config.ddrm.enabled:
        return RunResult(backend_result.valid, backend_result.test, backend_result, None, config.to_dict(), info,
                         diagnostics, cost=cost(backend_result))
    warn_if_emulated(stage_precision(config.train.precision, "ddrm"), device)  # one line, once per process
    model, ddrm_result = fit_ddrm(config, data, backend, device, callback, progress,
                                  resume if stage == "ddrm" else None, evaluate_test)
    info["schedule"] = model.schedule.describe()
    info["reverse_steps"] = config.ddrm.reverse_steps
    diagnostics.update(stage_diagnostics("ddrm", model, config, data, device))
    return RunResult(ddrm_result.valid, ddrm_result.test, backend_result, ddrm_result, config.to_dict(), info,
                     diagnostics, cost=cost(backend_result, ddrm_result))
