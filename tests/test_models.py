"""Standalone baselines (``model.name``): each learns on generated data, scores every item, and runs through
``train.run`` with the same full-ranking evaluation (masked items never recommended)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_interactions
from ddrm.config import Config
from ddrm.registry import model_params
from ddrm.data import write_prepared
from ddrm.data.prepared import InteractionData
from ddrm.data.sampling import UserBatchSampler
from ddrm.errors import ConfigError
from ddrm.loop import BatchKind
from ddrm.registry import get_model, model_names
from ddrm.train import run


def tiny_data() -> InteractionData:
    train, valid, test = make_interactions(n_users=60, n_items=40, per_user=12, seed=4)
    return InteractionData(name="tiny", path=Path("."), n_users=60, n_items=40, train=train, valid=valid, test=test)


VECTOR_MODELS = [name for name in model_names() if get_model(name).batch_kind is BatchKind.USERS]  # AdaGCL: test_adagcl


@pytest.mark.parametrize("name", VECTOR_MODELS)
def test_model_learns_and_scores_every_item(name):
    data = tiny_data()
    torch.manual_seed(0)
    model = get_model(name)(model_params(name)(hidden_dims=(32, 8), **({"anneal_steps": 50} if name == "multivae" else {})), data.n_users,
                            data.n_items, data.csr("train"))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    users = torch.arange(data.n_users)
    losses = []
    for _ in range(60):
        loss = model.loss(users)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    model.eval()
    scores = model.scorer()(users)
    assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()
    # the model ranks a user's held-out items above random ones after training
    valid = data.csr("valid").toarray().astype(bool)
    train = data.csr("train").toarray().astype(bool)
    held_out = scores[torch.from_numpy(valid)].mean()
    unseen = scores[torch.from_numpy(~valid & ~train)].mean()
    assert held_out > unseen


def test_multivae_kl_weight_anneals_to_its_cap_and_eval_is_deterministic():
    data = tiny_data()
    model = get_model("multivae")(model_params("multivae")(hidden_dims=(16, 4), anneal_cap=0.2, anneal_steps=10),
                                  data.n_users, data.n_items, data.csr("train"))
    weights = []
    for _ in range(4):
        weights.append(model.kl_weight())
        model.loss(torch.arange(5))
    assert weights == pytest.approx([0.0, 0.1, 0.2, 0.2])
    model.eval()
    first, second = model.scorer()(torch.arange(10)), model.scorer()(torch.arange(10))
    assert torch.equal(first, second)


def test_user_batch_sampler_covers_each_user_with_history_once():
    data = tiny_data()
    sampler = UserBatchSampler(data.csr("train"), seed=0)
    seen = torch.cat([b[0] for b in sampler.batches(7)]).numpy()
    assert sorted(seen) == sorted(np.unique(data.train[:, 0])) and sampler.n_train == len(seen)


def test_run_trains_a_standalone_model_and_rejects_unknown_names(tmp_path):
    train, valid, test = make_interactions(seed=5)
    write_prepared(tmp_path / "tiny", train, valid, test)
    config = Config().replace({"data.name": "tiny", "model.name": "multivae", "model.hidden_dims": [32, 8],
                               "model.batch_size": 16, "train.epochs": 3, "model.lr": 0.01})
    result = run(config, data_dir=tmp_path, progress=False)
    assert result.ddrm is None and len(result.backend.history) == 3
    assert 0 < result.test["recall_at_20"] <= 1 and result.config["model"]["name"] == "multivae"
    payload = result.to_json()
    assert "model" in payload and "backend" not in payload and "ddrm" not in payload
    with pytest.raises(ConfigError, match="model.name"):
        Config().replace({"model.name": "nope"})


def test_diffrec_step_weights_and_inference_start():
    data = tiny_data()
    config = model_params("diffrec")(hidden_dims=(16,), diffusion_steps=4, noise_scale=0.1, noise_min=0.1,
                         noise_max=0.5)
    model = get_model("diffrec")(config, data.n_users, data.n_items, data.csr("train"))
    alpha_bar = model.schedule.alpha_bar
    snr = alpha_bar / (1 - alpha_bar)
    assert model.step_weights[1] == 1.0
    for t in (2, 3, 4):
        assert model.step_weights[t].item() == pytest.approx(float(snr[t - 1] - snr[t]), rel=1e-5)
        assert model.step_weights[t] > 0
    model.eval()
    users = torch.arange(8)
    # sampling_steps 0 starts from the user's own vector: deterministic; > 0 noises it first
    assert torch.equal(model.scorer()(users), model.scorer()(users))
    noisy = get_model("diffrec")(config.model_copy(update={"sampling_steps": 2}), data.n_users, data.n_items,
                                 data.csr("train"))
    noisy.load_state_dict(model.state_dict())
    noisy.eval()
    assert not torch.allclose(noisy.scorer()(users), model.scorer()(users))
