"""T-CE / R-CE / DeCA loss plug-ins (``backend.denoise``): their dropping / weighting rules and their use in training."""

import math

import numpy as np
import pytest
import torch

from conftest import make_interactions
from ddrm.config import Config
from ddrm.registry import denoise_params, model_params

MF = model_params("mf")()  # the backend a plug-in sits on (only DeCA reads it)
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
    rule = build_loss_rule(denoise_params("tce")(max_rate=0.2, num_gradual=10), MF, 0, 0)
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
    rule = build_loss_rule(denoise_params("rce")(beta=0.5), MF, 0, 0)
    losses = torch.tensor([1.0, 2.0, 3.0])
    scores = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    expected = np.mean([1 / (1 + math.exp(2)) ** 0.5 * 1, 0.5 ** 0.5 * 2, (1 / (1 + math.exp(-3))) ** 0.5 * 3])
    value = rule(losses, scores)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert not value.requires_grad  # the weight is detached; only the losses carry gradients
    flat = build_loss_rule(denoise_params("rce")(beta=0.0), MF, 0, 0)
    assert flat(losses, scores).item() == pytest.approx(2.0)  # beta 0 = plain mean
    assert build_loss_rule(denoise_params("none")(), MF, 0, 0) is None


def test_bad_denoise_settings_name_the_key():
    for name, key, value in (("deca2", "denoise.name", "deca2"), ("tce", "denoise.max_rate", 1.0),
                             ("rce", "denoise.beta", -1), ("deca", "denoise.alpha", 1.5), ("deca", "denoise.c1", -1)):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            Config().replace({"denoise.name": name, key: value})
    with pytest.raises(ConfigError, match=r"denoise\.name.*ease.*BPR backend"):  # a plug-in needs a BPR loss
        Config().replace({"model.name": "ease", "denoise.name": "tce"})


@pytest.mark.parametrize("denoise", ["tce", "rce", "deca"])
def test_backends_train_with_each_plugin(tmp_path, denoise):
    train, valid, test = make_interactions()
    write_prepared(tmp_path / "tiny", train, valid, test)
    config = Config().replace({"data.name": "tiny", "backend.name": "lightgcn", "backend.layers": 1,
                               "denoise.name": denoise, **({"denoise.num_gradual": 5} if denoise == "tce" else {}), "model.lr": 0.01,
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
    assert key(**{"denoise.name": "tce"}) != key()  # the plug-in's section enters the key only when one is on
    assert key(**{"denoise.name": "tce"}) != key(**{"denoise.name": "tce", "denoise.max_rate": 0.1})
    assert key(**{"denoise.name": "deca"}) != key(**{"denoise.name": "deca", "denoise.c1": 5.0})
    with pytest.raises(ConfigError, match="unknown config key 'denoise.beta'"):  # another plug-in's setting
        key(**{"denoise.name": "tce", "denoise.beta": 0.9})


def _deca(**settings):
    torch.manual_seed(0)
    return build_loss_rule(denoise_params("deca")(**{k.removeprefix("deca_"): v for k, v in settings.items()}),
                           model_params("mf")(dim=4), n_users=3, n_items=5)


def test_deca_bernoulli_kl_matches_torch_distributions():
    from torch.distributions import Bernoulli, kl_divergence

    from ddrm.denoise.deca import bernoulli_kl

    a, b = torch.tensor([-3.0, 0.0, 2.0, 8.0]), torch.tensor([1.0, -2.0, 2.0, -1.0])
    expected = kl_divergence(Bernoulli(logits=a), Bernoulli(logits=b))
    assert torch.allclose(bernoulli_kl(a, b), expected, atol=1e-6)
    assert torch.allclose(bernoulli_kl(a, a), torch.zeros(4), atol=1e-7)


def test_deca_terms_follow_the_dp_and_dn_likelihoods():
    rule = _deca(deca_c1=100.0, deca_c2=10.0)
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 3])
    pos_logits, neg_logits = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-2.0, 1.0, 0.0])
    p, pn = torch.sigmoid(pos_logits), torch.sigmoid(neg_logits)
    h1p, h1n = torch.sigmoid(rule.positive_noise(users, pos)), torch.sigmoid(rule.positive_noise(users, neg))
    h2p, h2n = torch.sigmoid(rule.positive_keep(users, pos)), torch.sigmoid(rule.positive_keep(users, neg))
    dp_pos, dp_neg = rule.pair_terms(pos_logits, neg_logits, users, pos, neg, denoise_positives=True)
    assert torch.allclose(dp_pos, -(1 - p) * torch.log(h1p), atol=1e-6)
    assert torch.allclose(dp_neg, -((1 - pn) * torch.log(1 - h1n) - 100.0 * pn), atol=1e-5)
    dn_pos, dn_neg = rule.pair_terms(pos_logits, neg_logits, users, pos, neg, denoise_positives=False)
    assert torch.allclose(dn_pos, -(p * torch.log(h2p) - 10.0 * (1 - p)), atol=1e-5)
    assert torch.allclose(dn_neg, -pn * torch.log(1 - h2n), atol=1e-6)


def test_deca_pushes_a_positive_less_where_the_helper_flags_it_as_noise():
    """DP step: d loss / d p_ui = log h1_ui, so a positive the helper deems likely noise (h1 near 1) is
    pulled up less than one it deems clean (h1 near 0)."""
    rule = _deca()
    with torch.no_grad():
        rule.positive_noise.users.weight.zero_()
        rule.positive_noise.items.weight.zero_()
        rule.positive_noise.users.weight[0, 0], rule.positive_noise.items.weight[0, 0] = 3.0, 2.0  # h1(0,0) high
        rule.positive_noise.users.weight[1, 0], rule.positive_noise.items.weight[1, 0] = 3.0, -2.0  # h1(1,1) low
    logits = torch.zeros(2, requires_grad=True)
    pos_term, _ = rule.pair_terms(logits, torch.zeros(2), torch.tensor([0, 1]), torch.tensor([0, 1]),
                                  torch.tensor([2, 2]), denoise_positives=True)
    pos_term.sum().backward()
    noisy_push, clean_push = -logits.grad[0], -logits.grad[1]
    assert 0 < noisy_push < clean_push


def test_deca_alternates_helpers_by_step_and_only_counts_training_steps():
    rule = _deca()
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3])
    for step in range(2):
        for p in rule.parameters():
            p.grad = None
        rule(torch.zeros(2), torch.ones(2), -torch.ones(2), users, pos, neg).backward()
        used, idle = (rule.positive_noise, rule.positive_keep) if step == 0 else (rule.positive_keep, rule.positive_noise)
        assert used.users.weight.grad is not None and idle.users.weight.grad is None
        assert rule.agreement_model.users.weight.grad is not None
    assert int(rule.step) == 2 and "step" in rule.state_dict()
    rule.eval()
    rule(torch.zeros(2), torch.ones(2), -torch.ones(2), users, pos, neg)
    assert int(rule.step) == 2
    with pytest.raises(ValueError, match="triple"):
        rule(torch.zeros(2), torch.ones(2))


def test_deca_agreement_is_zero_when_the_models_agree():
    rule = _deca(deca_alpha=0.3)
    users, items = torch.tensor([0, 2]), torch.tensor([1, 4])
    g = rule.agreement_model(users, items).detach()
    assert torch.allclose(rule.agreement(g, users, items), torch.zeros(2), atol=1e-6)
    assert torch.all(rule.agreement(g + 2.0, users, items) > 0)
