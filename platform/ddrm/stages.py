"""What the stages of a run are built from, apart from the loop itself (:mod:`ddrm.train` runs them).

Loading the data and picking the device, the backend's cache key and construction, evaluating a reference
checkpoint, fitting a closed-form model, and the noise diagnostics of a stage's final model. Pure: no Ray,
no MLflow.
"""

from __future__ import annotations

import os
import time
import torch

from . import cache
from .backends.base import Backend
from .codeversion import code_fingerprint
from .config import Config
from .data.prepared import InteractionData, load_prepared
from .evaluation import evaluate
from .loop import Callback, EvalEvent, StageResult
from .precision import stage_precision
from .registry import get_model


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


def backend_cache_key(config: Config, data: InteractionData) -> str:
    """Everything that determines a trained backend: its data, its model's and loss plug-in's settings (only
    theirs), the loop settings, the seed and the code it runs."""
    tc = config.train
    return cache.cache_key({
        "data": data.fingerprint(),
        "model": config.model.settings(),
        **({"denoise": config.denoise.settings()} if config.denoise.name != "none" else {}),
        "loop": {"epochs": tc.stage_epochs(config.model.epochs),
                 "patience": config.model.patience or tc.patience, "batch_size": tc.batch_size,
                 "eval_every": tc.eval_every,
                 **({"time_budget_minutes": tc.time_budget_minutes} if tc.time_budget_minutes is not None else {})},
        "seed": config.seed,
        # only when the backend itself trains below fp32 (fp32 keys stay as they were; see ddrm.precision)
        **({"precision": stage_precision(tc.precision, "backend")}
           if stage_precision(tc.precision, "backend") != "fp32" else {}),
        "code": code_fingerprint(config, "backend"),  # a change to the backend, its imports or the loop retrains
    })


def backend_optimizer(backend: Backend, config: Config) -> torch.optim.Optimizer:
    """Adam over every parameter, or with MF's ``model.sparse_grad`` SparseAdam (lazy: a step updates the moments
    and values of the rows the batch touched only); the backend's L2 is in its loss, not the optimiser."""
    if config.model.sparse_embeddings:
        return torch.optim.SparseAdam(list(backend.parameters()), lr=config.model.lr)
    return torch.optim.Adam(backend.parameters(), lr=config.model.lr)


def build_backend(config: Config, data: InteractionData, device: torch.device) -> Backend:
    """The backend ``model.name`` names, with the loss plug-in ``denoise`` names, on ``device``."""
    cls = get_model(config.model.name)
    return cls(config.model, data.n_users, data.n_items, data.csr("train"), config.denoise).to(device)


def evaluate_checkpoint(backend: Backend, config: Config, data: InteractionData, device: torch.device,
                        evaluate_test: bool = True) -> StageResult:
    """Load ``model.checkpoint`` (no training) and evaluate it on validation and test (``evaluate_test``)."""
    from .errors import ConfigError

    path = config.model.checkpoint
    if not os.path.isfile(path):
        raise ConfigError(f"config key 'model.checkpoint': file {path!r} does not exist")
    start, cpu_start = time.perf_counter(), time.process_time()
    backend.load_checkpoint(path)
    backend.to(device).eval()
    kwargs = {"batch_size": config.train.eval_batch_size, "device": device}
    valid = evaluate(backend.scorer(), data, "valid", **kwargs)
    test = evaluate(backend.scorer(), data, "test", **kwargs) if evaluate_test else {}
    return StageResult(0, 0, valid, test, [], time.perf_counter() - start, from_cache=False,
                       cpu_seconds=time.process_time() - cpu_start)


def fit_closed_form(model: torch.nn.Module, config: Config, data: InteractionData, device: torch.device,
                    callback: Callback | None, evaluate_test: bool = True) -> StageResult:
    """``model.fit_closed_form()`` once, then validation (the one epoch-0 event, selected) and test (unless
    ``evaluate_test`` is false); no optimiser.
    A resumed run simply refits (deterministic), so its snapshot holds only the stage."""
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit_closed_form()
    model.eval()
    kwargs = {"batch_size": config.train.eval_batch_size, "device": device}
    valid = evaluate(model.scorer(), data, "valid", **kwargs)
    elapsed = time.perf_counter() - start
    if callback is not None:
        callback(EvalEvent("model", 0, float("nan"), valid, valid, elapsed, model, lambda: {"stage": "model"}))
    test = evaluate(model.scorer(), data, "test", **kwargs) if evaluate_test else {}
    history = [{"epoch": 0, "loss": float("nan"), "seconds": elapsed, **valid}]
    return StageResult(0, 0, valid, test, history, time.perf_counter() - start, stop_reason="closed_form",
                       cpu_seconds=time.process_time() - cpu_start)


def stage_diagnostics(prefix: str, model: torch.nn.Module, config: Config, data: InteractionData,
                      device: torch.device) -> dict[str, float]:
    """``{prefix}_noise_auc`` etc. (see :mod:`.diagnostics`) when the training noise is known, else {}. They score
    training pairs only (never the test split), so a run that does not score test computes them too."""
    from .diagnostics import has_known_noise, noise_diagnostics

    if not has_known_noise(data):
        return {}
    model.eval()
    values = noise_diagnostics(model.scorer(), data, batch_size=config.train.eval_batch_size, device=device)
    return {f"{prefix}_{k}" if k != "noise_train_share" else k: v for k, v in values.items()}
