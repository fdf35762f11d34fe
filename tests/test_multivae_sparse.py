"""Mult-VAE's sparse encoder: the first layer from the users' nonzeros equals the dense (B, I) computation.

The reference below is the dense formula Mult-VAE used before (L2-normalise the 0/1 row, input dropout, the
encoder MLP; likelihood ``-(log_probs * x).sum(1).mean()``), applied to the same model's parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from conftest import make_interactions
from ddrm.baselines.base import dense_rows
from ddrm.registry import get_model, model_params

N_USERS, N_ITEMS = 60, 40
EMPTY_USERS = (3, 17)  # users with no training interactions: the first layer is its bias alone


def train_matrix() -> sp.csr_matrix:
    train, _, _ = make_interactions(n_users=N_USERS, n_items=N_ITEMS, per_user=12, seed=7)
    train = train[~np.isin(train[:, 0], EMPTY_USERS)]
    matrix = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (train[:, 0], train[:, 1])),
                           shape=(N_USERS, N_ITEMS))
    matrix.sum_duplicates()
    return matrix


def multivae(dropout: float = 0.5, hidden_dims=(16, 4), seed: int = 0):
    torch.manual_seed(seed)
    config = model_params("multivae")(hidden_dims=hidden_dims, dropout=dropout, anneal_steps=4, anneal_cap=0.3)
    model = get_model("multivae")(config, N_USERS, N_ITEMS, train_matrix())
    with torch.no_grad():  # larger weights than Xavier's on 40 items: tanh away from its linear part
        for param in model.parameters():
            param.mul_(3.0)
    return model


def dense_encode(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = nn.functional.normalize(x, dim=1)
    x = nn.functional.dropout(x, model.config.dropout, training=model.training)
    h = model.encoder(x)
    return h[:, :model.latent], h[:, model.latent:]


def dense_loss(model, users: torch.Tensor) -> torch.Tensor:
    x = dense_rows(model.train_matrix, users)
    mu, logvar = dense_encode(model, x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    log_probs = torch.log_softmax(model.decoder(z), dim=1)
    nll = -(log_probs * x).sum(dim=1).mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    beta = model.kl_weight()
    model.anneal_step += 1
    return nll + beta * kl


def dense_scores(model, users: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        mu, _ = dense_encode(model, dense_rows(model.train_matrix, users))
        return model.decoder(mu)


@pytest.mark.parametrize("hidden_dims", [(16, 4), (8,)], ids=["two_layers", "one_layer"])
def test_eval_scores_equal_the_dense_computation(hidden_dims):
    model = multivae(hidden_dims=hidden_dims).eval()
    users = torch.tensor([5, 3, 0, 59, 17, 22, 5])  # unordered, repeated, and both users without training items
    scores = model.scorer()(users)
    expected = dense_scores(model, users)
    assert scores.dtype == torch.float32 and scores.shape == (len(users), N_ITEMS)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(scores[0], scores[1])  # the test can tell users apart
    everyone = torch.arange(N_USERS)
    torch.testing.assert_close(model.scorer()(everyone), dense_scores(model, everyone), rtol=1e-5, atol=1e-5)


def test_loss_and_gradients_equal_the_dense_computation_without_dropout():
    model = multivae(dropout=0.0).train()
    model.anneal_step.fill_(2)  # beta = 0.3 * 2 / 4: the KL term counts
    users = torch.tensor([9, 3, 41, 0, 17, 33, 12, 58])

    def loss_and_grads(loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        model.zero_grad(set_to_none=True)
        step = int(model.anneal_step)
        torch.manual_seed(11)  # the same reparameterisation noise for both
        loss = loss_fn(model, users)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        steps = int(model.anneal_step) - step
        model.anneal_step.fill_(step)
        return loss.detach(), grads, steps

    sparse_loss, sparse_grads, sparse_steps = loss_and_grads(lambda m, u: m.loss(u))
    ref_loss, ref_grads, ref_steps = loss_and_grads(dense_loss)
    assert sparse_steps == ref_steps == 1
    torch.testing.assert_close(sparse_loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert set(sparse_grads) == set(ref_grads)
    for name, grad in ref_grads.items():
        assert grad.abs().max() > 0, name  # every parameter gets a gradient (the check is not vacuous)
        torch.testing.assert_close(sparse_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_dropout_touches_only_the_users_items_and_feeds_the_first_layer():
    p = 0.5
    model = multivae(dropout=p).train()
    matrix = model.train_matrix
    users = torch.tensor([4, 3, 30, 8, 51, 17])
    rows = model.sparse_rows(users)
    for row, user in enumerate(users.tolist()):  # the nonzeros are exactly the user's training items
        own = matrix.indices[matrix.indptr[user]:matrix.indptr[user + 1]]
        assert rows.items[rows.rows == row].tolist() == own.tolist()
        assert rows.counts[row] == matrix.indptr[user + 1] - matrix.indptr[user]
    normalised = 1.0 / torch.sqrt(rows.counts.float())[rows.rows]
    kept = []
    for draw in range(300):
        weights = model.input_weights(rows)
        assert weights.shape == rows.items.shape
        dropped = weights == 0
        # inverted dropout: a kept item carries the normalised value rescaled by 1 / (1 - p), a dropped one 0
        torch.testing.assert_close(weights[~dropped], normalised[~dropped] / (1 - p))
        kept.append((~dropped).float().mean().item())
    assert abs(np.mean(kept) - (1 - p)) < 0.02  # P(keep) = 1 - p, as F.dropout's
    model.eval()
    torch.testing.assert_close(model.input_weights(rows), normalised)  # no dropout in eval
    model.train()
    # the first layer sees exactly the dropped-out normalised row: the dense encoder on that row gives the same
    torch.manual_seed(5)
    mu, logvar = model.encode(rows)
    torch.manual_seed(5)
    weights = model.input_weights(rows)
    x = torch.zeros(len(users), N_ITEMS)
    x[rows.rows, rows.items] = weights
    h = model.encoder(x)
    torch.testing.assert_close(mu, h[:, :model.latent], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logvar, h[:, model.latent:], rtol=1e-5, atol=1e-5)


def test_state_dict_keys_are_those_of_the_dense_model_and_a_checkpoint_loads():
    model = multivae(hidden_dims=(16, 4))
    expected = {"encoder.0.weight": (16, N_ITEMS), "encoder.0.bias": (16,), "encoder.2.weight": (8, 16),
                "encoder.2.bias": (8,), "decoder.0.weight": (16, 4), "decoder.0.bias": (16,),
                "decoder.2.weight": (N_ITEMS, 16), "decoder.2.bias": (N_ITEMS,), "anneal_step": ()}
    state = model.state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == expected
    other = multivae(hidden_dims=(16, 4), seed=1)
    other.load_state_dict(state)  # strict: same keys and shapes
    model.eval(), other.eval()
    users = torch.arange(10)
    assert torch.equal(model.scorer()(users), other.scorer()(users))
