"""The training loop: backend pretraining, then DDRM. Pure: no Ray, no MLflow.

``run(config)`` trains (or loads from cache) the backend, trains DDRM on its final embeddings, selects
epochs on validation Recall@20 and returns validation + test metrics. ``callback(event)`` is called
after each evaluation, so Tune / MLflow can observe without this module importing them.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import cache
from .codeversion import stage_fingerprint
from .backends.base import Backend
from .config import Config
from .data.prepared import InteractionData, load_prepared
from .data.sampling import BPRSampler, UserBatchSampler
from .diffusion.ddrm import DDRM
from .evaluation import evaluate
from .precision import describe as describe_precision, stage_precision, warn_if_emulated
from .registry import get_backend, get_model

SELECTION_METRIC = "recall_at_20"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class EvalEvent:
    """What a callback sees after each evaluation."""

    stage: str  # "backend" | "ddrm"
    epoch: int
    loss: float
    valid: dict[str, float]
    best_valid: dict[str, float]
    seconds: float
    model: torch.nn.Module = field(repr=False)
    state: Callable[[], dict[str, Any]] = field(repr=False, default=dict)  # resumable snapshot


Callback = Callable[[EvalEvent], None]


@dataclass
class StageResult:
    """Outcome of one fitted stage (backend or DDRM)."""

    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]]
    seconds: float
    from_cache: bool = False
    stop_reason: str = "epochs"  # epochs | patience | time_budget (train.time_budget_minutes) | closed_form


@dataclass
class RunResult:
    """``valid``/``test`` of the final model (DDRM if enabled, else the backend)."""

    valid: dict[str, float]
    test: dict[str, float]
    backend: StageResult  # the standalone model's stage when ``model.name`` is set
    ddrm: StageResult | None
    config: dict[str, Any]
    info: dict[str, Any]
    diagnostics: dict[str, float] = field(default_factory=dict)  # known-noise data only (ddrm.diagnostics)

    def to_json(self) -> dict[str, Any]:
        first = "model" if (self.config.get("model") or {}).get("name") else "backend"  # standalone: the model
        out = {"valid": self.valid, "test": self.test, "config": self.config, first: asdict(self.backend),
               "info": self.info}
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.ddrm is not None:
            out["ddrm"] = asdict(self.ddrm)
        return out


def load_dataset(config: Config, data_dir: str | os.PathLike | None = None) -> InteractionData:
    """The prepared split named by ``data.name``, with random noise injected when ``data.noise_ratio`` > 0."""
    from .data.noise import inject_random_noise

    data = load_prepared(config.data.name, data_dir or config.data.dir)
    return inject_random_noise(data, config.data.noise_ratio, config.data.noise_seed)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError("config key 'train.device': 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(
    model: torch.nn.Module,
    data: InteractionData,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    config: Config,
    stage: str,
    seed: int,
    device: torch.device,
    callback: Callback | None = None,
    progress: bool = True,
    patience: int | None = None,
    sampling: str = "user",
    resume: dict[str, Any] | None = None,
    batch_size: int | None = None,
) -> StageResult:
    """Train ``model`` (anything with ``loss(*batch)`` and ``scorer()``) with early stopping.

    A model with ``training_step(batch, optimizer) -> detached loss`` makes its own updates instead.

    Batches are BPR triples ``(u, i, j)`` (``sampling`` interaction | user) or, with ``sampling="users"``,
    1-tuples of user ids for models trained on whole interaction vectors; ``batch_size`` defaults to
    ``train.batch_size``.

    Evaluates validation every ``train.eval_every`` epochs (and once at epoch 0 when ``epochs`` is 0),
    keeps the state with the best validation Recall@20, restores it and evaluates test there. With
    ``train.time_budget_minutes`` set, training also stops at the first evaluation past that wall time
    (``StageResult.stop_reason`` says which rule stopped it).
    ``resume`` is a dict from ``EvalEvent.state()``: training continues after that evaluation with the
    same model, optimiser, early-stopping and random-number state, so a resumed run ends where an
    uninterrupted one would. ``progress``: a tqdm bar per epoch, drawn only when stderr is a terminal (in a log
    file or a Ray worker a bar is carriage-return noise; the callback prints a line per evaluation instead).
    """
    tc = config.train
    patience = patience or tc.patience
    batch_size = batch_size or tc.batch_size
    if sampling == "users":
        sampler = UserBatchSampler(data.csr("train"), seed=seed)
    else:
        sampler = BPRSampler(data.csr("train"), seed=seed, mode=sampling)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    track: dict[str, Any] = {"best_score": -math.inf, "best_epoch": 0, "best_state": None, "best_valid": {},
                             "stale": 0, "history": [], "epoch": 0, "stopped": False, "stop_reason": "epochs"}
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        sampler.rng.bit_generator.state = resume["sampler_rng"]
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        track.update(resume["track"])
        start -= track["history"][-1]["seconds"] if track["history"] else 0.0

    def state() -> dict[str, Any]:
        """Everything needed to continue after the current evaluation (CPU tensors)."""
        return {"stage": stage, "model": _snapshot(model), "optimizer": copy.deepcopy(optimizer.state_dict()),
                "sampler_rng": sampler.rng.bit_generator.state, "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "track": dict(track)}

    def evaluate_now(epoch: int, loss: float) -> None:
        model.eval()
        valid = evaluate(model.scorer(), data, "valid", batch_size=tc.eval_batch_size, device=device)
        if valid[SELECTION_METRIC] > track["best_score"]:
            track.update(best_score=valid[SELECTION_METRIC], best_epoch=epoch, best_state=_snapshot(model),
                         best_valid=valid, stale=0)
        else:
            track["stale"] += 1
        elapsed = time.perf_counter() - start
        track["history"] = track["history"] + [{"epoch": epoch, "loss": loss, "seconds": elapsed, **valid}]
        track["epoch"] = epoch
        over_budget = tc.time_budget_minutes is not None and elapsed >= 60.0 * tc.time_budget_minutes
        rules = (("epochs", epoch >= epochs), ("patience", track["stale"] >= patience), ("time_budget", over_budget))
        reason = next((name for name, hit in rules if hit), None)
        track["stopped"] = reason is not None
        track["stop_reason"] = reason or track["stop_reason"]
        if callback is not None:
            callback(EvalEvent(stage, epoch, loss, valid, track["best_valid"], elapsed, model, state))

    if epochs == 0 and resume is None:
        evaluate_now(0, float("nan"))
    epoch = track["epoch"]
    custom_step = getattr(model, "training_step", None)
    while not track["stopped"] and epoch < epochs:
        epoch += 1
        model.train()
        if hasattr(model, "start_epoch"):
            model.start_epoch(epoch, generator)
        total, batches = 0.0, 0
        n_batches = math.ceil(sampler.n_train / batch_size)
        bar = tqdm(sampler.batches(batch_size, device), total=n_batches, desc=f"{stage} epoch {epoch}",
                   leave=False, disable=not (progress and sys.stderr.isatty()), unit="batch")  # a log: no \r bars
        for batch in bar:
            if custom_step is not None:  # the model makes its own update(s), e.g. AdaGCL's three per batch
                loss = custom_step(batch, optimizer)
            else:
                loss = model.loss(*batch)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{stage} loss became {loss.item()} at epoch {epoch}, batch {batches + 1}")
            if custom_step is None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total += loss.item()
            batches += 1
        if epoch % tc.eval_every == 0 or epoch == epochs:
            evaluate_now(epoch, total / max(1, batches))
    if track["best_state"] is not None:
        model.load_state_dict(track["best_state"])
    model.eval()
    test = evaluate(model.scorer(), data, "test", batch_size=tc.eval_batch_size, device=device)
    return StageResult(track["best_epoch"], epoch, track["best_valid"], test, track["history"],
                       time.perf_counter() - start, stop_reason=track["stop_reason"])


DENOISE_KEYS = {"none": (), "tce": ("tce_max_rate", "tce_num_gradual"), "rce": ("rce_beta",),
                "deca": ("deca_c1", "deca_c2", "deca_alpha")}


def backend_cache_key(config: Config, data: InteractionData) -> str:
    """Everything that determines a trained backend (settings of unused denoise plug-ins left out)."""
    tc = config.train
    backend = asdict(config.backend)
    for name, keys in DENOISE_KEYS.items():
        if name != config.backend.denoise:
            for key in keys:
                backend.pop(key)
    if config.backend.denoise == "none":
        backend.pop("denoise")
    return cache.cache_key({
        "data": data.fingerprint(),
        "backend": backend,
        "loop": {"epochs": tc.stage_epochs(config.backend.epochs),
                 "patience": config.backend.patience or tc.patience, "batch_size": tc.batch_size,
                 "eval_every": tc.eval_every,
                 **({"time_budget_minutes": tc.time_budget_minutes} if tc.time_budget_minutes is not None else {})},
        "seed": config.seed,
        # only when the backend itself trains below fp32 (fp32 keys stay as they were; see ddrm.precision)
        **({"precision": stage_precision(tc.precision, "backend")}
           if stage_precision(tc.precision, "backend") != "fp32" else {}),
        "code": stage_fingerprint("backend"),  # a change to a backend, the sampler or the loop retrains
    })


def build_backend(config: Config, data: InteractionData, device: torch.device) -> Backend:
    cls = get_backend(config.backend.name)
    return cls(config.backend, data.n_users, data.n_items, data.csr("train")).to(device)


def fit_backend(config: Config, data: InteractionData, device: torch.device, callback: Callback | None = None,
                progress: bool = True, use_cache: bool = True,
                resume: dict[str, Any] | None = None) -> tuple[Backend, StageResult]:
    """Train the backend, or load it from the cache when an identical one was trained before."""
    torch.manual_seed(config.seed)
    backend = build_backend(config, data, device)
    if config.backend.checkpoint:
        return backend, evaluate_checkpoint(backend, config, data, device)
    key = backend_cache_key(config, data)
    if use_cache and resume is None:
        hit = cache.load_entry(key)
        if hit is not None:
            state, info = hit
            backend.load_state_dict(state)
            # entries written before stop_reason existed lack it
            result = StageResult(**{"stop_reason": "unknown", **info["result"], "from_cache": True})
            return backend, result
    optimizer = torch.optim.Adam(backend.parameters(), lr=config.backend.lr)
    epochs = config.train.stage_epochs(config.backend.epochs)
    result = fit(backend, data, optimizer, epochs=epochs, config=config, stage="backend", seed=config.seed,
                 device=device, callback=callback, progress=progress, patience=config.backend.patience,
                 sampling=config.backend.sampling, resume=resume)
    if use_cache:
        cache.save_entry(key, backend.state_dict(), {"result": asdict(result), "config": config.to_dict(),
                                                     "dataset": str(data.path)})
    return backend, result


def evaluate_checkpoint(backend: Backend, config: Config, data: InteractionData, device: torch.device) -> StageResult:
    """Load ``backend.checkpoint`` (no training) and evaluate it on validation and test."""
    from .errors import ConfigError

    path = config.backend.checkpoint
    if not os.path.isfile(path):
        raise ConfigError(f"config key 'backend.checkpoint': file {path!r} does not exist")
    start = time.perf_counter()
    backend.load_checkpoint(path)
    backend.to(device).eval()
    kwargs = {"batch_size": config.train.eval_batch_size, "device": device}
    valid = evaluate(backend.scorer(), data, "valid", **kwargs)
    test = evaluate(backend.scorer(), data, "test", **kwargs)
    return StageResult(0, 0, valid, test, [], time.perf_counter() - start, from_cache=False)


def fit_ddrm(config: Config, data: InteractionData, backend: Backend, device: torch.device,
             callback: Callback | None = None, progress: bool = True,
             resume: dict[str, Any] | None = None) -> tuple[DDRM, StageResult]:
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
        groups.append({"params": list(model.backend.parameters()), "lr": config.backend.lr, "weight_decay": 0.0})
    epochs = config.train.stage_epochs(dc.epochs)
    if dc.reverse_steps == 0 and dc.inference_start == "mean" and dc.freeze_backend:
        epochs = 0  # mean of liked items: nothing to train
    result = fit(model, data, torch.optim.Adam(groups), epochs=epochs, config=config, stage="ddrm",
                 seed=config.seed + 1, device=device, callback=callback, progress=progress, sampling=dc.sampling,
                 patience=dc.patience, resume=resume)
    return model, result


def fit_model(config: Config, data: InteractionData, device: torch.device, callback: Callback | None = None,
              progress: bool = True, resume: dict[str, Any] | None = None) -> tuple[torch.nn.Module, StageResult]:
    """Train the standalone model named by ``model.name`` (stage ``"model"``; no backend, no DDRM)."""
    mc = config.model
    torch.manual_seed(config.seed)
    model = get_model(mc.name)(mc, data.n_users, data.n_items, data.csr("train")).to(device)
    if not getattr(model, "trainable", True):  # closed form (EASE, ItemKNN, MostPop): fit once, evaluate at epoch 0
        return model, _fit_closed_form(model, config, data, device, callback)
    optimizer = torch.optim.Adam(model.parameters(), lr=mc.lr, weight_decay=mc.weight_decay)
    epochs = config.train.stage_epochs(mc.epochs)
    result = fit(model, data, optimizer, epochs=epochs, config=config, stage="model", seed=config.seed,
                 device=device, callback=callback, progress=progress, patience=mc.patience,
                 sampling=getattr(model, "sampling", "user"), resume=resume, batch_size=mc.batch_size)
    return model, result


def _fit_closed_form(model: torch.nn.Module, config: Config, data: InteractionData, device: torch.device,
                     callback: Callback | None) -> StageResult:
    """``model.fit_closed_form()`` once, then validation (the one epoch-0 event, selected) and test; no optimiser.
    A resumed run simply refits (deterministic), so its snapshot holds only the stage."""
    start = time.perf_counter()
    model.fit_closed_form()
    model.eval()
    kwargs = {"batch_size": config.train.eval_batch_size, "device": device}
    valid = evaluate(model.scorer(), data, "valid", **kwargs)
    elapsed = time.perf_counter() - start
    if callback is not None:
        callback(EvalEvent("model", 0, float("nan"), valid, valid, elapsed, model, lambda: {"stage": "model"}))
    test = evaluate(model.scorer(), data, "test", **kwargs)
    history = [{"epoch": 0, "loss": float("nan"), "seconds": elapsed, **valid}]
    return StageResult(0, 0, valid, test, history, time.perf_counter() - start, stop_reason="closed_form")


def run(config: Config, data: InteractionData | None = None, data_dir: str | os.PathLike | None = None,
        callback: Callback | None = None, progress: bool = True, use_cache: bool = True,
        resume: dict[str, Any] | None = None) -> RunResult:
    """Backend (cached) then DDRM; metrics of the final model on validation and test.

    ``resume``: a snapshot from ``EvalEvent.state()`` of an interrupted run of the same config; the run
    continues from it (its ``stage`` says whether the backend or DDRM was training).
    """
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    np.random.seed(config.seed)
    device = select_device(config.train.device)
    if data is None:
        data = load_dataset(config, data_dir)
    stage = resume["stage"] if resume else None
    if config.model.name:
        model, result = fit_model(config, data, device, callback, progress, resume)
        info = {"device": str(device), "threads": torch.get_num_threads(), "dataset": str(data.path),
                "model": config.model.name, **describe_precision(config.train.precision, device)}
        return RunResult(result.valid, result.test, result, None, config.to_dict(), info,
                         _diagnostics("model", model, config, data, device))
    backend, backend_result = fit_backend(config, data, device, callback, progress, use_cache,
                                          resume if stage == "backend" else None)
    info: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "dataset": str(data.path),
                            "backend_from_cache": backend_result.from_cache,
                            **describe_precision(config.train.precision, device)}
    diagnostics = _diagnostics("backend", backend, config, data, device)
    if not config.ddrm.enabled:
        return RunResult(backend_result.valid, backend_result.test, backend_result, None, config.to_dict(), info,
                         diagnostics)
    warn_if_emulated(stage_precision(config.train.precision, "ddrm"), device)  # one line, once per process
    model, ddrm_result = fit_ddrm(config, data, backend, device, callback, progress,
                                  resume if stage == "ddrm" else None)
    info["schedule"] = model.schedule.describe()
    info["reverse_steps"] = config.ddrm.reverse_steps
    diagnostics.update(_diagnostics("ddrm", model, config, data, device))
    return RunResult(ddrm_result.valid, ddrm_result.test, backend_result, ddrm_result, config.to_dict(), info,
                     diagnostics)


def _diagnostics(prefix: str, model: torch.nn.Module, config: Config, data: InteractionData,
                 device: torch.device) -> dict[str, float]:
    """``{prefix}_noise_auc`` etc. (see :mod:`.diagnostics`) when the training noise is known, else {}."""
    from .diagnostics import has_known_noise, noise_diagnostics

    if not has_known_noise(data):
        return {}
    model.eval()
    values = noise_diagnostics(model.scorer(), data, batch_size=config.train.eval_batch_size, device=device)
    return {f"{prefix}_{k}" if k != "noise_train_share" else k: v for k, v in values.items()}
