"""The training loop's vocabulary: what it trains, how it batches, when it stops and what it reports.

:func:`ddrm.train.fit` trains any :class:`TrainableModel` (a backend, DDRM or a standalone model, all derived
from :class:`ModelBase`, which gives the optional hooks their defaults). Its state between evaluations is an
:class:`EarlyStopping`, whose fields are exactly what a resume snapshot stores under ``track``. Pure: no Ray,
no MLflow.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Protocol

import scipy.sparse as sp
import torch
from torch import nn

from .data.sampling import BPRSampler, UserBatchSampler
from .metrics import SELECTION_METRIC


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class BatchKind(enum.Enum):
    """What one training batch of a model is."""

    TRIPLES = "triples"  # BPR ``(users, pos, neg)`` (BPRSampler; positives by the stage's ``sampling`` mode)
    USERS = "users"  # ``(users,)``: models trained on whole interaction vectors (UserBatchSampler)
    NONE = "none"  # closed form: fitted once, never trained on batches

    def sampler(self, train: sp.csr_matrix, seed: int, mode: str) -> BPRSampler | UserBatchSampler:
        """This kind's per-epoch batch source over the training matrix; ``mode``: BPR ``interaction`` | ``user``."""
        if self is BatchKind.USERS:
            return UserBatchSampler(train, seed=seed)
        if self is BatchKind.TRIPLES:
            return BPRSampler(train, seed=seed, mode=mode)
        raise ValueError("a closed-form model is not trained on batches")


class TrainableModel(Protocol):
    """What :func:`ddrm.train.fit` trains: an ``nn.Module`` (``train``/``eval``/``state_dict``/``load_state_dict``)
    with a training objective and a scorer. :class:`ModelBase` gives the optional members their defaults."""

    batch_kind: BatchKind  # optional, default TRIPLES
    bpr_sampling: str  # optional, default "user": a standalone model's BPR positives (stages use their config)

    def loss(self, *batch: torch.Tensor) -> torch.Tensor:
        """The scalar training objective on one batch of :attr:`batch_kind`."""

    def scorer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``users (B,) -> scores (B, n_items)``; called in eval mode."""

    def training_step(self, batch: tuple[torch.Tensor, ...], optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """Optional: the update(s) of one batch; returns the batch's loss (the loop stops on a non-finite one)."""

    def start_epoch(self, epoch: int, generator: torch.Generator) -> None:
        """Optional: called before each epoch (1-based) with the loop's generator (SGL redraws its views)."""

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any: ...


class ModelBase(nn.Module):
    """The defaults of :class:`TrainableModel`'s optional members: BPR-triple batches, no epoch hook, and a
    training step that is one optimiser update on ``loss(*batch)``."""

    batch_kind: BatchKind = BatchKind.TRIPLES
    bpr_sampling: str = "user"

    def loss(self, *batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def start_epoch(self, epoch: int, generator: torch.Generator) -> None:
        """No-op (see :meth:`TrainableModel.start_epoch`)."""

    def training_step(self, batch: tuple[torch.Tensor, ...], optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """``loss(*batch)``, then zero_grad / backward / step; no update when the loss is not finite."""
        loss = self.loss(*batch)
        if torch.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.detach()


@dataclass(frozen=True)
class StopRules:
    """When a stage stops, checked at each evaluation in this priority order: its epoch limit, ``patience``
    evaluations without a better score, the wall-time budget (``train.time_budget_minutes``)."""

    epochs: int
    patience: int
    time_budget_minutes: float | None = None

    def reason(self, epoch: int, stale: int, elapsed: float) -> str | None:
        """The first rule that stops training after this evaluation, or None."""
        over_budget = self.time_budget_minutes is not None and elapsed >= 60.0 * self.time_budget_minutes
        rules = (("epochs", epoch >= self.epochs), ("patience", stale >= self.patience), ("time_budget", over_budget))
        return next((name for name, hit in rules if hit), None)


@dataclass
class EarlyStopping:
    """Model selection between evaluations; the fields are the resume snapshot's ``track`` (:meth:`as_dict`)."""

    best_score: float = -math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_valid: dict[str, float] = field(default_factory=dict)
    stale: int = 0  # evaluations since the best one
    history: list[dict[str, Any]] = field(default_factory=list)  # replaced, never mutated: snapshots share it
    epoch: int = 0  # of the last evaluation
    stopped: bool = False
    stop_reason: str = "epochs"

    def observe(self, epoch: int, loss: float, valid: dict[str, float], elapsed: float, rules: StopRules,
                snapshot: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Record one evaluation: keep ``snapshot()`` when ``valid[SELECTION_METRIC]`` is a new best, then apply
        ``rules`` (``stopped`` / ``stop_reason``)."""
        if valid[SELECTION_METRIC] > self.best_score:
            self.best_score, self.best_epoch, self.best_state = valid[SELECTION_METRIC], epoch, snapshot()
            self.best_valid, self.stale = valid, 0
        else:
            self.stale += 1
        self.history = self.history + [{"epoch": epoch, "loss": loss, "seconds": elapsed, **valid}]
        self.epoch = epoch
        reason = rules.reason(epoch, self.stale, elapsed)
        self.stopped = reason is not None
        self.stop_reason = reason or self.stop_reason

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (values shared, not copied): ``EarlyStopping(**as_dict())`` resumes."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class EvalEvent:
    """What a callback sees after each evaluation."""

    stage: str  # "backend" | "ddrm" | "model"
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
    """Outcome of one fitted stage (backend, DDRM or a standalone model)."""

    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, Any]]
    seconds: float
    from_cache: bool = False
    stop_reason: str = "epochs"  # epochs | patience | time_budget (train.time_budget_minutes) | closed_form
    cpu_seconds: float = 0.0  # process CPU time of the stage (time.process_time; every thread of the process)


@dataclass
class RunCost:
    """What one run cost: ``wall_seconds`` and ``cpu_seconds`` (``time.process_time``, every thread of the
    process) over the whole run (data loading, training, evaluations, diagnostics), and ``epochs``: the training
    epochs its stages actually ran, summed (backend + DDRM, or the standalone model). A backend loaded from the
    cache (``backend_from_cache``) counts 0 epochs: its training was paid for by the run that cached it.
    Logged as ``cost_<field>`` (:data:`ddrm.metrics.COST`)."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    epochs: int = 0
    backend_from_cache: bool = False


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
