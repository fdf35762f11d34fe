"""The config sections ``data``, ``backend``, ``ddrm``, ``train`` and ``model``: typed, frozen, validated.

Each section checks its own values in ``__post_init__``; errors name the key and what is allowed. The whole
config (:class:`ddrm.config.Config`) and its parsing live in :mod:`ddrm.config`, which re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

ACTIVATIONS = ("relu", "sigmoid", "tanh")
DENOISERS = ("mlp", "transformer")
INFERENCE_STARTS = ("mean", "noise")
SAMPLING = ("interaction", "user")
POOLINGS = ("mean", "normalized_sum")
PRECISIONS = ("fp32", "bf16")  # train.precision; ddrm.precision implements them


MAX_SEED = 2**31  # numpy's legacy seeding takes [0, 2**32); derived seeds add small offsets


@dataclass(frozen=True)
class DataConfig:
    """Which prepared split to use: ``<dir>/<name>/{train,valid,test}_list.npy``."""

    name: str = "ml-1m_noisy"
    dir: str | None = None  # None: --data-dir, else $DDRM_DATA_DIR, else ./data
    noise_ratio: float = 0.0  # random-noise setting: add this share of unobserved pairs to train/valid
    noise_seed: int = 0  # seed of the injected pairs (fixed across run seeds: same data for every seed)

    def __post_init__(self) -> None:
        _require(0 <= self.noise_ratio <= 1, "data.noise_ratio", self.noise_ratio, "a float in [0, 1]")
        _require(0 <= self.noise_seed < MAX_SEED, "data.noise_seed", self.noise_seed, f"an integer in [0, {MAX_SEED})")
        _require(bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
                 "data.name", self.name, "a dataset folder name (no '/')")


BACKEND_DEFAULTED = {"layers": 0, "pooling": "mean"}  # keys a backend class may default (``default_<key>``)


def backend_defaults(name: str) -> dict[str, Any]:
    """What backend ``name`` sets the keys of :data:`BACKEND_DEFAULTED` to when a config leaves them unset: its
    class's ``default_<key>`` (layers: mf 0, lightgcn/sgl 3, the paper's settings, DESIGN §4; pooling: mean,
    sgl normalized_sum as in the reference code's SGL), else the fallback above."""
    from .registry import get_backend  # local import: registry imports model files

    cls = get_backend(name)
    return {key: getattr(cls, f"default_{key}", fallback) for key, fallback in BACKEND_DEFAULTED.items()}


@dataclass(frozen=True)
class BackendConfig:
    """The recommender whose embeddings DDRM denoises."""

    name: str = "mf"
    dim: int = 64  # embedding size d
    layers: int | None = None  # propagation layers over D^-1/2 A D^-1/2 (None: the backend's default_layers)
    lr: float = 1e-3
    weight_decay: float = 1e-4  # L2 on the batch's embeddings, LightGCN-style (per-sample mean)
    init_std: float = 0.1  # N(0, init_std) initialisation
    epochs: int | None = None  # None: train.epochs
    patience: int | None = None  # None: train.patience
    sampling: str = "interaction"  # BPR positives: every training pair once per epoch, or user-uniform
    pooling: str | None = None  # over layers: mean (LightGCN) | normalized_sum (reference SGL code); None: backend default
    checkpoint: str | None = None  # load a reference state dict instead of training (see backends/)
    ssl_ratio: float = 0.1  # SGL: edge-dropout rate of each view
    ssl_temperature: float = 0.2  # SGL: InfoNCE temperature tau
    ssl_reg: float = 0.1  # SGL: weight of the contrastive loss
    denoise: str = "none"  # loss-side plug-in: none | tce (truncated) | rce (reweighted) | deca; see ddrm.denoise
    tce_max_rate: float = 0.2  # T-CE: final share of the batch's largest-loss triples dropped
    tce_num_gradual: int = 30000  # T-CE: batches over which the drop rate ramps up from 0
    rce_beta: float = 0.25  # R-CE: weight sigma(score_ui)^beta
    deca_c1: float = 1000.0  # DeCA: -log P(y=0 | r=1) in the positive-denoising (DP) steps
    deca_c2: float = 10.0  # DeCA: -log P(y=1 | r=0) in the negative-denoising (DN) steps
    deca_alpha: float = 0.5  # DeCA: weight of KL(g||p) against KL(p||g) in the agreement term
    # MF only: sparse embedding gradients (only the batch's rows) and torch.optim.SparseAdam, a lazy Adam whose
    # moments move only for those rows; false: dense gradients and Adam over every row (the paper's optimiser)
    sparse_grad: bool = False
    # derived, not a setting: which BACKEND_DEFAULTED keys were unset and took the backend's default, so that
    # Config.replace re-resolves them when backend.name changes (left out of to_dict, keys and cache keys)
    defaulted: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False,
                                      metadata={"derived": True})

    def __post_init__(self) -> None:
        from .registry import backend_names  # local import: registry imports model files

        _require(self.name in backend_names(), "backend.name", self.name, f"one of {backend_names()}")
        unset = frozenset(key for key in BACKEND_DEFAULTED if getattr(self, key) is None)
        object.__setattr__(self, "defaulted", unset)
        for key, value in backend_defaults(self.name).items():
            if key in unset:
                object.__setattr__(self, key, value)
        _require(self.dim >= 1, "backend.dim", self.dim, "an integer >= 1")
        _require(self.layers >= 0, "backend.layers", self.layers, "an integer >= 0")
        _require(self.lr > 0, "backend.lr", self.lr, "a float > 0")
        _require(self.weight_decay >= 0, "backend.weight_decay", self.weight_decay, "a float >= 0")
        _require(self.init_std > 0, "backend.init_std", self.init_std, "a float > 0")
        _require(self.epochs is None or self.epochs >= 0, "backend.epochs", self.epochs, "null or an integer >= 0")
        _require(self.patience is None or self.patience >= 1, "backend.patience", self.patience,
                 "null or an integer >= 1")
        _require(self.sampling in SAMPLING, "backend.sampling", self.sampling, f"one of {list(SAMPLING)}")
        _require(self.pooling in POOLINGS, "backend.pooling", self.pooling, f"one of {list(POOLINGS)}")
        _require(0 <= self.ssl_ratio < 1, "backend.ssl_ratio", self.ssl_ratio, "a float in [0, 1)")
        _require(self.ssl_temperature > 0, "backend.ssl_temperature", self.ssl_temperature, "a float > 0")
        _require(self.ssl_reg >= 0, "backend.ssl_reg", self.ssl_reg, "a float >= 0")
        from .denoise import DENOISERS

        _require(self.denoise in DENOISERS, "backend.denoise", self.denoise, f"one of {list(DENOISERS)}")
        _require(0 <= self.tce_max_rate < 1, "backend.tce_max_rate", self.tce_max_rate, "a float in [0, 1)")
        _require(self.tce_num_gradual >= 1, "backend.tce_num_gradual", self.tce_num_gradual, "an integer >= 1")
        _require(self.rce_beta >= 0, "backend.rce_beta", self.rce_beta, "a float >= 0")
        _require(self.deca_c1 >= 0, "backend.deca_c1", self.deca_c1, "a float >= 0")
        _require(self.deca_c2 >= 0, "backend.deca_c2", self.deca_c2, "a float >= 0")
        _require(0 <= self.deca_alpha <= 1, "backend.deca_alpha", self.deca_alpha, "a float in [0, 1]")
        _require(isinstance(self.sparse_grad, bool), "backend.sparse_grad", self.sparse_grad, "true or false")
        _require(not self.sparse_grad or (self.name == "mf" and self.denoise != "deca"), "backend.sparse_grad",
                 self.sparse_grad, "false unless backend.name is mf and backend.denoise is not deca (graph "
                 "backends propagate every row, so their gradients are dense; DeCA trains dense extra models)")


@dataclass(frozen=True)
class DDRMConfig:
    """DDRM hyperparameters; paper symbols in the comments (DESIGN §1, §7)."""

    enabled: bool = True  # false: evaluate the backend alone
    steps: int = 20  # T
    inference_multiplier: float = 1.0  # n, T' = round(n*T)
    inference_steps: int | None = None  # T' override; 0 = mean of liked items, no denoiser
    noise_min: float = 1e-4  # alpha_min
    noise_max: float = 1e-3  # alpha_max
    noise_scale: float = 1e-4  # s
    first_beta: float | None = None  # None: paper formula; 1e-5 = reference code
    bpr_weight: float = 0.6  # lambda
    reweight_power: float = 1.0  # gamma
    hidden_dims: tuple[int, ...] = (100, 1000)  # MLP: in -> d2 -> d1 -> d2 -> d for (d1, d2)
    activation: str = "sigmoid"
    dropout: float = 0.5  # input dropout on the noisy embedding
    step_emb_dim: int = 10
    denoiser: str = "mlp"  # mlp | transformer (cond = query, step emb = key, noisy emb = value; Table 3)
    transformer_heads: int = 4  # transformer denoiser: attention heads; must divide backend.dim
    transformer_tokens: int = 4  # transformer denoiser: tokens each of cond / step emb / x_t is projected to
    dynamic_scale: bool = False  # training noise per embedding with s' ~ U(0, s]; inference uses s
    inference_start: str = "mean"  # mean of liked items, or pure noise N(0, I)
    denoise_users: bool = True  # false: item-only (no user denoiser)
    freeze_backend: bool = True  # false: joint fine-tuning of the backend embeddings
    propagation_layers: int | None = None  # None: the backend's final embeddings; K: its ego embeddings
    #                                        propagated K layers with its pooling (reference code: MF 4, LightGCN 2, SGL 5)
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int | None = None  # None: train.epochs
    patience: int | None = None  # None: train.patience
    sampling: str = "user"  # BPR positives: user-uniform (Alg. 1 / reference code) or per interaction

    def __post_init__(self) -> None:
        _require(self.sampling in SAMPLING, "ddrm.sampling", self.sampling, f"one of {list(SAMPLING)}")
        _require(self.steps >= 1, "ddrm.steps", self.steps, "an integer >= 1 (T)")
        _require(self.inference_multiplier >= 1, "ddrm.inference_multiplier", self.inference_multiplier,
                 "a float >= 1 (n)")
        _require(self.inference_steps is None or self.inference_steps >= 0, "ddrm.inference_steps",
                 self.inference_steps, "null or an integer >= 0")
        for key in ("noise_min", "noise_max", "noise_scale"):
            value = getattr(self, key)
            _require(0 < value < 1, f"ddrm.{key}", value, "a float in (0, 1)")
        _require(self.noise_min <= self.noise_max, "ddrm.noise_min", self.noise_min,
                 f"a value <= ddrm.noise_max ({self.noise_max})")
        _require(self.first_beta is None or 0 < self.first_beta < 1, "ddrm.first_beta", self.first_beta,
                 "null or a float in (0, 1)")
        _require(0 <= self.bpr_weight <= 1, "ddrm.bpr_weight", self.bpr_weight, "a float in [0, 1] (lambda)")
        _require(self.reweight_power >= 0, "ddrm.reweight_power", self.reweight_power, "a float >= 0 (gamma)")
        _require(len(self.hidden_dims) == 2 and all(d >= 1 for d in self.hidden_dims), "ddrm.hidden_dims",
                 list(self.hidden_dims), "two integers >= 1, e.g. [100, 1000]")
        _require(self.activation in ACTIVATIONS, "ddrm.activation", self.activation, f"one of {list(ACTIVATIONS)}")
        _require(0 <= self.dropout < 1, "ddrm.dropout", self.dropout, "a float in [0, 1)")
        _require(self.step_emb_dim >= 2 and self.step_emb_dim % 2 == 0, "ddrm.step_emb_dim", self.step_emb_dim,
                 "an even integer >= 2")
        _require(self.denoiser in DENOISERS, "ddrm.denoiser", self.denoiser, f"one of {list(DENOISERS)}")
        _require(self.transformer_heads >= 1, "ddrm.transformer_heads", self.transformer_heads,
                 "an integer >= 1 that divides backend.dim")
        _require(self.transformer_tokens >= 2, "ddrm.transformer_tokens", self.transformer_tokens,
                 "an integer >= 2 (with one token the attention weights are constant)")
        _require(self.inference_start in INFERENCE_STARTS, "ddrm.inference_start", self.inference_start,
                 f"one of {list(INFERENCE_STARTS)}")
        _require(self.propagation_layers is None or self.propagation_layers >= 0, "ddrm.propagation_layers",
                 self.propagation_layers, "null or an integer >= 0")
        _require(self.lr > 0, "ddrm.lr", self.lr, "a float > 0")
        _require(self.weight_decay >= 0, "ddrm.weight_decay", self.weight_decay, "a float >= 0")
        _require(self.epochs is None or self.epochs >= 0, "ddrm.epochs", self.epochs, "null or an integer >= 0")
        _require(self.patience is None or self.patience >= 1, "ddrm.patience", self.patience,
                 "null or an integer >= 1")

    @property
    def reverse_steps(self) -> int:
        """T' = inference_steps if set, else round(n*T) with halves rounded up (n=1.25, T=10 -> 13); the rule is
        :func:`ddrm.diffusion.schedule.reverse_step_count`."""
        from .diffusion.schedule import reverse_step_count  # local import: torch is not needed to read a config

        return reverse_step_count(self.steps, self.inference_multiplier, self.inference_steps)


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings shared by backend pretraining and DDRM training."""

    epochs: int = 100
    batch_size: int = 2048
    eval_every: int = 1
    patience: int = 10  # evaluations without a better validation Recall@20 before stopping
    eval_batch_size: int = 1024  # users per scoring chunk
    threads: int | None = None  # torch threads; None: all cores of this process
    device: str = "auto"  # auto | cpu | cuda
    time_budget_minutes: float | None = None  # stop a stage at the first evaluation past this wall time
    max_epochs: int | None = None  # a cap on every stage's epochs (smoke runs: ddrm ablate|tune --max-epochs)
    precision: str = "fp32"  # fp32 | bf16: DDRM's denoisers under bf16 autocast; backends stay fp32 (ddrm.precision)

    def __post_init__(self) -> None:
        _require(self.epochs >= 0, "train.epochs", self.epochs, "an integer >= 0")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _require(self.eval_every >= 1, "train.eval_every", self.eval_every, "an integer >= 1")
        _require(self.patience >= 1, "train.patience", self.patience, "an integer >= 1")
        _require(self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, "an integer >= 1")
        _require(self.threads is None or self.threads >= 1, "train.threads", self.threads, "null or an integer >= 1")
        _require(self.device in ("auto", "cpu", "cuda"), "train.device", self.device, "one of ['auto', 'cpu', 'cuda']")
        _require(self.time_budget_minutes is None or self.time_budget_minutes > 0, "train.time_budget_minutes",
                 self.time_budget_minutes, "null or a number > 0")
        _require(self.max_epochs is None or self.max_epochs >= 0, "train.max_epochs", self.max_epochs,
                 "null or an integer >= 0")
        _require(self.precision in PRECISIONS, "train.precision", self.precision, f"one of {list(PRECISIONS)}")

    def stage_epochs(self, stage_epochs: int | None) -> int:
        """A stage's epoch limit: its own setting (``backend/ddrm/model.epochs``), else ``epochs``, capped at
        ``max_epochs``."""
        epochs = stage_epochs if stage_epochs is not None else self.epochs
        return epochs if self.max_epochs is None else min(epochs, self.max_epochs)


@dataclass(frozen=True)
class ModelConfig:
    """A standalone baseline (Table 2) trained *instead of* backend + DDRM; ``name: null`` = that path."""

    name: str | None = None  # a registered standalone model: multivae cdae diffrec adagcl ease itemknn mostpop
    hidden_dims: tuple[int, ...] = (600, 200)  # MultiVAE: items -> 600 -> 200 (latent); CDAE: hidden = last;
    # DiffRec: the denoiser's hidden widths (items + step emb -> hidden... -> items)
    dropout: float = 0.5  # input dropout on the user's interaction vector
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 500  # users per batch
    anneal_cap: float = 0.2  # MultiVAE: final KL weight beta
    anneal_steps: int = 200000  # MultiVAE: beta = min(anneal_cap, batches / anneal_steps)
    diffusion_steps: int = 5  # DiffRec: T (every evaluation runs T reverse steps of the MLP per user)
    noise_scale: float = 0.005  # DiffRec: s, 1 - alpha_bar_t = s * linspace(noise_min, noise_max)
    noise_min: float = 0.005
    noise_max: float = 0.01
    sampling_steps: int = 0  # DiffRec inference: noise the user's vector to this step first (0: none)
    reweight: bool = True  # DiffRec: weight the x0-MSE of step t by SNR(t-1) - SNR(t)
    step_emb_dim: int = 10  # DiffRec: sinusoidal step-embedding width
    dim: int = 64  # AdaGCL: embedding size
    layers: int = 2  # AdaGCL: propagation layers (encoder, VGAE encoder, one edge gate each)
    ssl_reg: float = 0.1  # AdaGCL: weight of the InfoNCE between the two generated views
    ib_reg: float = 0.1  # AdaGCL: weight of the information-bottleneck InfoNCE
    ssl_temperature: float = 0.5  # AdaGCL: InfoNCE temperature
    l0_reg: float = 1e-4  # AdaGCL: weight of the edge gates' expected L0 norm
    gate_temperature: float = 2.0  # AdaGCL: hard-concrete temperature at epoch 1 ...
    gate_temperature_decay: float = 0.98  # ... times this per epoch (floor 0.05)
    ease_lambda: float = 500.0  # EASE: L2 weight, P = (XᵀX + λI)^-1 (Steck 2019's ML-20M value; tune per dataset)
    ease_max_items: int = 20000  # EASE: refuse more items (dense items² float64 matrices, 3.2 GB each at 20000)
    knn_k: int = 400  # ItemKNN: neighbours kept per item (DESIGN §4a's setting)
    knn_shrink: float = 10.0  # ItemKNN: cosine shrink, x_i·x_j / (|x_i||x_j| + shrink)
    epochs: int | None = None  # None: train.epochs
    patience: int | None = None  # None: train.patience

    def __post_init__(self) -> None:
        from .registry import model_names

        _require(self.name is None or self.name in model_names(), "model.name", self.name,
                 f"null or one of {model_names()}")
        _require(len(self.hidden_dims) >= 1 and all(int(h) >= 1 for h in self.hidden_dims), "model.hidden_dims",
                 self.hidden_dims, "a non-empty list of integers >= 1")
        _require(0 <= self.dropout < 1, "model.dropout", self.dropout, "a float in [0, 1)")
        _require(self.lr > 0, "model.lr", self.lr, "a float > 0")
        _require(self.weight_decay >= 0, "model.weight_decay", self.weight_decay, "a float >= 0")
        _require(self.batch_size >= 1, "model.batch_size", self.batch_size, "an integer >= 1")
        _require(0 <= self.anneal_cap, "model.anneal_cap", self.anneal_cap, "a float >= 0")
        _require(self.anneal_steps >= 1, "model.anneal_steps", self.anneal_steps, "an integer >= 1")
        _require(self.diffusion_steps >= 1, "model.diffusion_steps", self.diffusion_steps, "an integer >= 1")
        _require(self.noise_scale > 0, "model.noise_scale", self.noise_scale, "a float > 0")
        _require(0 < self.noise_min <= self.noise_max, "model.noise_min", self.noise_min,
                 "a float in (0, model.noise_max]")
        _require(self.noise_scale * self.noise_max < 1, "model.noise_max", self.noise_max,
                 "a float with noise_scale * noise_max < 1")
        _require(0 <= self.sampling_steps <= self.diffusion_steps, "model.sampling_steps", self.sampling_steps,
                 "an integer in [0, model.diffusion_steps]")
        _require(self.step_emb_dim >= 2, "model.step_emb_dim", self.step_emb_dim, "an integer >= 2")
        _require(self.dim >= 1, "model.dim", self.dim, "an integer >= 1")
        _require(self.layers >= 1, "model.layers", self.layers, "an integer >= 1")
        for key in ("ssl_reg", "ib_reg", "l0_reg"):
            _require(getattr(self, key) >= 0, f"model.{key}", getattr(self, key), "a float >= 0")
        for key in ("ssl_temperature", "gate_temperature"):
            _require(getattr(self, key) > 0, f"model.{key}", getattr(self, key), "a float > 0")
        _require(0 < self.gate_temperature_decay <= 1, "model.gate_temperature_decay", self.gate_temperature_decay,
                 "a float in (0, 1]")
        _require(0 < self.ease_lambda < math.inf, "model.ease_lambda", self.ease_lambda, "a finite float > 0")
        _require(self.ease_max_items >= 1, "model.ease_max_items", self.ease_max_items, "an integer >= 1")
        _require(self.knn_k >= 1, "model.knn_k", self.knn_k, "an integer >= 1")
        _require(0 <= self.knn_shrink < math.inf, "model.knn_shrink", self.knn_shrink, "a finite float >= 0")
        _require(self.epochs is None or self.epochs >= 0, "model.epochs", self.epochs, "null or an integer >= 0")
        _require(self.patience is None or self.patience >= 1, "model.patience", self.patience,
                 "null or an integer >= 1")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': value {value!r} is not allowed; expected {allowed}")


def setting_fields(section: Any) -> list[dataclasses.Field]:
    """A section's settings (class or instance): its fields without the derived ones (``BackendConfig.defaulted``)."""
    return [f for f in dataclasses.fields(section) if not f.metadata.get("derived")]


def settings(section: Any) -> dict[str, Any]:
    """A section instance's settings by name, in declaration order (what ``Config.to_dict`` holds)."""
    return {f.name: getattr(section, f.name) for f in setting_fields(section)}
