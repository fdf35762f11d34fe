"""The one mapping from the old config shape to the new one.

Before the "each model owns its config" change a config had the sections ``data``, ``backend``, ``ddrm``,
``train``, ``model`` and ``seed``: ``backend.*`` held every backend's keys and the loss plug-in's
(``backend.denoise``, ``backend.tce_max_rate``, ...), ``model.*`` every standalone model's keys with
``model.name: null`` meaning "backend + DDRM". Tracking stores, committed ``runs.csv`` files, ``best_config.yaml``
files and YAML specs written then still hold that shape; :func:`upgrade_config` (nested) and
:func:`rename_flat_keys` (dotted keys) turn them into ``{data, train, model, denoise, ddrm, seed}``. Used by
``config_from_dict`` / ``load_config`` (so ``ddrm train --config old.yaml`` works), ``--set``, ``--import-runs``
and ``--reuse-from``. Keys that did not apply to the old run's model are dropped: they changed nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

# old dotted key -> new dotted key (the loss plug-in's keys move to their own section)
DENOISE_RENAMES = {"backend.denoise": "denoise.name", "backend.tce_max_rate": "denoise.max_rate",
                   "backend.tce_num_gradual": "denoise.num_gradual", "backend.rce_beta": "denoise.beta",
                   "backend.deca_c1": "denoise.c1", "backend.deca_c2": "denoise.c2",
                   "backend.deca_alpha": "denoise.alpha"}
DENOISE_KEYS_OF = {"none": (), "tce": ("max_rate", "num_gradual"), "rce": ("beta",), "deca": ("c1", "c2", "alpha")}


def is_legacy(nested: Mapping[str, Any]) -> bool:
    """Whether a nested config dict has the old shape (a ``backend`` section)."""
    return "backend" in nested


def rename_flat_keys(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Old dotted keys renamed (``backend.lr`` -> ``model.lr``, ``backend.denoise`` -> ``denoise.name``,
    ``backend.tce_max_rate`` -> ``denoise.max_rate``, ...); new keys pass unchanged."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key in DENOISE_RENAMES:
            key = DENOISE_RENAMES[key]
        elif key.startswith("backend."):
            key = "model." + key.removeprefix("backend.")
        out[key] = value
    return out


def _keep_own(section: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``section`` restricted to the keys model ``name`` declares, without unset (None) defaults."""
    from .registry import model_params

    fields = model_params(name).model_fields
    return {k: v for k, v in section.items() if k in fields and not (v is None and k in ("layers", "pooling"))}


def upgrade_config(nested: Mapping[str, Any]) -> dict[str, Any]:
    """An old-shape nested config -> the new shape (a new-shape dict is returned as a copy)."""
    if not is_legacy(nested):
        return dict(nested)
    backend = dict(nested.get("backend") or {})
    model = dict(nested.get("model") or {})
    out = {k: v for k, v in nested.items() if k not in ("backend", "model")}
    if model.get("name"):  # a standalone model: the backend section and DDRM never ran
        out["model"] = _keep_own(model, model["name"])
        out["denoise"] = {"name": "none"}
        out["ddrm"] = {**(nested.get("ddrm") or {}), "enabled": False}
        return out
    name = backend.get("name", "mf")
    denoise_name = backend.get("denoise", "none")
    flat = rename_flat_keys({f"backend.{k}": v for k, v in backend.items()})
    out["model"] = _keep_own({k.removeprefix("model."): v for k, v in flat.items() if k.startswith("model.")}, name)
    out["model"]["name"] = name
    out["denoise"] = {"name": denoise_name, **{k: flat[f"denoise.{k}"] for k in DENOISE_KEYS_OF.get(denoise_name, ())
                                               if f"denoise.{k}" in flat}}
    return out


def upgrade_flat(flat: Mapping[str, Any]) -> dict[str, Any]:
    """An old-shape flat config (logged MLflow params, a runs.csv row's config columns) -> new-shape nested."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return upgrade_config(nested)


def upgrade_params(params: Mapping[str, str]) -> dict[str, str]:
    """Logged MLflow params (strings) of an old-shape run -> the params the same run logs today (the validated
    config's flat dict, values as strings); new-shape params are returned unchanged. Params that no longer
    validate keep their values under the renamed keys."""
    from .config import config_from_dict, parse_value
    from .errors import ConfigError

    if "backend.name" not in params:
        return dict(params)
    try:
        config = config_from_dict(upgrade_flat({k: parse_value(v) for k, v in params.items()}))
    except ConfigError:
        return {k: str(v) for k, v in rename_flat_keys(params).items()}
    return {k: str(v) for k, v in config.to_flat_dict().items()}
