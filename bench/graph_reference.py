"""The LightGCN / SGL graph propagation as it was before the fused one, kept as the one reference that
``bench/graph_epoch.py`` times and ``tests/test_graph_propagation.py`` checks the shipped code against bit for bit.

- :func:`int64_csr`: the CSR copy with int64 indices (the CPU product converts them on every call);
- :class:`ReferenceSpMM` / :func:`reference_propagate`: the layer loop under autograd, one node per product,
  ``F.normalize``, a running sum, slices; ``(U, d)``, ``(I, d)`` out;
- mixins over a shipped backend class (:func:`reference_class`): :class:`Int64CSR` (int64 CSR copies),
  :class:`LayerLoop` (the layer loop) and :class:`FullThenIndex` (the batch's rows indexed out of the full
  propagation, for BPR and for SGL's two views).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ddrm.backends.base import Backend
from ddrm.backends.sgl import info_nce


def int64_csr(graph: torch.Tensor) -> torch.Tensor:
    """Sparse COO ``(N, N)`` -> CSR as it was built before: int64 indices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return graph.coalesce().to_sparse_csr()


class ReferenceSpMM(torch.autograd.Function):
    """``A @ x`` with backward ``A @ grad`` (A symmetric): one autograd node per product."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.matrix = matrix
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, ctx.matrix @ grad.contiguous()


def reference_propagate(matrix: torch.Tensor, user_emb: torch.Tensor, item_emb: torch.Tensor, layers: int,
                        pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The old layer loop over ``matrix`` (``(U+I, U+I)``): ego ``(U, d)``, ``(I, d)`` -> pooled ``(U, d)``,
    ``(I, d)``; without grad each product is a plain ``matrix @ x`` (the same values)."""
    current = torch.cat([user_emb, item_emb])
    total = current
    for _ in range(layers):
        grad = current.requires_grad and torch.is_grad_enabled()
        current = ReferenceSpMM.apply(matrix, current) if grad else matrix @ current
        if pooling == "normalized_sum":
            current = nn.functional.normalize(current, dim=1)
        total = total + current
    if pooling == "mean":
        total = total / (layers + 1)
    return total[:user_emb.shape[0]], total[user_emb.shape[0]:]


class Int64CSR:
    """Mixin: CSR copies with int64 indices (cached per source buffer, as ``LightGCN.csr``)."""

    def csr(self, name: str) -> torch.Tensor:
        source = getattr(self, name)
        cached = self._csr_cache.get(name)
        if cached is None or cached[0] is not source:
            cached = (source, int64_csr(source))
            self._csr_cache[name] = cached
        return cached[1]


class FullThenIndex:
    """Mixin: the batch's rows indexed out of the full propagation (BPR and, for SGL, both views)."""

    def batch_embeddings(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        return Backend.batch_embeddings(self, users, pos, neg)

    def ssl_loss(self, users: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        users1, items1 = self.propagate_on("view1")
        users2, items2 = self.propagate_on("view2")
        u, i = torch.unique(users), torch.unique(pos)
        tau = self.config.ssl_temperature
        return info_nce(users1[u], users2[u], tau) + info_nce(items1[i], items2[i], tau)


class LayerLoop(FullThenIndex):
    """Mixin: the old layer loop under autograd."""

    def propagate_on(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return reference_propagate(self.csr(name), self.user_emb.weight, self.item_emb.weight, self.config.layers,
                                   self.config.pooling)


def reference_class(base: type, mixins: tuple[type, ...] = (Int64CSR, LayerLoop)) -> type:
    """``base`` (LightGCN, SGL or a subclass) with ``mixins`` in front: by default the code as it was."""
    return type(f"Reference{base.__name__}", (*mixins, base), {}) if mixins else base
