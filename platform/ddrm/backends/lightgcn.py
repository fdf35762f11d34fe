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
the graph (int32 indices, which the CPU product uses as they are), several times faster on CPU than autograd
through a COO ``sparse.mm``. The whole propagation is one autograd node (:class:`_PropagationFunction`) whose
backward is written out: the same operations as autograd through the layer loop, in the same order, so the same
bits, with fewer full ``(U+I, d)`` temporaries. The loss only pools the batch's nodes
(:meth:`LightGCN.batch_embeddings`): every product stays full, but the last layer's normalisation, the pooling
and their gradients run on those rows only; the values and gradients are those of indexing the full result
(``tests/test_graph_propagation.py`` checks them bit for bit, ``bench/graph_epoch.py`` times both).
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

EPS = 1e-12  # F.normalize's default eps, the clamp of the row norm


class _SymmetricSpMMFunction(torch.autograd.Function):
    """``A @ x`` for a symmetric sparse ``A`` (no gradient for ``A``): the backward is ``A @ grad``."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.matrix = matrix
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, ctx.matrix @ grad.contiguous()


def _rows_of(tensor: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``tensor[rows]`` (a copy), or ``tensor`` itself when ``rows`` is None."""
    return tensor if rows is None else tensor.index_select(0, rows)


def _normalize_forward(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F.normalize(p, dim=1)`` as its ops compute it: ``(y, norm, denom)``, ``(M, d)``, ``(M, 1)``, ``(M, 1)``."""
    norm = p.norm(2.0, 1, keepdim=True)
    denom = norm.clamp_min(EPS)
    return p / denom, norm, denom


def _normalize_backward(grad: torch.Tensor, y: torch.Tensor, norm: torch.Tensor,
                        denom: torch.Tensor) -> torch.Tensor:
    """The gradient w.r.t. ``p`` of ``y = F.normalize(p, dim=1)``, op for op what autograd computes, ``(M, d)``.

    Autograd's terms: ``x / denom`` (div, numerator) ``grad / denom``; the expanded denominator
    ``-grad * ((p / denom) / denom)`` summed over the row (``p / denom`` is ``y`` bit for bit, and ``-(a * b)``
    equals ``(-a) * b`` exactly); ``clamp_min``: that sum where ``norm >= eps``, else 0; the norm:
    ``sum * (p / norm)``, 0 where ``norm == 0`` (where the sum is nonzero, ``norm >= eps`` and ``p / norm`` is ``y``;
    elsewhere the product is a zero of ``y``'s sign either way).
    """
    out = grad / denom
    scratch = y / denom
    scratch.mul_(grad)
    row_sum = scratch.sum(1, keepdim=True).neg_()
    grad_norm = torch.where(norm >= EPS, row_sum, 0.0)
    torch.mul(y, grad_norm, out=scratch)
    zero = norm == 0
    if bool(zero.any()):
        scratch.masked_fill_(zero, 0.0)
    return out.add_(scratch)


class _PropagationFunction(torch.autograd.Function):
    """:func:`.base.propagate` over a symmetric sparse ``A`` as one autograd node, with a hand-written backward.

    Computes what the layer loop computes (same ops, same order, so the same bits) but keeps only what its
    backward needs and computes that backward directly: per layer ``A @ grad`` (A is symmetric), the normalize
    Jacobian, the pooling's gradient added in place. ``rows``: only those nodes' pooled embeddings are returned
    (the last layer's normalize and the pooling run on them only; every product stays full). Output:
    ``(N, d)`` pooled embeddings (``rows`` None) or ``(R, d)``; the gradients go to the two ego tables.
    """

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, layers: int, pooling: str,  # type: ignore[override]
                rows: torch.Tensor | None, user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        ego = torch.cat([user_emb, item_emb])
        total = _rows_of(ego, rows)
        current, saved = ego, []
        for layer in range(1, layers + 1):
            current = matrix @ current
            if layer == layers:
                current = _rows_of(current, rows)
            if pooling == "normalized_sum":
                current, norm, denom = _normalize_forward(current)
                saved += [current, norm, denom]
            term = current if layer == layers else _rows_of(current, rows)
            total = total + term if layer == 1 else total.add_(term)
        if pooling == "mean":
            total = total / (layers + 1) if layers == 0 else total.div_(layers + 1)
        ctx.matrix, ctx.layers, ctx.pooling, ctx.rows = matrix, layers, pooling, rows
        ctx.n_users, ctx.shape = user_emb.shape[0], ego.shape
        ctx.save_for_backward(*saved)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        matrix, layers, rows = ctx.matrix, ctx.layers, ctx.rows
        saved = ctx.saved_tensors
        pooled = grad / (layers + 1) if ctx.pooling == "mean" else grad  # the gradient of every pooled term
        current = pooled  # the gradient w.r.t. layer k's output (at ``rows`` for the last layer)
        for layer in range(layers, 0, -1):
            if ctx.pooling == "normalized_sum":
                current = _normalize_backward(current, *saved[3 * layer - 3:3 * layer])
            if layer == layers and rows is not None:
                current = grad.new_zeros(ctx.shape).index_copy_(0, rows, current)
            current = matrix @ current.contiguous()
            current = current.add_(pooled) if rows is None else current.index_add_(0, rows, pooled)
        if layers == 0:
            current = pooled if rows is None else grad.new_zeros(ctx.shape).index_add_(0, rows, pooled)
        return None, None, None, None, current[:ctx.n_users], current[ctx.n_users:]


class SymmetricSpMM:
    """A symmetric sparse matrix usable as ``graph @ x`` in :func:`propagate`, differentiable in ``x``.

    ``matrix`` is a sparse CSR tensor (see :func:`to_csr`); symmetry is the caller's promise
    (``D^-1/2 A D^-1/2`` of a bipartite graph, also after symmetric edge dropout). :func:`.base.propagate`
    uses :meth:`propagate` (one autograd node for the whole propagation) when the operator has it.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        if dense.requires_grad and torch.is_grad_enabled():
            return _SymmetricSpMMFunction.apply(self.matrix, dense)
        return self.matrix @ dense

    def propagate(self, user_emb: torch.Tensor, item_emb: torch.Tensor, layers: int,
                  pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`.base.propagate` of ``(U, d)``, ``(I, d)`` ego embeddings: pooled ``(U, d)``, ``(I, d)``."""
        pooled = _PropagationFunction.apply(self.matrix, layers, pooling, None, user_emb, item_emb)
        return pooled.split([user_emb.shape[0], item_emb.shape[0]])

    def propagate_rows(self, user_emb: torch.Tensor, item_emb: torch.Tensor, layers: int, pooling: str,
                       rows: torch.Tensor) -> torch.Tensor:
        """The pooled embeddings of nodes ``rows`` only (``(R,)`` long, users ``0..U-1``, items ``U + i``; no
        repeats), ``(R, d)``: the same values as :meth:`propagate`'s rows, with less work on the others."""
        return _PropagationFunction.apply(self.matrix, layers, pooling, rows, user_emb, item_emb)


def to_csr(graph: torch.Tensor, small_indices: bool = False) -> torch.Tensor:
    """Sparse COO -> sparse CSR (same values); ``small_indices``: int32 indices where they fit, else int64.

    The CPU product hands MKL 32-bit indices (it converts 64-bit ones on every call), so int32 indices give the
    same product without two index copies per call (:meth:`LightGCN.csr`). Other callers keep int64 indices
    (AdaGCL does index arithmetic on them).
    """
    import warnings

    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = graph.coalesce().to_sparse_csr()
        if small_indices and max(csr.shape[0], csr._nnz()) < 2 ** 31 - 1:
            csr = torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32),
                                          csr.values(), csr.shape)
    return csr


class LightGCNParams(BackendParams):
    """LightGCN's settings: the shared backend keys with the paper's 3 layers."""

    name: Literal["lightgcn"] = "lightgcn"
    layers: int = Field(default=3, ge=0)


# what pooling only the batch's rows stands in for (:meth:`LightGCN.pools_rows`)
_POOLING_METHODS = ("train_embeddings", "embeddings", "propagate_on")


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
        """The sparse COO buffer ``name`` (``graph``, or SGL's ``view1``/``view2``) as CSR (int32 indices), cached."""
        source = getattr(self, name)
        cached = self._csr_cache.get(name)
        if cached is None or cached[0] is not source:
            cached = (source, to_csr(source, small_indices=True))
            self._csr_cache[name] = cached
        return cached[1]

    def propagate_on(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate the ego embeddings over the symmetric normalised adjacency buffer ``name``."""
        return propagate(SymmetricSpMM(self.csr(name)), self.user_emb.weight, self.item_emb.weight,
                         self.config.layers, self.config.pooling)

    def propagate_rows(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``rows`` (node ids, no repeats) of :meth:`propagate_on` ``name`` (users, then items): ``(R, d)``."""
        return SymmetricSpMM(self.csr(name)).propagate_rows(self.user_emb.weight, self.item_emb.weight,
                                                            self.config.layers, self.config.pooling, rows)

    def pools_rows(self) -> bool:
        """Whether the loss may pool only the batch's rows (:meth:`propagate_rows`): not when a subclass computes
        its own propagation or training embeddings (then the loss indexes those, as the base does)."""
        return all(getattr(type(self), name) is getattr(LightGCN, name) for name in _POOLING_METHODS)

    def batch_embeddings(self, users: torch.Tensor, pos: torch.Tensor,
                         neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's propagated rows, ``(B, d)`` each: only the batch's nodes are pooled (see the module docstring).

        Three separate gathers, as ``all_users[users]``, ``all_items[pos]``, ``all_items[neg]``, so that their
        gradients add up in the same order.
        """
        if not self.pools_rows():
            return super().batch_embeddings(users, pos, neg)
        n = len(users)
        nodes = torch.cat([users, pos + self.n_users, neg + self.n_users])
        rows, where = torch.unique(nodes, return_inverse=True)
        pooled = self.propagate_rows("graph", rows)
        return pooled[where[:n]], pooled[where[n:2 * n]], pooled[where[2 * n:]]

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
