"""Typed, frozen run configuration: ``{data, train, model: {name, ...its own params}, denoise, ddrm, seed}``.

- ``model``: any registered model (a BPR backend such as ``mf``, or a standalone one such as ``ease``); its keys
  are those its own params class declares in its own file (:mod:`ddrm.registry`).
- ``denoise``: the loss-side plug-in of a BPR backend (``none``, ``tce``, ``rce``, ``deca``), a section of its
  own because it plugs into any backend's loss: each backend's keys stay its own, and a search over
  ``denoise.max_rate`` reads the same on every backend.
- ``ddrm``: the optional wrapper over a model that exposes ``embeddings()``; ``ddrm.enabled`` defaults to true for
  such a model (a backend) and to false for any other, and ``false`` turns it off (a run then logs
  ``ddrm.enabled`` alone).

Build one with :func:`load_config` (YAML file + dotted overrides) or :func:`config_from_dict`; every value is
validated by pydantic and an error is one :class:`~ddrm.errors.ConfigError` line naming the dotted key. Configs
written before this shape (sections ``backend`` and ``model``) are read through :mod:`ddrm.legacy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import Field, PositiveInt, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .params import MAX_SEED, SAMPLING, BackendParams, DenoiseParams, Flag, ModelParams, Params

SECTIONS = ("data", "model", "denoise", "ddrm", "train")
PRECISIONS = ("fp32", "bf16")  # train.precision; ddrm.precision implements them
ACTIVATIONS = ("relu", "sigmoid", "tanh")  # ddrm.activation; diffusion.denoiser.ACTIVATION_LAYERS builds them


class DataConfig(Params):
    """Which prepared split to use: ``<dir>/<name>/{train,valid,test}_list.npy``."""

    name: str = Field(default="ml-1m_noisy", min_length=1, pattern=r"^[^/]+$")  # a dataset folder name, no '/'
    dir: str | None = None  # None: --data-dir, else $DDRM_DATA_DIR, else ./data
    noise_ratio: float = Field(default=0.0, ge=0, le=1)  # random noise: this share of unobserved pairs added
    noise_seed: int = Field(default=0, ge=0, lt=MAX_SEED)  # seed of the injected pairs (the same for every run seed)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if name in (".", ".."):
            raise ValueError(f"data.name {name!r} is not a dataset folder name")
        return name


class TrainConfig(Params):
    """Loop settings shared by every stage."""

    epochs: int = Field(default=100, ge=0)
    batch_size: int = Field(default=2048, ge=1)
    eval_every: int = Field(default=1, ge=1)
    patience: int = Field(default=10, ge=1)  # evaluations without a better validation Recall@20 before stopping
    eval_batch_size: int = Field(default=1024, ge=1)  # users per scoring chunk
    threads: int | None = Field(default=None, ge=1)  # torch threads; None: all cores of this process
    device: Literal["auto", "cpu", "cuda"] = "auto"
    time_budget_minutes: float | None = Field(default=None, gt=0)  # stop a stage at the first evaluation past it
    max_epochs: int | None = Field(default=None, ge=1)  # a cap on every stage's epochs (smoke runs; 0 would train nothing)
    precision: Literal[PRECISIONS] = "fp32"  # bf16: DDRM's denoisers under autocast (ddrm.precision)

    def stage_epochs(self, stage_epochs: int | None) -> int:
        """A stage's epoch limit: its own setting (``model/ddrm.epochs``), else ``epochs``, capped at
        ``max_epochs``."""
        epochs = stage_epochs if stage_epochs is not None else self.epochs
        return epochs if self.max_epochs is None else min(epochs, self.max_epochs)


class DDRMConfig(Params):
    """DDRM hyperparameters; paper symbols in the comments (DESIGN §1, §7)."""

    enabled: Flag = True  # false: evaluate the model alone
    steps: int = Field(default=20, ge=1)  # T
    inference_multiplier: float = Field(default=1.0, ge=1)  # n, T' = round(n*T)
    inference_steps: int | None = Field(default=None, ge=0)  # T' override; 0 = mean of liked items, no denoiser
    noise_min: float = Field(default=1e-4, gt=0, lt=1)  # alpha_min
    noise_max: float = Field(default=1e-3, gt=0, lt=1)  # alpha_max
    noise_scale: float = Field(default=1e-4, gt=0, lt=1)  # s
    first_beta: float | None = Field(default=None, gt=0, lt=1)  # None: paper formula; 1e-5 = reference code
    bpr_weight: float = Field(default=0.6, ge=0, le=1)  # lambda
    reweight_power: float = Field(default=1.0, ge=0)  # gamma
    hidden_dims: tuple[PositiveInt, PositiveInt] = (100, 1000)  # MLP: in -> d2 -> d1 -> d2 -> d for (d1, d2)
    activation: Literal[tuple(ACTIVATIONS)] = "sigmoid"
    dropout: float = Field(default=0.5, ge=0, lt=1)  # input dropout on the noisy embedding
    step_emb_dim: int = Field(default=10, ge=2, multiple_of=2)
    denoiser: Literal["mlp", "transformer"] = "mlp"  # transformer: cond = query, step = key, x_t = value (Table 3)
    transformer_heads: int = Field(default=4, ge=1)  # attention heads; must divide model.dim
    transformer_tokens: int = Field(default=4, ge=2)  # tokens each input is projected to (1: constant attention)
    dynamic_scale: Flag = False  # training noise per embedding with s' ~ U(0, s]; inference uses s
    inference_start: Literal["mean", "noise"] = "mean"  # mean of liked items, or pure noise N(0, I)
    denoise_users: Flag = True  # false: item-only (no user denoiser)
    freeze_backend: Flag = True  # false: joint fine-tuning of the model's embeddings
    propagation_layers: int | None = Field(default=None, ge=0)  # None: the model's final embeddings; K: its ego
    #                                 embeddings propagated K layers with its pooling (reference code: MF 4, LightGCN 2, SGL 5)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    epochs: int | None = Field(default=None, ge=0)  # None: train.epochs
    patience: int | None = Field(default=None, ge=1)  # None: train.patience
    sampling: SAMPLING = "user"  # BPR positives: user-uniform (Alg. 1 / reference code) or per interaction

    @model_validator(mode="after")
    def _noise_bounds(self) -> "DDRMConfig":
        if self.noise_min > self.noise_max:
            raise ValueError(f"noise_min {self.noise_min} must be <= noise_max {self.noise_max}")
        return self

    @property
    def reverse_steps(self) -> int:
        """T' = inference_steps if set, else round(n*T) with halves rounded up (n=1.25, T=10 -> 13); the rule is
        :func:`ddrm.diffusion.schedule.reverse_step_count`."""
        from .diffusion.schedule import reverse_step_count  # local import: torch is not needed to read a config

        return reverse_step_count(self.steps, self.inference_multiplier, self.inference_steps)

    def settings(self) -> dict[str, Any]:
        """A disabled DDRM has one setting, ``enabled``: its other keys change nothing."""
        return super().settings() if self.enabled else {"enabled": False}


class Config(Params):
    """A whole run. Sections are validated one by one by :func:`config_from_dict`; built directly, ``model`` and
    ``denoise`` must be instances of their registered params classes."""

    data: DataConfig = DataConfig()
    model: ModelParams = Field(default_factory=lambda: _default_model())
    denoise: DenoiseParams = Field(default_factory=lambda: _default_denoise())
    ddrm: DDRMConfig = DDRMConfig()
    train: TrainConfig = TrainConfig()
    seed: int = Field(default=0, ge=0, lt=MAX_SEED)

    @model_validator(mode="after")
    def _sections_fit(self) -> "Config":
        from .registry import denoise_params, model_params

        if type(self.model) is not model_params(self.model.name):
            raise ConfigError(f"config key 'model': expected the params of model {self.model.name!r}")
        if type(self.denoise) is not denoise_params(self.denoise.name):
            raise ConfigError(f"config key 'denoise': expected the params of plug-in {self.denoise.name!r}")
        is_backend = isinstance(self.model, BackendParams)
        if self.ddrm.enabled and not is_backend:
            raise ConfigError(f"config key 'ddrm.enabled': value True is not allowed with model "
                              f"{self.model.name!r}, which exposes no embeddings(); set ddrm.enabled=false")
        if self.denoise.name != "none" and not is_backend:
            raise ConfigError(f"config key 'denoise.name': value {self.denoise.name!r} is not allowed with model "
                              f"{self.model.name!r}; loss-side plug-ins need a BPR backend (mf, lightgcn, sgl)")
        if self.ddrm.enabled and self.ddrm.denoiser == "transformer" and self.model.dim % self.ddrm.transformer_heads:
            raise ConfigError(f"config key 'ddrm.transformer_heads': value {self.ddrm.transformer_heads} is not "
                              f"allowed; expected an integer >= 1 that divides model.dim ({self.model.dim})")
        if getattr(self.model, "sparse_grad", False) and self.denoise.name == "deca":
            raise ConfigError("config key 'model.sparse_grad': value True is not allowed with denoise.name 'deca' "
                              "(DeCA trains dense extra models)")
        return self

    @property
    def final_stage(self) -> str:
        """The stage whose output a run reports: ``model`` (a standalone model), ``ddrm`` or ``backend``."""
        if not isinstance(self.model, BackendParams):
            return "model"
        return "ddrm" if self.ddrm.enabled else "backend"

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict of the settings that matter for this run (YAML/JSON-ready; tuples become lists)."""
        return _plain({**{name: getattr(self, name).settings() for name in SECTIONS}, "seed": self.seed})

    def to_flat_dict(self) -> dict[str, Any]:
        """``{"ddrm.steps": 20, ...}`` — the form used for MLflow params, ``runs.csv`` and ``--set``."""
        return flatten(self.to_dict())

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A new config with dotted overrides applied (validated). The model and plug-in sections carry only the
        keys that were set (not defaulted), so a switched ``model.name`` keeps what was chosen and takes the new
        model's own defaults for the rest."""
        nested = self.to_dict()
        for section in ("model", "denoise"):
            params = getattr(self, section)
            nested[section] = {k: v for k, v in nested[section].items() if k == "name" or k in params.model_fields_set}
        return config_from_dict(apply_overrides(nested, overrides))


def _default_model() -> ModelParams:
    from .registry import model_params

    return model_params("mf")()


def _default_denoise() -> DenoiseParams:
    from .registry import denoise_params

    return denoise_params("none")()


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _one_line(exc: ValidationError, cls: type[Params], section: str, owner: str = "") -> ConfigError:
    """pydantic's first error as one line naming the dotted key (``section.key``) and what is allowed."""
    error = exc.errors()[0]
    key = ".".join([section, *(str(part) for part in error["loc"] if not isinstance(part, int))])
    if error["type"] == "extra_forbidden":
        where = f" ({owner})" if owner else ""
        return ConfigError(f"unknown config key '{key}'; allowed in '{section}'{where}: {list(cls.model_fields)}")
    message = error["msg"]
    if error["type"] == "value_error":
        return ConfigError(f"config section '{section}': {message.removeprefix('Value error, ')}")
    message = message[0].lower() + message[1:]
    return ConfigError(f"config key '{key}': value {error.get('input')!r} is not allowed; {message}")


def _section(cls: type[Params], values: Any, section: str, owner: str = "") -> Params:
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section '{section}' must be a mapping, got {values!r}")
    try:
        return cls.model_validate(dict(values))
    except ValidationError as exc:
        raise _one_line(exc, cls, section, owner) from None


def config_from_dict(raw: Mapping[str, Any] | None) -> Config:
    """Validate a nested dict into a :class:`Config` (missing keys take defaults; an old-shape dict with a
    ``backend`` section is upgraded by :func:`ddrm.legacy.upgrade_config`)."""
    from .legacy import is_legacy, upgrade_config
    from .registry import denoise_params, model_params

    raw = dict(raw or {})
    if is_legacy(raw):
        raw = upgrade_config(raw)
    unknown = set(raw) - set(SECTIONS) - {"seed"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; allowed: {sorted(SECTIONS) + ['seed']}")
    model_raw = dict(raw.get("model") or {})
    model_name = model_raw.setdefault("name", "mf")
    denoise_raw = dict(raw.get("denoise") or {})
    denoise_name = denoise_raw.setdefault("name", "none")
    ddrm_raw = raw.get("ddrm") or {}
    if isinstance(ddrm_raw, Mapping) and "enabled" not in ddrm_raw:  # on by default where it can wrap the model
        ddrm_raw = {**ddrm_raw, "enabled": issubclass(model_params(model_name), BackendParams)}
    sections: dict[str, Any] = {
        "data": _section(DataConfig, raw.get("data") or {}, "data"),
        "model": _section(model_params(model_name), model_raw, "model", f"model {model_name!r}"),
        "denoise": _section(denoise_params(denoise_name), denoise_raw, "denoise", f"plug-in {denoise_name!r}"),
        "ddrm": _section(DDRMConfig, ddrm_raw, "ddrm"),
        "train": _section(TrainConfig, raw.get("train") or {}, "train"),
    }
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise ConfigError(f"config key 'seed': value {seed!r} is not allowed; expected an integer in [0, {MAX_SEED})")
    try:
        return Config(**sections, seed=seed)
    except ValidationError as exc:  # a ConfigError raised by a validator arrives wrapped
        cause = exc.errors()[0].get("ctx", {}).get("error")
        raise (cause if isinstance(cause, ConfigError) else ConfigError(str(exc).splitlines()[-1])) from None


def parse_value(text: str) -> Any:
    """A value written as text (``--set``, a logged MLflow param, a runs.csv cell) back to its value: YAML's
    reading (``20`` -> 20, ``[100, 1000]`` -> list, ``None``/``null`` -> None, ``True`` -> True), the text itself
    when YAML cannot read it. The one parser of logged strings."""
    if text in ("None", ""):
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if value.lower() not in ("nan", "inf", "-inf") else value
        except ValueError:
            return value
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """``"ddrm.steps=20"`` -> ``("ddrm.steps", 20)``; the value is parsed by :func:`parse_value`."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. ddrm.steps=20")
    key, _, raw_value = text.partition("=")
    return key.strip(), parse_value(raw_value.strip())


def apply_overrides(nested: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply dotted overrides to a nested dict (copy). Old key names are renamed first (:mod:`ddrm.legacy`). A
    changed ``model.name`` (``denoise.name``) keeps the section's keys the new model (plug-in) declares too and
    drops the others (one model's settings are not another's); a switch to a model DDRM cannot wrap also leaves
    ``ddrm.enabled`` to its default (off) unless the overrides set it. Unknown keys surface when the result is
    validated."""
    from .legacy import is_legacy, rename_flat_keys, upgrade_config

    nested = upgrade_config(nested) if is_legacy(nested) else nested
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in nested.items()}
    overrides = rename_flat_keys(overrides)
    for section in ("model", "denoise"):
        new_name = overrides.get(f"{section}.name")
        if new_name is not None and new_name != (out.get(section) or {}).get("name"):
            out[section] = {k: v for k, v in (out.get(section) or {}).items() if k in _declared(section, new_name)}
            if section == "model" and isinstance(out.get("ddrm"), Mapping) and not _wraps(new_name):
                out["ddrm"] = {k: v for k, v in out["ddrm"].items() if k != "enabled"}
    for key, value in overrides.items():
        if key == "seed":
            out["seed"] = value
            continue
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"unknown config key '{key}'; keys are 'seed' or '<section>.<key>' with a section "
                              f"in {list(SECTIONS)}")
        out[section] = dict(out.get(section) or {})
        out[section][name] = value
    return out


def _declared(section: str, name: Any) -> set[str]:
    """The keys model (plug-in) ``name`` declares, without ``name``; none for an unknown name."""
    from .registry import denoise_names, denoise_params, model_names, model_params

    names, params = (model_names, model_params) if section == "model" else (denoise_names, denoise_params)
    return set(params(name).model_fields) - {"name"} if name in names() else set()


def _wraps(model_name: Any) -> bool:
    """Whether DDRM can wrap model ``model_name`` (a backend); an unknown name is left to validation."""
    from .registry import model_names, model_params

    return model_name not in model_names() or issubclass(model_params(model_name), BackendParams)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Config from an optional YAML file (either shape) plus dotted overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping with sections {list(SECTIONS)}")
    return config_from_dict(apply_overrides(raw, overrides or {}))
