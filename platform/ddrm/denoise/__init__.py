"""Loss-side denoising plug-ins for any BPR backend (``denoise.name``): how a batch's per-triple BPR losses are
reduced to the training loss. ``none`` is the plain mean; :mod:`.tce` drops the largest losses, :mod:`.rce`
reweights by the predicted score, :mod:`.deca` replaces the BPR term by the cross-model-agreement ELBO (with its
own helper models). Each is one file declaring its params and registering itself (:mod:`ddrm.registry`).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..params import BackendParams, DenoiseParams
from ..registry import get_denoise, register_denoise


class NoDenoiseParams(DenoiseParams):
    name: Literal["none"] = "none"


register_denoise("none", NoDenoiseParams)(nn.Identity)  # never built: ``none`` is the plain mean


def build_loss_rule(denoise: DenoiseParams | None, model: BackendParams, n_users: int,
                    n_items: int) -> nn.Module | None:
    """The plug-in ``denoise`` names, or None for ``none`` (the plain mean).

    A plug-in is called as ``rule(losses (B,), pos_scores (B,), neg_scores (B,), users, pos, neg)`` and returns
    the batch's data term; ``model`` and ``n_users``/``n_items`` size the helper models of plug-ins that have them.
    """
    if denoise is None or denoise.name == "none":
        return None
    return get_denoise(denoise.name)(denoise, model, n_users, n_items)
