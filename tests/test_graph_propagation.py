"""The fused graph propagation (one autograd node, hand-written backward; only the batch's rows pooled) against
the plain layer loop it replaces (``bench/graph_reference.py``, the one copy, which the benchmark times too): same
forward values and same gradients to the last bit, and the same trained parameters after a few LightGCN / SGL
steps. Small generated graphs with isolated users and items; an empty view.

Exactness is asserted with ``torch.equal`` (which counts -0.0 and +0.0 as equal: where the reference adds an
exact zero, e.g. the zero rows of a slice's gradient, the fused path may skip the addition, and 0 + (-0) is +0).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ddrm.backends.base import normalized_adjacency, propagate
from ddrm.backends.lightgcn import LightGCN, SymmetricSpMM, to_csr
from ddrm.backends.sgl import SGL, info_nce
from ddrm.data.sampling import BPRSampler

REPO = Path(__file__).resolve().parents[1]
POOLINGS = ("mean", "normalized_sum")


# --------------------------------------------------------------------------- the reference (bench/graph_reference.py)


def _load_reference():
    """``bench/graph_reference.py``: the old layer loop, the one copy the benchmark times as well."""
    spec = importlib.util.spec_from_file_location("graph_reference", REPO / "bench" / "graph_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference()
reference_csr, reference_propagate = reference.int64_csr, reference.reference_propagate
ReferenceLightGCN, ReferenceSGL = reference.reference_class(LightGCN), reference.reference_class(SGL)


# --------------------------------------------------------------------------- data


def train_matrix(n_users: int = 70, n_items: int = 50, density: float = 0.12, seed: int = 0) -> sp.csr_matrix:
    """Random interactions; users 0-2 and items 0-1 have none (zero-degree nodes)."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[np.arange(3, n_users), rng.integers(2, n_items, n_users - 3)] = 1
    dense[:3] = 0
    dense[:, :2] = 0
    return sp.csr_matrix(dense)


def build(cls, train: sp.csr_matrix, **fields):
    from ddrm.registry import model_params

    name = "sgl" if issubclass(cls, SGL) else "lightgcn"
    torch.manual_seed(0)
    return cls(model_params(name)(dim=8, **fields), train.shape[0], train.shape[1], train)


def empty_graph(n: int) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (n, n)).coalesce()


def batch(n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Repeated ids, isolated nodes (user 0, item 0), an item both positive and negative."""
    users = torch.tensor([0, 5, 5, 9, 30, n_users - 1, 5])
    pos = torch.tensor([0, 7, 7, 12, 3, n_items - 1, 12])
    neg = torch.tensor([12, 1, 40, 7, 3, 9, 0])
    return users, pos, neg


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item():.3g}"


# --------------------------------------------------------------------------- propagation


def csr32(graph: torch.Tensor) -> torch.Tensor:
    return to_csr(graph, small_indices=True)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("graph_kind", ["full", "empty"])
def test_fused_propagation_matches_the_layer_loop_bit_for_bit(graph_kind, layers, pooling):
    train = train_matrix()
    graph = normalized_adjacency(train) if graph_kind == "full" else empty_graph(120)
    users, pos, neg = batch(70, 50)
    generator = torch.Generator().manual_seed(layers)
    ego = [torch.randn(n, 8, generator=generator) for n in (70, 50)]
    weights = torch.randn(21, 8, generator=generator)

    def loss_of(u, i, j):  # a loss that uses every gathered row, with repeats
        return (u * weights[:7]).sum() + (i * weights[7:14]).sum() + ((i - j) ** 2 * weights[14:21]).sum()

    results = {}
    for arm in ("reference", "full", "rows"):
        leaves = [e.clone().requires_grad_(True) for e in ego]
        if arm == "reference":
            all_users, all_items = reference_propagate(reference_csr(graph), *leaves, layers, pooling)
            gathered = (all_users[users], all_items[pos], all_items[neg])
            everything = torch.cat([all_users, all_items])
        elif arm == "full":
            all_users, all_items = propagate(SymmetricSpMM(csr32(graph)), *leaves, layers, pooling)
            gathered = (all_users[users], all_items[pos], all_items[neg])
            everything = torch.cat([all_users, all_items])
        else:
            rows, where = torch.unique(torch.cat([users, pos + 70, neg + 70]), return_inverse=True)
            pooled = SymmetricSpMM(csr32(graph)).propagate_rows(*leaves, layers, pooling, rows)
            gathered = (pooled[where[:7]], pooled[where[7:14]], pooled[where[14:]])
            everything = None
        loss_of(*gathered).backward()
        results[arm] = (gathered, everything, [leaf.grad for leaf in leaves])
    ref_rows, ref_all, ref_grads = results["reference"]
    for arm in ("full", "rows"):
        rows_, all_, grads = results[arm]
        for a, b in zip(rows_, ref_rows):
            assert_same(a.detach(), b.detach())
        for a, b in zip(grads, ref_grads):
            assert_same(a, b)
        if all_ is not None:
            assert_same(all_.detach(), ref_all.detach())


@pytest.mark.parametrize("pooling", POOLINGS)
def test_fused_propagation_without_grad_and_in_float64(pooling):
    train = train_matrix()
    graph = normalized_adjacency(train)
    ego = [torch.randn(70, 8, dtype=torch.float64), torch.randn(50, 8, dtype=torch.float64)]
    with torch.no_grad():
        fused = propagate(SymmetricSpMM(csr32(graph.double())), *ego, 3, pooling)
        plain = reference_propagate(reference_csr(graph.double()), *ego, 3, pooling)
    for a, b in zip(fused, plain):
        assert a.dtype == torch.float64
        assert_same(a, b)
    # any other ``graph @ x`` operator still takes the layer loop: a COO tensor and a dense matrix
    for operator in (graph, graph.to_dense()):
        for a, b in zip(propagate(operator, *[e.float() for e in ego], 3, pooling),
                        reference_propagate(reference_csr(graph), *[e.float() for e in ego], 3, pooling)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_backends_csr_has_int32_indices_and_gives_the_same_product():
    train = train_matrix()
    graph = normalized_adjacency(train)
    csr = build(LightGCN, train).csr("graph")
    assert csr.crow_indices().dtype == torch.int32 and csr.col_indices().dtype == torch.int32
    assert to_csr(graph).col_indices().dtype == torch.int64  # other callers (AdaGCL) keep int64 indices
    x = torch.randn(120, 8)
    assert_same(csr @ x, reference_csr(graph) @ x)


# --------------------------------------------------------------------------- backends


def loss_and_grads(model, users, pos, neg):
    model.zero_grad(set_to_none=True)
    loss = model.loss(users, pos, neg)
    loss.backward()
    return loss.detach(), model.user_emb.weight.grad.clone(), model.item_emb.weight.grad.clone()


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("cls,reference,fields", [
    (LightGCN, ReferenceLightGCN, {}),
    (LightGCN, ReferenceLightGCN, {"pooling": "normalized_sum"}),
    (SGL, ReferenceSGL, {"ssl_reg": 0.5, "ssl_ratio": 0.3}),
    (SGL, ReferenceSGL, {"ssl_reg": 0.5, "ssl_ratio": 0.3, "pooling": "mean"}),
])
def test_backend_loss_and_gradients_match_the_reference(cls, reference, fields, layers):
    train = train_matrix()
    models = [build(c, train, layers=layers, **fields) for c in (reference, cls)]
    for model in models:
        model.start_epoch(1, torch.Generator().manual_seed(3))
    (ref_loss, *ref_grads), (loss, *grads) = (loss_and_grads(m, *batch(70, 50)) for m in models)
    assert_same(loss, ref_loss)
    for a, b in zip(grads, ref_grads):
        assert_same(a, b)
    # isolated users: user 0 (in the batch) has a gradient, users 1 and 2 (not in it) none
    assert bool((ref_grads[0][0] != 0).any()) and not bool((ref_grads[0][1:3] != 0).any())


def test_sgl_with_empty_views_matches_the_reference():
    train = train_matrix()
    models = [build(c, train, layers=3, ssl_reg=0.5) for c in (ReferenceSGL, SGL)]
    for model in models:
        model.view1, model.view2 = empty_graph(120), empty_graph(120)
    (ref_loss, *ref_grads), (loss, *grads) = (loss_and_grads(m, *batch(70, 50)) for m in models)
    assert_same(loss, ref_loss)
    for a, b in zip(grads, ref_grads):
        assert_same(a, b)


@pytest.mark.parametrize("shape", [(70, 50, 0.12, 64), (400, 300, 0.04, 1024)])
@pytest.mark.parametrize("cls,reference,fields", [
    (LightGCN, ReferenceLightGCN, {}),
    (SGL, ReferenceSGL, {"ssl_reg": 0.1}),
])
def test_training_steps_give_the_same_parameters(cls, reference, fields, shape):
    """A few Adam steps over two epochs (SGL redraws its views): losses and parameters identical."""
    n_users, n_items, density, batch_size = shape
    train = train_matrix(n_users, n_items, density, seed=1)
    runs = []
    for c in (reference, cls):
        model = build(c, train, layers=3, **fields)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        sampler, generator = BPRSampler(train, seed=0), torch.Generator().manual_seed(0)
        losses = []
        for epoch in (1, 2):
            model.start_epoch(epoch, generator)
            for users, pos, neg in sampler.batches(batch_size):
                losses.append(model.training_step((users, pos, neg), optimizer))
        runs.append((torch.stack(losses), [p.detach().clone() for p in model.parameters()]))
    (ref_losses, ref_params), (losses, params) = runs
    assert len(losses) >= 6
    assert_same(losses, ref_losses)
    for a, b in zip(params, ref_params):
        assert_same(a, b)


def test_a_subclass_with_its_own_propagation_keeps_it_in_both_losses():
    class Doubled(SGL):
        def propagate_on(self, name):
            users, items = super().propagate_on(name)
            return 2 * users, 2 * items

    train = train_matrix()
    model = build(Doubled, train, layers=2, ssl_reg=0.5)
    model.start_epoch(1, torch.Generator().manual_seed(0))
    users, pos, neg = batch(70, 50)
    assert not model.pools_rows()
    all_users, all_items = model.embeddings()
    expected_rows = (all_users[users], all_items[pos], all_items[neg])
    for got, expected in zip(model.batch_embeddings(users, pos, neg), expected_rows):
        assert_same(got.detach(), expected.detach())
    u, i = torch.unique(users), torch.unique(pos)
    (u1, i1), (u2, i2) = model.propagate_on("view1"), model.propagate_on("view2")
    expected = info_nce(u1[u], u2[u], 0.2) + info_nce(i1[i], i2[i], 0.2)
    assert_same(model.ssl_loss(users, pos).detach(), expected.detach())


def test_a_subclass_with_its_own_training_embeddings_keeps_them():
    class Shrunk(LightGCN):
        def train_embeddings(self):
            users, items = self.embeddings()
            return 0.5 * users, 0.5 * items

    train = train_matrix()
    model = build(Shrunk, train, layers=2)
    users, pos, neg = batch(70, 50)
    all_users, all_items = model.embeddings()
    for got, expected in zip(model.batch_embeddings(users, pos, neg),
                             (0.5 * all_users[users], 0.5 * all_items[pos], 0.5 * all_items[neg])):
        assert_same(got.detach(), expected.detach())
