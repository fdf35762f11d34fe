"""T-CE / R-CE loss plug-ins (``backend.denoise``): their dropping / weighting rules and their use in training."""

import math

import numpy as np
import pytest
import torch

from conftest import make_interactions
from ddrm.config import BackendConfig, Config
from ddrm.data import write_prepared
from ddrm.denoise import build_loss_rule
from ddrm.denoise.tce import drop_rate
from ddrm.errors import ConfigError
from ddrm.train import run


def test_tce_drop_rate_ramps_linearly_then_stays():
    assert drop_rate(0, 0.2, 100) == 0.0
    assert drop_rate(50, 0.2, 100) == pytest.approx(0.1)
    assert drop_rate(100, 0.2, 100) == drop_rate(10_000, 0.2, 100) == pytest.approx(0.2)


def test_tce_drops_the_largest_losses_and_counts_training_steps():
    rule = build_loss_rule(BackendConfig(denoise="tce", tce_max_rate=0.2, tce_num_gradual=10))
    losses = torch.tensor([5.0, 0.1, 0.2, 9.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    scores = torch.zeros(10)
    assert rule(losses, scores).item() == pytest.approx(losses.mean().item())  # step 0: nothing dropped
    rule.step.fill_(10)  # full rate: the 2 largest (9.0, 5.0) dropped
    assert rule(losses, scores).item() == pytest.approx(np.mean([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]))
    assert int(rule.step) == 11 and "step" in rule.state_dict()
    rule.eval()
    rule(losses, scores)
    assert int(rule.step) == 11  # evaluation does not advance the schedule
    # gradients flow only to the kept triples
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0], requires_grad=True)
    rule.train()
    rule(losses, torch.zeros(5)).backward()
    assert losses.grad[-1] == 0 and torch.all(losses.grad[:-1] > 0)


def test_rce_weights_by_detached_sigmoid_score_power():
    rule = build_loss_rule(BackendConfig(denoise="rce", rce_beta=0.5))
    losses = torch.tensor([1.0, 2.0, 3.0])
    scores = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    expected = np.mean([1 / (1 + math.exp(2)) ** 0.5 * 1, 0.5 ** 0.5 * 2, (1 / (1 + math.exp(-3))) ** 0.5 * 3])
    value = rule(losses, scores)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert not value.requires_grad  # the weight is detached; only the losses carry gradients
    flat = build_loss_rule(BackendConfig(denoise="rce", rce_beta=0.0))
    assert flat(losses, scores).item() == pytest.approx(2.0)  # beta 0 = plain mean
    assert build_loss_rule(BackendConfig()) is None


def test_bad_denoise_settings_name_the_key():
    for key, value in (("backend.denoise", "deca2"), ("backend.tce_max_rate", 1.0), ("backend.rce_beta", -1)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            Config().replace({key: value})


@pytest.mark.parametrize("denoise", ["tce", "rce"])
def test_backends_train_with_each_plugin(tmp_path, denoise):
    train, valid, test = make_interactions()
    write_prepared(tmp_path / "tiny", train, valid, test)
    config = Config().replace({"data.name": "tiny", "backend.name": "lightgcn", "backend.layers": 1,
                               "backend.denoise": denoise, "backend.tce_num_gradual": 5, "backend.lr": 0.01,
                               "ddrm.enabled": False, "train.epochs": 8, "train.batch_size": 64,
                               "train.patience": 100})
    result = run(config, data_dir=tmp_path, progress=False)
    losses = [h["loss"] for h in result.backend.history]
    assert losses[-1] < losses[0] and 0 < result.test["recall_at_20"] <= 1
    plain = run(config.replace({"backend.denoise": "none"}), data_dir=tmp_path, progress=False)
    assert plain.backend.history[-1]["loss"] != pytest.approx(result.backend.history[-1]["loss"])


def test_backend_cache_key_depends_only_on_the_active_plugin(tmp_path):
    from ddrm.data import load_prepared
    from ddrm.train import backend_cache_key

    train, valid, test = make_interactions()
    write_prepared(tmp_path / "tiny", train, valid, test)
    data = load_prepared("tiny", tmp_path)
    key = lambda **o: backend_cache_key(Config().replace({"data.name": "tiny", **o}), data)  # noqa: E731
    assert key() == key(**{"backend.rce_beta": 0.9, "backend.tce_max_rate": 0.1})  # unused settings
    assert key(**{"backend.denoise": "tce"}) != key()
    assert key(**{"backend.denoise": "tce"}) == key(**{"backend.denoise": "tce", "backend.rce_beta": 0.9})
    assert key(**{"backend.denoise": "tce"}) != key(**{"backend.denoise": "tce", "backend.tce_max_rate": 0.1})
