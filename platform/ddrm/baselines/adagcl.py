"""AdaGCL (Jiang, Huang, Huang, "Adaptive Graph Contrastive Learning for Recommendation", KDD 2023).

A LightGCN-style encoder (ego embeddings, ``model.layers`` propagation layers over ``D^-1/2 A D^-1/2``,
layers *summed*) trained on BPR triples, with a contrastive loss between two views of the graph that are
produced by two trainable view generators instead of random edge dropout:

* **generative view** (a VGAE with its own ego embeddings): encoder = propagation + MLPs for the mean
  and the (softplus) std of a Gaussian per node; decoder = an MLP on ``z_u ⊙ z_i`` giving an edge
  probability. The view keeps the training edges whose probability is >= 0.5, with the normalised
  adjacency's values divided by the kept share of edges. Its loss: BCE on the triple's positive and
  negative edge + 0.1·KL(q(z)‖N(0, I)) + BPR on ``z``.
* **denoising view**: per layer k, a gate on every edge from the current layer's embeddings,
  ``log α_e = w_nb·relu(W_nb x_row) + w_self·relu(W_self x_col) + b``, a hard-concrete sample
  (stretch (γ, ζ) = (-0.45, 1.05), temperature ``model.gate_temperature`` decaying by
  ``model.gate_temperature_decay`` per epoch, floor 0.05; deterministic ``σ(log α)`` when the view is
  generated), and the gated adjacency re-normalised symmetrically. Its loss: BPR on the embeddings
  propagated through its gates + ``model.l0_reg`` × the expected L0 norm of the gates.

Each training batch makes three updates, as the original: (1) the encoder on ``model.ssl_reg`` ×
InfoNCE between the two views (batch users and positive items, cosine / ``model.ssl_temperature``,
the positive excluded from the denominator); (2) the encoder on ``model.ib_reg`` × the
information-bottleneck term, InfoNCE between each view re-encoded after update (1) and the same view
before it; (3) the encoder on BPR over the full graph and both generators on their losses. One Adam
holds every parameter (parameters without a gradient in an update are skipped, so this equals the
original's three optimisers, except that the original gives the gate generator's Adam eps 1e-3);
``model.weight_decay`` is Adam's L2 in update (3) only, as the original adds ``1e-5·|θ|²`` (weight decay
2e-5) to the losses of that update alone. Applying it in all three updates (this file before 2026-11-27)
makes the encoder collapse on ML-1M: validation R@20 peaks near .04 by epoch 7, then falls below .005
(docs/RESULTS.md, "AdaGCL on a GPU").

Scores: the encoder's full-graph embeddings, user · item.

Differences from the reference code, all deliberate: the denoising generator is trained on the encoder's
*current* ego embeddings (detached); the reference hands it the embeddings as they were at
initialisation, which looks unintended. The InfoNCE runs over the batch's *unique* users and items
(the reference keeps repeats, so a node's copies appear among its own negatives); this also shrinks the
similarity matrix. The edge gate's two linear maps are applied per node
and then gathered per edge (identical values; O(nodes·d²) instead of O(edges·d²)). Every graph product
is a CSR product with the training graph's fixed pattern (:class:`GraphPattern`); views change values
only (dropped edges get 0).
"""

from __future__ import annotations

import math
from typing import Literal

import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn
from torch.nn.functional import normalize, softplus

from ..backends.base import normalized_adjacency
from ..backends.lightgcn import to_csr
from ..loop import ModelBase
from ..params import TrainedParams
from ..registry import register_model

GATE_STRETCH = (-0.45, 1.05)  # hard-concrete (gamma, zeta) of the reference code
VGAE_KL_WEIGHT = 0.1


class GraphPattern:
    """The fixed sparsity pattern of the symmetric ``(U+I, U+I)`` training graph, for matrices that keep
    the pattern and change the values: CSR index arrays, the COO ``rows``/``cols`` (E,) in CSR order,
    and ``mirror`` (E,), the position of entry (c, r) for entry (r, c)."""

    def __init__(self, graph: torch.Tensor) -> None:
        csr = to_csr(graph)
        self.n = graph.shape[0]
        self.crow, self.col = csr.crow_indices(), csr.col_indices()
        self.rows = torch.repeat_interleave(torch.arange(self.n, device=self.col.device), self.crow.diff())
        self.cols = self.col
        keys = self.rows * self.n + self.cols
        self.mirror = torch.searchsorted(keys, self.cols * self.n + self.rows)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """A sparse CSR matrix with this pattern and ``values`` (E,)."""
        import warnings

        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.col, values, (self.n, self.n))

    def to(self, device: torch.device) -> "GraphPattern":
        for name in ("crow", "col", "rows", "cols", "mirror"):
            setattr(self, name, getattr(self, name).to(device))
        return self


class _PatternSpMM(torch.autograd.Function):
    """``A(values) @ x`` for a matrix with a fixed pattern; differentiable in ``values`` and ``x``."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, x: torch.Tensor, pattern: GraphPattern) -> torch.Tensor:  # type: ignore[override]
        ctx.pattern = pattern
        ctx.save_for_backward(values, x)
        return pattern.matrix(values) @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        values, x = ctx.saved_tensors
        pattern, grad = ctx.pattern, grad.contiguous()
        grad_x = pattern.matrix(values[pattern.mirror]) @ grad if ctx.needs_input_grad[1] else None  # A^T @ grad
        grad_values = None
        if ctx.needs_input_grad[0]:  # d/dA_rc = grad_r · x_c: (grad @ x^T) sampled at the pattern
            sampled = torch.sparse.sampled_addmm(pattern.matrix(torch.zeros_like(values)), grad,
                                                 x.T.contiguous(), beta=0.0)
            grad_values = sampled.values()
        return grad_values, grad_x, None


def pattern_spmm(pattern: GraphPattern, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A @ x`` with ``A`` = ``pattern`` filled with ``values`` (E,); ``x`` (n, d)."""
    if torch.is_grad_enabled() and (values.requires_grad or x.requires_grad):
        return _PatternSpMM.apply(values, x, pattern)
    return pattern.matrix(values) @ x


class _Fixed:
    """``graph @ x`` for a pattern with fixed values (a symmetric view): usable by :class:`Encoder`."""

    def __init__(self, pattern: GraphPattern, values: torch.Tensor) -> None:
        self.pattern, self.values = pattern, values

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return pattern_spmm(self.pattern, self.values, x)


def symmetric_normalise(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Values of ``D^-1/2 M D^-1/2`` for the weighted edges ``M`` (degree + 1e-6, inverse sqrt capped at 10)."""
    degree = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values) + 1e-6
    inv_sqrt = degree.pow(-0.5).clamp(max=10.0)
    return values * inv_sqrt[rows] * inv_sqrt[cols]


def contrast(view1: torch.Tensor, view2: torch.Tensor, nodes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-node InfoNCE ``(N,)`` between rows ``nodes`` of two ``(n, d)`` views: cosine similarity /
    temperature; the positive is the same node in the other view and is left out of the denominator."""
    z1, z2 = normalize(view1[nodes], dim=1), normalize(view2[nodes], dim=1)
    logits = z1 @ z2.T / temperature
    positive = logits.diagonal()
    others = logits.masked_fill(torch.eye(len(nodes), dtype=torch.bool, device=logits.device), -math.inf)
    return torch.logsumexp(others, dim=1) - positive


def bpr(users: torch.Tensor, items: torch.Tensor, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Mean BPR loss of the triples (u, i, j) scored on ``(U, d)`` / ``(I, d)`` embeddings."""
    return softplus((users[u] * items[j]).sum(-1) - (users[u] * items[i]).sum(-1)).mean()


def hard_concrete(log_alpha: torch.Tensor, temperature: float, sample: bool) -> torch.Tensor:
    """Gates in [0, 1]: a stretched, clipped (noisy when ``sample``) sigmoid of ``log_alpha``."""
    gamma, zeta = GATE_STRETCH
    if sample:
        u = torch.rand_like(log_alpha).clamp(1e-7, 1 - 1e-7)
        gate = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / temperature)
    else:
        gate = torch.sigmoid(log_alpha)
    return (gate * (zeta - gamma) + gamma).clamp(0.0, 1.0)


def expected_l0(log_alpha: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean probability that a hard-concrete gate is non-zero."""
    gamma, zeta = GATE_STRETCH
    return torch.sigmoid(log_alpha - temperature * math.log(-gamma / zeta)).mean()


class EdgeGate(nn.Module):
    """One layer's gate logits ``log α_e`` (E,) from node embeddings ``(n, d)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.neighbour = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.own = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.attention = nn.Linear(2 * dim, 1)

    def forward(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        dim = x.shape[1]
        w = self.attention.weight[0]
        row_part = self.neighbour(x) @ w[:dim]  # (n,) then gathered per edge
        col_part = self.own(x) @ w[dim:]
        return row_part[rows] + col_part[cols] + self.attention.bias[0]


class Encoder(nn.Module):
    """Ego embeddings ``(U+I, d)`` (Xavier-uniform) propagated ``layers`` times, layers summed."""

    def __init__(self, n_nodes: int, dim: int, layers: int) -> None:
        super().__init__()
        self.ego = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_nodes, dim)))
        self.layers = layers

    def forward(self, graph) -> torch.Tensor:
        """``graph``: anything with ``graph @ x``; returns the summed layers ``(U+I, d)``."""
        current, total = self.ego, self.ego
        for _ in range(self.layers):
            current = graph @ current
            total = total + current
        return total


def _set_weight_decay(optimizer: torch.optim.Optimizer, values: list[float]) -> None:
    """Set each parameter group's ``weight_decay`` (Adam's L2 on the gradient) to ``values[k]``."""
    for group, value in zip(optimizer.param_groups, values):
        group["weight_decay"] = value


class AdaGCLParams(TrainedParams):
    """AdaGCL: a LightGCN-style encoder with two learned graph views (a VGAE and edge gates)."""

    name: Literal["adagcl"] = "adagcl"
    batch_size: int = Field(default=500, ge=1)  # BPR triples per batch
    dim: int = Field(default=64, ge=1)  # embedding size
    layers: int = Field(default=2, ge=1)  # propagation layers (encoder, VGAE encoder, one edge gate each)
    ssl_reg: float = Field(default=0.1, ge=0)  # weight of the InfoNCE between the two generated views
    ib_reg: float = Field(default=0.1, ge=0)  # weight of the information-bottleneck InfoNCE
    ssl_temperature: float = Field(default=0.5, gt=0)  # InfoNCE temperature
    l0_reg: float = Field(default=1e-4, ge=0)  # weight of the edge gates' expected L0 norm
    gate_temperature: float = Field(default=2.0, gt=0)  # hard-concrete temperature at epoch 1 ...
    gate_temperature_decay: float = Field(default=0.98, gt=0, le=1)  # ... times this per epoch (floor 0.05)


@register_model("adagcl", AdaGCLParams)
class AdaGCL(ModelBase):
    """AdaGCL (see the module docstring): ``training_step`` on BPR triples, ``scorer()`` on the encoder."""

    bpr_sampling = "interaction"  # BPR triples (the default batch kind), every training pair once per epoch

    def __init__(self, config: AdaGCLParams, n_users: int, n_items: int, train: sp.csr_matrix) -> None:
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        n, dim = n_users + n_items, config.dim
        graph = normalized_adjacency(train)
        self.pattern = GraphPattern(graph)
        self.register_buffer("graph_values", graph.values().clone(), persistent=False)  # CSR order = coalesced
        self.encoder = Encoder(n, dim, config.layers)
        # generative view: a VGAE with its own embeddings
        self.vgae_encoder = Encoder(n, dim, config.layers)
        self.vgae_mean = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.vgae_std = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.Softplus())
        self.vgae_decoder = nn.Sequential(nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        # denoising view: one edge gate per layer
        self.gates = nn.ModuleList(EdgeGate(dim) for _ in range(config.layers))
        self.gate_temperature = config.gate_temperature

    def _apply(self, fn, *args, **kwargs):  # keep the pattern on the buffers' device
        module = super()._apply(fn, *args, **kwargs)
        self.pattern.to(self.graph_values.device)
        return module

    def full_graph(self) -> _Fixed:
        return _Fixed(self.pattern, self.graph_values)

    def split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nodes[:self.n_users], nodes[self.n_users:]

    # ---- generative view (VGAE) ----
    def vgae_encode(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled ``z``, mean and std, each ``(U+I, d)``."""
        h = self.vgae_encoder(self.full_graph())
        mean, std = self.vgae_mean(h), self.vgae_std(h)
        return mean + std * torch.randn_like(std), mean, std

    def edge_logit(self, z_users: torch.Tensor, z_items: torch.Tensor) -> torch.Tensor:
        return self.vgae_decoder(z_users * z_items).squeeze(-1)

    def vgae_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        z, mean, std = self.vgae_encode()
        zu, zi = self.split(z)
        pos_logit, neg_logit = self.edge_logit(zu[users], zi[pos]), self.edge_logit(zu[users], zi[neg])
        reconstruction = (softplus(-pos_logit) + softplus(neg_logit)).mean()  # BCE(1) + BCE(0)
        kl = (-0.5 * (1 + 2 * torch.log(std.clamp_min(1e-8)) - mean.pow(2) - std.pow(2)).sum(dim=1)).mean()
        return reconstruction + VGAE_KL_WEIGHT * kl + bpr(zu, zi, users, pos, neg)

    @torch.no_grad()
    def generative_view(self) -> _Fixed:
        """The training graph with the edges the VGAE keeps (probability >= 0.5), values rescaled."""
        z, _, _ = self.vgae_encode()
        zu, zi = self.split(z)
        rows, cols, mirror = self.pattern.rows, self.pattern.cols, self.pattern.mirror
        user_side = rows < self.n_users  # one direction of every user-item edge
        users, items = rows[user_side], cols[user_side] - self.n_users
        logits = torch.empty_like(self.graph_values)
        logits[user_side] = torch.cat([self.edge_logit(zu[u], zi[i]) for u, i in
                                       zip(users.split(1 << 18), items.split(1 << 18))])
        logits[~user_side] = logits[mirror[~user_side]]  # the decoder is symmetric in (u, i)
        keep = (logits >= 0).float()
        share = float(keep.mean()) if keep.numel() else 1.0
        return _Fixed(self.pattern, self.graph_values * keep / max(share, 1e-12))

    # ---- denoising view (edge gates) ----
    def gated_propagation(self, x0: torch.Tensor, sample: bool, gates_grad: bool) -> tuple[torch.Tensor, list]:
        """Propagate ``x0`` (U+I, d) through per-layer gated graphs; returns (summed layers, gate logits)."""
        n = x0.shape[0]
        current, total, logits = x0, x0, []
        for gate in self.gates:
            rows, cols = self.pattern.rows, self.pattern.cols
            with torch.set_grad_enabled(gates_grad and torch.is_grad_enabled()):
                source = current if gates_grad else current.detach()
                log_alpha = gate(source, rows, cols)
                weights = hard_concrete(log_alpha, self.gate_temperature, sample)
                values = symmetric_normalise(rows, cols, weights, n)
            logits.append(log_alpha)
            current = pattern_spmm(self.pattern, values, current)
            total = total + current
        return total, logits

    def denoiser_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        nodes, logits = self.gated_propagation(self.encoder.ego.detach(), sample=True, gates_grad=True)
        zu, zi = self.split(nodes)
        l0 = sum(expected_l0(la, self.gate_temperature) for la in logits)
        return bpr(zu, zi, users, pos, neg) + self.config.l0_reg * l0

    def denoised_view_embeddings(self) -> torch.Tensor:
        """The encoder propagated through the deterministic gates (gates without gradient), ``(U+I, d)``."""
        return self.gated_propagation(self.encoder.ego, sample=False, gates_grad=False)[0]

    # ---- training ----
    def start_epoch(self, epoch: int, generator: torch.Generator) -> None:
        """Anneal the hard-concrete temperature: ``max(0.05, t0 · decay^(epoch-1))``."""
        self.gate_temperature = max(0.05, self.config.gate_temperature
                                    * self.config.gate_temperature_decay ** (epoch - 1))

    def contrast_batch(self, a: torch.Tensor, b: torch.Tensor, users: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        nodes = torch.cat([torch.unique(users), torch.unique(pos) + self.n_users])
        return contrast(a, b, nodes, self.config.ssl_temperature).mean()

    def training_step(self, batch: tuple[torch.Tensor, ...], optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """The three updates of one batch (module docstring); returns their summed loss (detached)."""
        users, pos, neg = batch
        decay = [group["weight_decay"] for group in optimizer.param_groups]
        _set_weight_decay(optimizer, [0.0] * len(decay))  # L2 belongs to update (3) alone
        generative = self.generative_view()
        view1, view2 = self.encoder(generative), self.denoised_view_embeddings()
        contrastive = self.config.ssl_reg * self.contrast_batch(view1, view2, users, pos)
        optimizer.zero_grad(set_to_none=True)
        contrastive.backward()
        optimizer.step()

        again1, again2 = self.encoder(generative), self.denoised_view_embeddings()
        bottleneck = self.config.ib_reg * (self.contrast_batch(again1, view1.detach(), users, pos)
                                           + self.contrast_batch(again2, view2.detach(), users, pos))
        optimizer.zero_grad(set_to_none=True)
        bottleneck.backward()
        optimizer.step()

        _set_weight_decay(optimizer, decay)
        zu, zi = self.split(self.encoder(self.full_graph()))
        main = bpr(zu, zi, users, pos, neg)
        generators = self.vgae_loss(users, pos, neg) + self.denoiser_loss(users, pos, neg)
        optimizer.zero_grad(set_to_none=True)
        (main + generators).backward()
        optimizer.step()
        return (contrastive + bottleneck + main + generators).detach()

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The encoder's BPR on the full graph (what the third update minimises for the encoder)."""
        zu, zi = self.split(self.encoder(self.full_graph()))
        return bpr(zu, zi, users, pos, neg)

    @torch.no_grad()
    def scorer(self):
        zu, zi = self.split(self.encoder(self.full_graph()))
        return lambda users: zu[users] @ zi.T
