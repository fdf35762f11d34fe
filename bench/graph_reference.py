"""The LightGCN / SGL graph propagation as it was before the fused one, kept as the one reference that
``bench/graph_epoch.py`` times and ``tests/test_graph_propagation.py`` checks the shipped code against bit for bit.

- :func:`int64_csr`: the CSR copy with int64 indices (the CPU product converts them on every call);
- :func:`reference_propagate`: the layer loop under autograd (``ddrm.backends.base.propagate``'s generic path,
  which any ``graph @ x`` operator without a fused ``propagate`` still takes), one node per product;
- mixins over a shipped backend class (:func:`reference_class`): :class:`Int64CSR` (int64 CSR copies),
  :class:`LayerLoop` (the layer loop) and :class:`FullThenIndex` (the batch's rows indexed out of the full
  propagation, for BPR and for SGL's two views).
"""

from __future__ import annotations

import warnings

import torch

from ddrm.backends.base import Backend, propagate
from ddrm.backends.lightgcn import SymmetricSpMM
from ddrm.backends.sgl import info_nce


def int64_csr(graph: torch.Tensor) -> torch.Tensor:
    """Sparse COO ``(N, N)`` -> CSR as it was built before: int64 indices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return graph.coalesce().to_sparse_csr()


class ProductOnly:
    """``A @ x`` one product at a time (``SymmetricSpMM``'s ``@``: one autograd node per product, backward
    ``A @ grad``), with no ``propagate`` of its own, so :func:`ddrm.backends.base.propagate` runs its layer loop."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.operator = SymmetricSpMM(matrix)

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        return self.operator @ dense


def reference_propagate(matrix: torch.Tensor, user_emb: torch.Tensor, item_emb: torch.Tensor, layers: int,
                        pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The old layer loop over ``matrix`` (``(U+I, U+I)``): ego ``(U, d)``, ``(I, d)`` -> pooled ``(U, d)``,
    ``(I, d)`` (under autograd: one node per product, ``F.normalize``, a running sum, slices)."""
    return propagate(ProductOnly(matrix), user_emb, item_emb, layers, pooling)


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
