"""LightGCN (He et al., SIGIR 2020): BPR on embeddings propagated over ``D^-1/2 A D^-1/2``.

``e^(k+1) = Â e^(k)`` for k = 0..K-1 with K = ``backend.layers`` (one sparse-dense product per layer),
pooled over layers 0..K by ``backend.pooling`` (``mean``: LightGCN; ``normalized_sum``: the reference
DDRM code's SGL, see :func:`.base.propagate`). The loss is BPR on the *propagated* embeddings plus the
base's L2 on the batch's ego embeddings (``weight_decay * 0.5 * |e^(0)|^2 / B``, LightGCN's regulariser).

**Layer count.** ``backend.layers`` left unset means :attr:`LightGCN.default_layers` = 3, the paper
setting (DESIGN §4: 3 layers, lr 1e-3, decay 1e-4, batch 2048); ``layers: 0`` is plain MF. The
reference DDRM code scores its LightGCN checkpoint with 2 layers.

``backend.checkpoint`` loads the reference code's pretrained ego embeddings (see :mod:`.checkpoint`);
with 3 layers and mean pooling the released LightGCN checkpoint gives the paper's LightGCN row on
``ml-1m_noisy`` (test R@20 .1193).

Speed: training propagates once per batch, forward and backward. The adjacency is symmetric, so the
backward product is again ``Â @ grad``; :class:`SymmetricSpMM` does both products with a CSR copy of
the graph, which is several times faster on CPU than autograd through a COO ``sparse.mm``.
"""

from __future__ import annotations

from typing import Literal

import scipy.sparse as sp
import torch

from pydantic import Field

from ..params import BackendParams, DenoiseParams
from ..registry import register_model
from .base import Backend, propagate
from .checkpoint import load_ego_embeddings

class _SymmetricSpMMFunction(torch.autograd.Function):
    """``A @ x`` for a symmetric sparse ``A`` (no gradient for ``A``): the backward is ``A @ grad``."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.matrix = matrix
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, ctx.matrix @ grad.contiguous()


class SymmetricSpMM:
    """A symmetric sparse matrix usable as ``graph @ x`` in :func:`propagate`, differentiable in ``x``.

    ``matrix`` is a sparse CSR tensor (see :func:`to_csr`); symmetry is the caller's promise
    (``D^-1/2 A D^-1/2`` of a bipartite graph, also after symmetric edge dropout).
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        if dense.requires_grad and torch.is_grad_enabled():
            return _SymmetricSpMMFunction.apply(self.matrix, dense)
        return self.matrix @ dense


def to_csr(graph: torch.Tensor) -> torch.Tensor:
    """Sparse COO -> sparse CSR (same values)."""
    import warnings

    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return graph.coalesce().to_sparse_csr()


class LightGCNParams(BackendParams):
    """LightGCN's settings: the shared backend keys with the paper's 3 layers."""

    name: Literal["lightgcn"] = "lightgcn"
    layers: int = Field(default=3, ge=0)


@register_model("lightgcn", LightGCNParams)
class LightGCN(Backend):
    """LightGCN with ``backend.layers`` layers and ``backend.pooling`` pooling (see the module docstring)."""


    def __init__(self, config: LightGCNParams, n_users: int, n_items: int, train: sp.csr_matrix,
                 denoise: DenoiseParams | None = None) -> None:
        super().__init__(config, n_users, n_items, train, denoise)
        # CSR copies of sparse COO buffers, built on first use: {buffer name: (source COO, CSR)}.
        # Not buffers themselves — CSR tensors cannot be deep-copied or pickled — so they are
        # rebuilt after .to(device) (the source identity changes) and dropped from pickled state.
        self._csr_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_csr_cache"] = {}
        return state

    def csr(self, name: str) -> torch.Tensor:
        """The sparse COO buffer ``name`` (``graph``, or SGL's ``view1``/``view2``) as CSR, cached."""
        source = getattr(self, name)
        cached = self._csr_cache.get(name)
        if cached is None or cached[0] is not source:
            cached = (source, to_csr(source))
            self._csr_cache[name] = cached
        return cached[1]

    def propagate_on(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate the ego embeddings over the symmetric normalised adjacency buffer ``name``."""
        return propagate(SymmetricSpMM(self.csr(name)), self.user_emb.weight, self.item_emb.weight,
                         self.config.layers, self.config.pooling)

    def graph_operator(self) -> "SymmetricSpMM":
        return SymmetricSpMM(self.csr("graph"))

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final embeddings: full-graph propagation, pooled over layers 0..K."""
        return self.propagate_on("graph")

    def train_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss uses the propagated embeddings (the base's L2 stays on the ego embeddings)."""
        return self.embeddings()

    def load_checkpoint(self, path: str) -> None:
        """Load ego embeddings from a reference state dict (any layout of :mod:`.checkpoint`)."""
        load_ego_embeddings(self, path)
