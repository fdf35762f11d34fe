"""Loss-side denoising plug-ins for any backend (``backend.denoise``): how a batch's per-triple BPR
losses are reduced to the training loss. ``none`` is the plain mean; :mod:`.tce` drops the largest losses,
:mod:`.rce` reweights by the predicted score,
:mod:`.deca` replaces the BPR term by the cross-model-agreement ELBO (with its own helper models). Each is one file that registers itself here.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

_RULES: dict[str, Callable[..., nn.Module]] = {}
DENOISERS = ("none", "tce", "rce", "deca")  # the values ``backend.denoise`` accepts


def register_rule(name: str):
    def decorate(cls):
        _RULES[name] = cls
        return cls

    return decorate


def build_loss_rule(config, n_users: int = 0, n_items: int = 0) -> nn.Module | None:
    """The plug-in named by ``config.denoise`` (a :class:`~ddrm.config.BackendConfig`), or None for ``none``.

    A plug-in is called as ``rule(losses (B,), pos_scores (B,), neg_scores (B,), users, pos, neg)`` and
    returns the batch's data term; ``n_users``/``n_items`` size the helper models of plug-ins that have them.
    """
    from . import deca, rce, tce  # noqa: F401  (register)

    if config.denoise == "none":
        return None
    return _RULES[config.denoise](config, n_users, n_items)
