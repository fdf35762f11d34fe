"""SGL-ED (Wu et al., SIGIR 2021): LightGCN + a contrastive loss between two edge-dropout views.

Each epoch (:meth:`SGL.start_epoch`, with the train loop's ``torch.Generator`` — deterministic) two views
of the training graph are drawn: every user-item training edge is kept independently with probability
``1 - backend.ssl_ratio`` per view, and each view's adjacency is re-normalised symmetrically,
``D'^-1/2 A' D'^-1/2`` with the degrees of the dropped graph (no 1/keep rescaling).

Loss per BPR batch::

    BPR(full-graph propagation) + ssl_reg * (InfoNCE_users + InfoNCE_items) + L2(ego embeddings)

InfoNCE is computed over the batch's *unique* users (and, separately, its unique positive items, as in
SGL): ``z' , z''`` = the node's propagated embedding in view 1 / view 2, cosine similarity, temperature
``tau = backend.ssl_temperature``, positives = the same node in the other view, negatives = the other
unique batch nodes in the other view; ``-log softmax`` averaged over the unique nodes. (The SGL
paper sums over the batch; BPR here is a batch *mean*, so the contrastive term is a mean too, which
keeps the ratio between the two terms the paper's.) Only those nodes' view embeddings are pooled
(:meth:`.LightGCN.propagate_rows`: the same values as indexing the full propagation).

Final embeddings = full-graph propagation with ``backend.pooling`` (no dropout). As for LightGCN, ``backend.layers``
left unset means 3, the paper setting. Defaults from DESIGN §4: ``ssl_ratio`` 0.1, ``ssl_temperature`` 0.2, ``ssl_reg`` 0.1.

**Pooling.** ``backend.pooling`` left unset means ``normalized_sum``, the reference DDRM code's SGL (its
checkpoint reproduces .1269 only so). It also matters for training: measured on ``ml-1m_noisy`` (seed 0,
lr 1e-3, batch 2048), with ``mean`` pooling the contrastive term holds the BPR loss at 0.693 for the first
160 batches and validation R@20 at .0134 after 3 epochs (LightGCN alone: .057 after one), whereas with
``normalized_sum`` the BPR loss is 0.26 after 80 batches.

**Contrastive weight.** The default ``ssl_reg`` 0.1 is the SGL paper's; on ``ml-1m_noisy`` it holds validation
R@20 near popularity level, and 5-epoch probes rank 0.001 > 0.01 > 0.1 (docs/RESULTS.md), so the ML-1M
specs set 0.01.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from pydantic import Field

from ..params import POOLING, BackendParams, DenoiseParams
from ..registry import register_model
from .lightgcn import LightGCN


def dropped_adjacency(users: torch.Tensor, items: torch.Tensor, keep: torch.Tensor, n_users: int,
                      n_items: int) -> torch.Tensor:
    """Symmetric-normalised bipartite adjacency of the kept training edges, sparse COO ``(U+I, U+I)``.

    users, items: (E,) long, the training edges; keep: (E,) bool.
    """
    u, i = users[keep], items[keep]
    n = n_users + n_items
    deg_u = torch.bincount(u, minlength=n_users).float()
    deg_i = torch.bincount(i, minlength=n_items).float()
    values = (deg_u[u] * deg_i[i]).rsqrt()  # every kept edge has degree >= 1 at both ends
    rows = torch.cat([u, i + n_users])
    cols = torch.cat([i + n_users, u])
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([values, values]), (n, n),
                                   check_invariants=False).coalesce()


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE between row-aligned ``(B, d)`` views: cosine similarity, in-batch negatives."""
    z1 = nn.functional.normalize(view1, dim=1)
    z2 = nn.functional.normalize(view2, dim=1)
    logits = z1 @ z2.T / temperature
    return nn.functional.cross_entropy(logits, torch.arange(len(z1), device=z1.device))


class SGLParams(BackendParams):
    """SGL's settings: LightGCN's with normalized-sum pooling (the reference code's SGL) and the contrastive keys."""

    name: Literal["sgl"] = "sgl"
    layers: int = Field(default=3, ge=0)
    pooling: POOLING = "normalized_sum"
    ssl_ratio: float = Field(default=0.1, ge=0, lt=1)  # edge-dropout rate of each view
    ssl_temperature: float = Field(default=0.2, gt=0)  # InfoNCE temperature tau
    ssl_reg: float = Field(default=0.1, ge=0)  # weight of the contrastive loss


@register_model("sgl", SGLParams)
class SGL(LightGCN):
    """LightGCN encoder + edge-dropout contrastive views (see the module docstring)."""


    def __init__(self, config: SGLParams, n_users: int, n_items: int, train: sp.csr_matrix,
                 denoise: DenoiseParams | None = None) -> None:
        super().__init__(config, n_users, n_items, train, denoise)
        coo = sp.coo_matrix(train)
        coo.sum_duplicates()
        positive = coo.data > 0
        self.register_buffer("edge_users", torch.from_numpy(coo.row[positive].astype(np.int64)), persistent=False)
        self.register_buffer("edge_items", torch.from_numpy(coo.col[positive].astype(np.int64)), persistent=False)
        # sparse COO adjacencies of the two views (buffers: they follow .to(device); None until start_epoch)
        self.register_buffer("view1", None, persistent=False)
        self.register_buffer("view2", None, persistent=False)
        self.view_keep_rates: tuple[float, float] | None = None

    def draw_views(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent edge-dropout views (sparse COO), drawn with ``generator`` (CPU)."""
        n_edges = len(self.edge_users)
        views, rates = [], []
        for _ in range(2):
            keep = torch.rand(n_edges, generator=generator) >= self.config.ssl_ratio
            rates.append(float(keep.float().mean()) if n_edges else 1.0)
            views.append(dropped_adjacency(self.edge_users, self.edge_items, keep.to(self.edge_users.device),
                                           self.n_users, self.n_items))
        self.view_keep_rates = (rates[0], rates[1])
        return views[0], views[1]

    def start_epoch(self, epoch: int, generator: torch.Generator) -> None:
        """Redraw the two views for this epoch."""
        self.view1, self.view2 = self.draw_views(generator)

    def ssl_loss(self, users: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """InfoNCE between the two views over the batch's unique users plus its unique positive items."""
        if self.view1 is None:  # loss() called outside the train loop: draw views with a fixed seed
            self.start_epoch(0, torch.Generator().manual_seed(0))
        u = torch.unique(users)
        i = torch.unique(pos)
        tau, n = self.config.ssl_temperature, len(u)
        if not self.pools_rows():  # a subclass's own propagation: index it
            (users1, items1), (users2, items2) = self.propagate_on("view1"), self.propagate_on("view2")
            return info_nce(users1[u], users2[u], tau) + info_nce(items1[i], items2[i], tau)
        rows = torch.cat([u, i + self.n_users])  # only these nodes' view embeddings are pooled
        view1 = self.propagate_rows("view1", rows)  # (len(u) + len(i), d): users1[u] then items1[i]
        view2 = self.propagate_rows("view2", rows)
        return info_nce(view1[:n], view2[:n], tau) + info_nce(view1[n:], view2[n:], tau)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """BPR on the full graph + L2 (base) + ``ssl_reg`` * InfoNCE."""
        loss = self.bpr_loss(users, pos, neg)
        if self.config.ssl_reg > 0:
            loss = loss + self.config.ssl_reg * self.ssl_loss(users, pos)
        return loss
