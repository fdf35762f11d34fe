"""The base classes of every config section: frozen pydantic models that refuse unknown keys.

A model, a backend or a loss-side denoiser declares its own settings as a subclass of :class:`ModelParams`,
:class:`BackendParams` or :class:`DenoiseParams` in its own file and registers itself with it
(:mod:`ddrm.registry`); :mod:`ddrm.config` turns pydantic's errors into one line naming the dotted key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

MAX_SEED = 2**31  # numpy's legacy seeding takes [0, 2**32); derived seeds add small offsets
SAMPLING = Literal["interaction", "user"]  # BPR positives: every training pair once per epoch, or user-uniform
POOLING = Literal["mean", "normalized_sum"]  # over a backend's propagation layers
Flag = StrictBool  # a config switch: true or false only (not "yes", not 1)


class Params(BaseModel):
    """A config section: frozen, unknown keys refused, defaults validated like given values."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, protected_namespaces=())

    def settings(self) -> dict[str, Any]:
        """The section's settings by name, in declaration order (tuples stay tuples)."""
        return {name: getattr(self, name) for name in type(self).model_fields}


class ModelParams(Params):
    """What every model has: its registered ``name`` (a closed-form model, e.g. EASE, has little more)."""

    name: str


class TrainedParams(ModelParams):
    """A model trained by an optimiser: its learning rate and weight decay, the stage's epoch limit and patience
    (None: ``train.epochs`` / ``train.patience``)."""

    epochs: int | None = Field(default=None, ge=0)
    patience: int | None = Field(default=None, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)


class BackendParams(TrainedParams):
    """A BPR-trained embedding model that DDRM can wrap (it exposes ``embeddings()``)."""

    dim: int = Field(default=64, ge=1)  # embedding size d
    layers: int = Field(default=0, ge=0)  # propagation layers over D^-1/2 A D^-1/2 when embeddings are handed out
    weight_decay: float = Field(default=1e-4, ge=0)  # L2 on the batch's embeddings, LightGCN-style (per-sample mean)
    init_std: float = Field(default=0.1, gt=0)  # N(0, init_std) initialisation
    sampling: SAMPLING = "interaction"
    pooling: POOLING = "mean"  # over layers: mean (LightGCN) | normalized_sum (reference SGL code)
    checkpoint: str | None = None  # load a reference state dict instead of training (see backends/checkpoint.py)

    @property
    def sparse_embeddings(self) -> bool:
        """Whether the embedding tables take sparse gradients (MF's ``sparse_grad``; graph backends: never)."""
        return False


class DenoiseParams(Params):
    """A loss-side denoising plug-in of a BPR backend (``denoise.name``); ``none`` is the plain mean."""

    name: str = "none"

