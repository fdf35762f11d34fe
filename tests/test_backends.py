"""Backends on generated data: smoke runs, propagation vs a dense reference, SGL views, checkpoint loading."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ddrm.backends.checkpoint import KEY_LAYOUTS, load_ego_embeddings, read_reference_embeddings
from ddrm.backends.base import propagate
from ddrm.backends.lightgcn import SymmetricSpMM, to_csr
from ddrm.backends.sgl import info_nce
from ddrm.config import Config
from ddrm.data import load_prepared
from ddrm.errors import ConfigError
from ddrm.evaluation import _dense_rows
from ddrm.train import run

BACKENDS = ("mf", "lightgcn", "sgl")


def tiny_config(backend: str, **extra) -> Config:
    return Config().replace({"data.name": "tiny", "backend.name": backend, "backend.layers": 2,
                             "backend.lr": 0.01, "ddrm.enabled": False, "train.epochs": 6,
                             "train.batch_size": 64, "train.patience": 100, **extra})


def random_train(n_users: int = 30, n_items: int = 20, density: float = 0.2, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(np.float32)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1  # every user has an item
    return sp.csr_matrix(dense)


def build(name: str, train: sp.csr_matrix, **fields):
    from ddrm.registry import get_model, model_params

    config = model_params(name)(dim=8, **fields)
    torch.manual_seed(0)
    return get_model(name)(config, train.shape[0], train.shape[1], train)


def dense_norm_adjacency(train: sp.csr_matrix) -> np.ndarray:
    r = train.toarray().astype(np.float64)
    n_users, n_items = r.shape
    a = np.zeros((n_users + n_items,) * 2)
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    deg = a.sum(1)
    inv = np.where(deg > 0, deg, 1.0) ** -0.5 * (deg > 0)
    return inv[:, None] * a * inv[None, :]


def dense_propagate(a: np.ndarray, x0: np.ndarray, layers: int, pooling: str) -> np.ndarray:
    """Reference: mean = mean_k A^k x0; normalized_sum = x0 + sum_k x_k with x_k = normalize(A x_{k-1})."""
    x, total = x0, x0.copy()
    for _ in range(layers):
        x = a @ x
        if pooling == "normalized_sum":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        total = total + x
    return total / (layers + 1) if pooling == "mean" else total


# --------------------------------------------------------------------------- smoke runs


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_trains_through_run(name, tiny_dataset_dir):
    events = []
    result = run(tiny_config(name), data_dir=tiny_dataset_dir, progress=False, use_cache=False,
                 callback=events.append)
    losses = [h["loss"] for h in result.backend.history]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    for key in ("recall_at_10", "recall_at_20", "ndcg_at_10", "ndcg_at_20"):
        assert 0.0 <= result.test[key] <= 1.0

    data = load_prepared("tiny", tiny_dataset_dir)
    backend = events[-1].model
    backend.eval()
    users = torch.arange(data.n_users)
    scores = backend.scorer()(users)
    assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()
    # the evaluation's masking: a training item is never among the top-K recommendations
    train_mask = _dense_rows(data.csr("train"), np.arange(data.n_users), torch.device("cpu"))
    top = torch.topk(scores.masked_fill(train_mask, float("-inf")), 10, dim=1).indices
    assert not train_mask.gather(1, top).any()


def test_lightgcn_loss_uses_propagated_embeddings():
    train = random_train()
    model = build("lightgcn", train, layers=2)
    users, items = model.train_embeddings()
    ego_users = model.user_emb.weight
    assert not torch.allclose(users, ego_users)
    u, i, j = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3])
    model.loss(u, i, j).backward()
    # propagation spreads the gradient beyond the batch's own rows
    assert (model.user_emb.weight.grad.abs().sum(1) > 0).sum() > 2


def test_lightgcn_with_zero_layers_is_mf():
    train = random_train()
    lgn, mf = build("lightgcn", train, layers=0), build("mf", train)
    for a, b in zip(lgn.embeddings(), mf.embeddings()):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- propagation


@pytest.mark.parametrize("pooling", ["mean", "normalized_sum"])
@pytest.mark.parametrize("name", ["lightgcn", "sgl"])
def test_propagation_matches_dense_reference(name, pooling):
    train = random_train()
    model = build(name, train, layers=2, pooling=pooling)
    a = dense_norm_adjacency(train)
    np.testing.assert_allclose(model.graph.to_dense().numpy(), a, atol=1e-6)
    x0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double().numpy()
    expected = dense_propagate(a, x0, 2, pooling)
    users, items = model.embeddings()
    got = torch.cat([users, items]).detach().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "normalized_sum"])
def test_propagation_gradient_matches_dense_autograd(pooling):
    train = random_train()
    graph = build("lightgcn", train).graph
    x = torch.randn(graph.shape[0], 8, dtype=torch.float32)
    weights = torch.randn(graph.shape[0], 8)
    grads = []
    for op in (SymmetricSpMM(to_csr(graph)), graph.to_dense()):
        leaf = x.clone().requires_grad_(True)
        users, items = propagate(op, leaf[:30], leaf[30:], 2, pooling)
        (torch.cat([users, items]) * weights).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_unknown_pooling_is_rejected():
    train = random_train()
    graph = build("lightgcn", train).graph
    with pytest.raises(ValueError, match="pooling"):
        propagate(graph, torch.zeros(30, 2), torch.zeros(20, 2), 1, "max")


# --------------------------------------------------------------------------- SGL


def view_edges(view: torch.Tensor, n_users: int) -> set[tuple[int, int]]:
    coo = view.coalesce()
    rows, cols = coo.indices()
    keep = rows < n_users
    return set(zip(rows[keep].tolist(), (cols[keep] - n_users).tolist()))


def test_sgl_views_are_redrawn_each_epoch_and_reproducible():
    train = random_train(60, 40, density=0.25)
    model = build("sgl", train, layers=2, ssl_ratio=0.3)
    generator = torch.Generator().manual_seed(5)
    model.start_epoch(1, generator)
    epoch1 = (model.view1, model.view2)
    model.start_epoch(2, generator)
    epoch2 = (model.view1, model.view2)
    e1 = [view_edges(v, 60) for v in epoch1]
    e2 = [view_edges(v, 60) for v in epoch2]
    assert e1[0] != e1[1] and e1[0] != e2[0] and e1[1] != e2[1]

    again = build("sgl", train, layers=2, ssl_ratio=0.3)
    generator = torch.Generator().manual_seed(5)
    again.start_epoch(1, generator)
    for mine, theirs in zip(epoch1, (again.view1, again.view2)):
        torch.testing.assert_close(mine.to_dense(), theirs.to_dense(), rtol=0, atol=0)


def test_sgl_views_drop_edges_at_ssl_ratio_and_are_renormalised():
    train = random_train(300, 200, density=0.1, seed=1)  # ~6,000 edges
    n_edges = train.nnz
    model = build("sgl", train, layers=2, ssl_ratio=0.2)
    model.start_epoch(1, torch.Generator().manual_seed(0))
    train_edges = set(zip(*train.nonzero()))
    for view in (model.view1, model.view2):
        edges = view_edges(view, 300)
        assert edges <= train_edges
        assert abs(len(edges) / n_edges - 0.8) < 0.03  # binomial sd ~0.005
        kept = sp.csr_matrix((np.ones(len(edges), dtype=np.float32), tuple(np.array(sorted(edges)).T)),
                             shape=train.shape)
        dense = view.to_dense().numpy()
        np.testing.assert_allclose(dense, dense.T, atol=0)
        np.testing.assert_allclose(dense, dense_norm_adjacency(kept), atol=1e-6)
    assert all(abs(rate - 0.8) < 0.03 for rate in model.view_keep_rates)


def test_sgl_loss_is_bpr_plus_weighted_infonce():
    train = random_train()
    model = build("sgl", train, layers=2, ssl_reg=0.5, ssl_temperature=0.3)
    model.start_epoch(1, torch.Generator().manual_seed(0))
    users, pos, neg = torch.tensor([0, 0, 3, 5]), torch.tensor([1, 2, 2, 7]), torch.tensor([4, 4, 9, 9])
    total = model.loss(users, pos, neg)
    bpr = model.bpr_loss(users, pos, neg)
    u1, i1 = model.propagate_on("view1")
    u2, i2 = model.propagate_on("view2")

    def manual(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # unique rows only, in-batch negatives
        a = a / a.norm(dim=1, keepdim=True)
        b = b / b.norm(dim=1, keepdim=True)
        sim = torch.exp(a @ b.T / 0.3)
        return (-torch.log(sim.diag() / sim.sum(1))).mean()

    uu, ii = torch.tensor([0, 3, 5]), torch.tensor([1, 2, 7])
    expected = bpr + 0.5 * (manual(u1[uu], u2[uu]) + manual(i1[ii], i2[ii]))
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(info_nce(u1[uu], u2[uu], 0.3), manual(u1[uu], u2[uu]), rtol=1e-5, atol=1e-6)
    total.backward()
    assert model.user_emb.weight.grad is not None


def test_sgl_final_embeddings_use_the_full_graph():
    train = random_train()
    sgl = build("sgl", train, layers=2)
    lgn = build("lightgcn", train, layers=2, pooling=sgl.config.pooling)  # SGL defaults to normalized_sum
    sgl.start_epoch(1, torch.Generator().manual_seed(0))
    for a, b in zip(sgl.embeddings(), lgn.embeddings()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["lightgcn", "sgl"])
def test_graph_backends_deepcopy_pickle_and_move(name):
    import copy
    import pickle

    model = build(name, random_train(), layers=2)
    model.start_epoch(1, torch.Generator().manual_seed(0))
    model.loss(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))  # fills the CSR cache
    expected = model.embeddings()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        for a, b in zip(clone.embeddings(), expected):
            torch.testing.assert_close(a, b)
    model.to(torch.float64)  # buffers move; the CSR copies are rebuilt from them
    assert model.embeddings()[0].dtype == torch.float64


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("layout", sorted(KEY_LAYOUTS))
@pytest.mark.parametrize("name", BACKENDS)
def test_checkpoint_loads_every_layout(name, layout, tmp_path):
    train = random_train()
    users, items = torch.randn(30, 8), torch.randn(20, 8)
    user_key, item_key = KEY_LAYOUTS[layout]
    path = tmp_path / "ckpt"
    torch.save({user_key: users, item_key: items}, path)
    model = build(name, train, layers=1)
    model.load_checkpoint(str(path))
    torch.testing.assert_close(model.user_emb.weight.detach(), users)
    torch.testing.assert_close(model.item_emb.weight.detach(), items)


def test_checkpoint_roundtrips_a_backend_state_dict(tmp_path):
    train = random_train()
    source = build("lightgcn", train, layers=2)
    path = tmp_path / "own.pt"
    torch.save(source.state_dict(), path)
    target = build("sgl", train, layers=2, pooling="mean")
    assert load_ego_embeddings(target, path) == "mf"
    for a, b in zip(source.embeddings(), target.embeddings()):
        torch.testing.assert_close(a, b)


def test_checkpoint_errors_name_the_file(tmp_path):
    train = random_train()
    model = build("lightgcn", train)

    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match="nope.pt.*does not exist"):
        model.load_checkpoint(str(missing))

    bad_state_dicts = [
        ("wrong_shape.pt", {"embedding_user.weight": torch.zeros(30, 4), "embedding_item.weight": torch.zeros(20, 4)},
         r"wrong_shape\.pt.*embedding_user\.weight.*\(30, 4\).*\(30, 8\)"),
        ("wrong_rows.pt", {"user_emb.weight": torch.zeros(30, 8), "item_emb.weight": torch.zeros(21, 8)},
         r"wrong_rows\.pt.*item_emb\.weight.*\(21, 8\).*\(20, 8\)"),
        ("unknown_keys.pt", {"foo.weight": torch.zeros(30, 8), "bar": torch.zeros(20, 8)},
         r"unknown_keys\.pt.*\['bar', 'foo\.weight'\].*embedding_user\.weight"),
    ]
    for name, state, message in bad_state_dicts:
        torch.save(state, tmp_path / name)
        with pytest.raises(ConfigError, match=message):
            model.load_checkpoint(str(tmp_path / name))

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"garbage\.bin.*not a readable"):
        model.load_checkpoint(str(garbage))

    not_a_dict = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(ConfigError, match=r"tensor\.pt.*expected a state dict"):
        read_reference_embeddings(not_a_dict, 30, 20, 8)


def test_run_with_a_checkpoint_evaluates_without_training(tiny_dataset_dir, tmp_path):
    data = load_prepared("tiny", tiny_dataset_dir)
    path = tmp_path / "sgl_ckpt"
    torch.manual_seed(1)
    torch.save({"users_feature.weight": torch.randn(data.n_users, 64),
                "items_feature.weight": torch.randn(data.n_items, 64)}, path)
    config = tiny_config("sgl", **{"backend.checkpoint": str(path), "backend.pooling": "normalized_sum",
                                   "ddrm.enabled": True, "ddrm.inference_steps": 0})
    result = run(config, data=data, progress=False)
    assert result.backend.epochs_run == 0 and result.ddrm.epochs_run == 0
    assert 0.0 <= result.test["recall_at_20"] <= 1.0

    bad = tiny_config("mf", **{"backend.checkpoint": str(tmp_path / "absent")})
    with pytest.raises(ConfigError, match="absent"):
        run(bad, data=data, progress=False)
