"""The backend contract and the shared graph propagation.

A backend is a :class:`ddrm.loop.ModelBase` (the loop's trainable-model contract) with
``loss(users, pos, neg) -> scalar`` (its own training objective on a BPR batch) and
``embeddings() -> (user_emb (U, d), item_emb (I, d))``: the final embeddings that are scored by inner product
and handed to DDRM. ``start_epoch`` (a no-op by default) runs before each training epoch, e.g. SGL redraws its
augmented views there.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..denoise import build_loss_rule
from ..loop import ModelBase
from ..params import POOLING, BackendParams, DenoiseParams


def normalized_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the user-item bipartite graph, a coalesced sparse ``(U+I, U+I)`` float32 tensor."""
    n_users, n_items = train.shape
    binary = (train > 0).astype(np.float32)
    adjacency = sp.bmat([[None, binary], [binary.T, None]], format="csr", dtype=np.float32)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    norm = sp.diags(inv_sqrt) @ adjacency @ sp.diags(inv_sqrt)
    norm = sp.csr_matrix(norm, dtype=np.float32)
    norm.sort_indices()
    coo = norm.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), size=coo.shape, check_invariants=False).coalesce()


POOLINGS = get_args(POOLING)  # ("mean", "normalized_sum")


def propagate(graph, user_emb: torch.Tensor, item_emb: torch.Tensor, layers: int,
              pooling: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN propagation, one sparse-dense product ``graph @ x`` per layer; pooled over layers 0..K.

    ``mean``: ``e = mean_k e^(k)``, ``e^(k+1) = Â e^(k)`` (LightGCN; the reference DDRM LightGCN code).
    ``normalized_sum``: the reference DDRM SGL code — ``e^(k+1) = normalize(Â e^(k))`` (the
    L2-normalised layer output is what the next layer propagates) and ``e = e^(0) + sum_k e^(k)``
    with the ego layer ``e^(0)`` *not* normalised. On ``ml-1m_noisy`` with the released SGL checkpoint
    and 3 layers this gives test R@20 .1247 scored directly and .1269 by mean-of-liked-items, the
    numbers of DESIGN §4 / SOURCE.txt; normalising layer 0 as well and propagating the un-normalised
    layers gives .1169 / .1305 instead.

    ``graph``: anything with ``graph @ dense`` — a sparse tensor or a :class:`SymmetricSpMM`. An operator with
    its own ``propagate(user_emb, item_emb, layers, pooling)`` (:class:`SymmetricSpMM`: the same values, one
    autograd node with a hand-written backward) computes it instead of the layer loop below.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    fused = getattr(graph, "propagate", None)
    if fused is not None:
        return fused(user_emb, item_emb, layers, pooling)
    n_users = user_emb.shape[0]
    current = torch.cat([user_emb, item_emb])
    total = current
    for _ in range(layers):
        current = graph @ current
        if pooling == "normalized_sum":
            current = nn.functional.normalize(current, dim=1)
        total = total + current
    if pooling == "mean":
        total = total / (layers + 1)
    return total[:n_users], total[n_users:]


class Backend(ModelBase):
    """Base class: embedding tables, BPR loss with L2 on the batch, final embeddings."""

    def __init__(self, config: BackendParams, n_users: int, n_items: int, train: sp.csr_matrix,
                 denoise: DenoiseParams | None = None) -> None:
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.user_emb = nn.Embedding(n_users, config.dim, sparse=config.sparse_embeddings)
        self.item_emb = nn.Embedding(n_items, config.dim, sparse=config.sparse_embeddings)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        self.register_buffer("graph", normalized_adjacency(train), persistent=False)
        self.loss_rule = build_loss_rule(denoise, config, n_users, n_items)  # the denoise plug-in (None: plain mean)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(U, d)``, ``(I, d)`` embeddings; subclasses define propagation."""
        raise NotImplementedError

    def graph_operator(self):
        """What propagation multiplies by: the normalised adjacency (subclasses may give a faster operator)."""
        return self.graph

    def propagated_embeddings(self, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ego embeddings propagated ``layers`` layers with this backend's pooling, ``(U, d)``, ``(I, d)``.

        What the reference DDRM code hands its denoisers (``ddrm.propagation_layers``), independent of how
        many layers the backend was trained with.
        """
        return propagate(self.graph_operator(), self.user_emb.weight, self.item_emb.weight, layers,
                         self.config.pooling)

    def load_checkpoint(self, path: str) -> None:
        """Load a reference-code state dict (ego embeddings) into this backend; subclasses map the keys."""
        raise NotImplementedError(f"{type(self).__name__} cannot load reference checkpoints")

    def train_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings used inside the training loss (default: the final ones)."""
        return self.embeddings()

    def batch_embeddings(self, users: torch.Tensor, pos: torch.Tensor,
                         neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training embeddings of a batch's users, positives and negatives, ``(B, d)`` each (``(B,)`` ids in)."""
        all_users, all_items = self.train_embeddings()
        return all_users[users], all_items[pos], all_items[neg]

    def bpr_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """BPR loss plus ``weight_decay * 0.5 * (|e_u|^2+|e_i|^2+|e_j|^2) / B`` on the ego embeddings.

        The per-triple BPR losses are averaged, or reduced by the ``backend.denoise`` plug-in (T-CE / R-CE;
        DeCA replaces them by its own pointwise term on the triple's two pairs).
        """
        if self.config.sparse_embeddings:  # MF: gathered by the embedding modules, so gradients hold only these rows
            u, i, j = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)
        else:
            u, i, j = self.batch_embeddings(users, pos, neg)
        pos_scores, neg_scores = (u * i).sum(-1), (u * j).sum(-1)
        losses = nn.functional.softplus(neg_scores - pos_scores)
        if self.loss_rule is None:
            bpr = losses.mean()
        else:
            bpr = self.loss_rule(losses, pos_scores, neg_scores, users, pos, neg)
        ego = (self.user_emb(users).pow(2).sum() + self.item_emb(pos).pow(2).sum() + self.item_emb(neg).pow(2).sum())
        return bpr + self.config.weight_decay * 0.5 * ego / len(users)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The backend's training objective on one BPR batch."""
        return self.bpr_loss(users, pos, neg)

    @torch.no_grad()
    def scorer(self):
        """A ``users (B,) -> scores (B, I)`` function over frozen final embeddings."""
        user_emb, item_emb = (e.detach() for e in self.embeddings())
        return lambda users: user_emb[users] @ item_emb.T
