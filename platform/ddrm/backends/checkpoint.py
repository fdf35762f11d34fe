"""Load the reference code's pretrained backend state dicts (ego / layer-0 embeddings).

The official DDRM code (Polaris-JZ/DDRM) ships one checkpoint per backend, each a plain float32
state dict (``torch.save`` of an ``OrderedDict``) holding only the two ego embedding tables, under
backend-specific key names:

===========  ==========================  ==========================
layout       user table                  item table
===========  ==========================  ==========================
MF / ddrm    ``user_emb.weight``         ``item_emb.weight``
LightGCN     ``embedding_user.weight``   ``embedding_item.weight``
SGL          ``users_feature.weight``    ``items_feature.weight``
===========  ==========================  ==========================

The MF layout is also this package's own backend ``state_dict()`` (the propagation graph is a
non-persistent buffer), so a backend saved with ``torch.save(backend.state_dict(), path)`` loads too.
Any layout loads into any backend: the checkpoint provides ego embeddings, and the backend's
``layers`` / ``pooling`` decide how they are propagated (e.g. the reference SGL checkpoint is meant
for ``pooling: normalized_sum``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from ..errors import ConfigError

KEY_LAYOUTS: dict[str, tuple[str, str]] = {
    "mf": ("user_emb.weight", "item_emb.weight"),
    "lightgcn": ("embedding_user.weight", "embedding_item.weight"),
    "sgl": ("users_feature.weight", "items_feature.weight"),
}


def _expected_keys() -> str:
    return "; ".join(f"{name}: {list(keys)}" for name, keys in KEY_LAYOUTS.items())


def read_state_dict(path: str | os.PathLike) -> Mapping[str, Any]:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with errors as :class:`ConfigError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"backend checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle/zip/torch errors: report them uniformly)
        reason = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise ConfigError(f"backend checkpoint {path!r} is not a readable torch state dict "
                          f"({type(exc).__name__}: {reason}); expected a torch.save'd dict with one of the "
                          f"key layouts {_expected_keys()}") from None
    if not isinstance(state, Mapping):
        raise ConfigError(f"backend checkpoint {path!r} holds a {type(state).__name__}, expected a state dict "
                          f"with one of the key layouts {_expected_keys()}")
    return state


def read_reference_embeddings(path: str | os.PathLike, n_users: int, n_items: int,
                              dim: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(user_emb (U, d), item_emb (I, d), layout name)`` from a reference checkpoint.

    Raises :class:`ConfigError` naming the file and the keys found / expected when the file is missing
    or unreadable, no known key layout is present, or the shapes differ from ``(n_users, dim)`` /
    ``(n_items, dim)``.
    """
    path = os.fspath(path)
    state = read_state_dict(path)
    found = sorted(str(k) for k in state)
    matches = [name for name, keys in KEY_LAYOUTS.items() if all(k in state for k in keys)]
    if not matches:
        raise ConfigError(f"backend checkpoint {path!r} has keys {found}; expected one of the layouts "
                          f"{_expected_keys()}")
    layout = matches[0]
    user_key, item_key = KEY_LAYOUTS[layout]
    tensors = []
    for key, rows, what in ((user_key, n_users, "users"), (item_key, n_items, "items")):
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"backend checkpoint {path!r}: key {key!r} holds a {type(value).__name__}, "
                              f"expected a tensor of shape {(rows, dim)}")
        if tuple(value.shape) != (rows, dim):
            raise ConfigError(f"backend checkpoint {path!r}: key {key!r} has shape {tuple(value.shape)}, expected "
                              f"{(rows, dim)} (n_{what}, backend.dim) for this dataset and config; keys found: "
                              f"{ {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)} }")
        if not value.is_floating_point():
            raise ConfigError(f"backend checkpoint {path!r}: key {key!r} has dtype {value.dtype}, "
                              "expected a float tensor")
        tensors.append(value.detach().float())
    return tensors[0], tensors[1], layout


@torch.no_grad()
def load_ego_embeddings(backend: torch.nn.Module, path: str | os.PathLike) -> str:
    """Copy a reference checkpoint's ego embeddings into ``backend.user_emb`` / ``backend.item_emb``.

    Returns the key layout that was found (``mf`` | ``lightgcn`` | ``sgl``).
    """
    user_emb, item_emb, layout = read_reference_embeddings(path, backend.n_users, backend.n_items,
                                                           backend.config.dim)
    backend.user_emb.weight.copy_(user_emb)
    backend.item_emb.weight.copy_(item_emb)
    return layout
