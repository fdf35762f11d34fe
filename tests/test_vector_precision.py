"""``train.precision: bf16`` for the standalone models: Mult-VAE and DiffRec run their MLPs under bf16 autocast
(fp32 parameters, losses and scores), fp32 computes exactly what it did before, every other standalone model
runs fp32 under bf16."""

from __future__ import annotations

import contextlib
import math
import warnings

import pytest
import torch
from torch import nn

from ddrm import precision
from ddrm.baselines.base import dense_rows
from ddrm.campaign.estimate import probe_key
from ddrm.config import Config, load_config
from ddrm.data import load_prepared
from ddrm.registry import get_model, model_names, model_params
from ddrm.train import run

SMALL = {"multivae": {"hidden_dims": (16, 4), "anneal_steps": 10},
         "diffrec": {"hidden_dims": (16,), "diffusion_steps": 4, "noise_scale": 0.1, "noise_min": 0.1,
                     "noise_max": 0.5}}
BF16_MODELS = ("multivae", "diffrec")


@contextlib.contextmanager
def quiet_precision_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", precision.PrecisionWarning)
        yield


def build(name: str, data, dtype: str = "fp32", **extra):
    torch.manual_seed(0)
    model = get_model(name)(model_params(name)(**{**SMALL[name], **extra}), data.n_users, data.n_items,
                            data.csr("train"))
    model.precision = dtype
    return model


def linear_output_dtypes(model) -> tuple[dict[str, set], list]:
    seen: dict[str, set] = {}
    hooks = [module.register_forward_hook(lambda m, _i, out, name=name: seen.setdefault(name, set()).add(out.dtype))
             for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return seen, hooks


def test_only_mult_vae_and_diffrec_declare_bf16():
    assert {name for name in model_names() if precision.model_supports_bf16(name)} == set(BF16_MODELS)
    for name in model_names():
        expected = "bf16" if name in BF16_MODELS else "fp32"
        assert precision.stage_precision("bf16", "model", name) == expected
        assert precision.stage_precision("fp32", "model", name) == "fp32"
    assert precision.stage_precision("bf16", "model") == "fp32"  # no model named: nothing claims bf16
    assert precision.stage_precision("bf16", "backend", "multivae") == "fp32"
    assert precision.stage_precision("bf16", "ddrm") == "bf16"


@pytest.mark.parametrize("name", BF16_MODELS)
def test_bf16_runs_the_mlps_in_bf16_with_fp32_parameters_losses_and_scores(tiny_dataset_dir, name):
    data = load_prepared("tiny", tiny_dataset_dir)
    model = build(name, data, "bf16")
    seen, hooks = linear_output_dtypes(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    users = torch.arange(16)
    model.train()
    loss = model.loss(users)
    # every nn.Linear that runs as a module ran in bf16 (Mult-VAE's first layer is the sparse embedding_bag)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)} - {"encoder.0"}
    assert set(seen) == linears and all(dtypes == {torch.bfloat16} for dtypes in seen.values())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    for param in model.parameters():
        assert param.dtype == torch.float32 and param.grad.dtype == torch.float32
    assert all(v.dtype == torch.float32 for s in optimizer.state.values() for v in s.values() if v.is_floating_point())
    seen.clear()
    model.eval()
    scores = model.scorer()(torch.arange(5))
    assert set(seen) == linears and all(dtypes == {torch.bfloat16} for dtypes in seen.values())
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    for hook in hooks:
        hook.remove()
    # what leaves the bf16 MLPs is fp32 again (the losses, posterior steps and ranking see fp32 only)
    if name == "diffrec":
        x = torch.rand(3, data.n_items)
        assert model.denoise(x, torch.tensor([1, 2, 3])).dtype == torch.float32
    else:
        mu, logvar = model.encode(model.sparse_rows(torch.arange(3)))
        assert mu.dtype == logvar.dtype == model.decode(mu).dtype == torch.float32
    # the bf16 model computes nearly what the fp32 one does from the same weights
    reference = build(name, data, "fp32")
    reference.load_state_dict(model.state_dict())
    reference.eval()
    expected = reference.scorer()(torch.arange(5))
    assert (scores - expected).abs().max() < 0.05 * expected.abs().max()
    assert not torch.equal(scores, expected)


@pytest.mark.parametrize("name", BF16_MODELS)
def test_fp32_runs_every_layer_in_fp32(tiny_dataset_dir, name):
    data = load_prepared("tiny", tiny_dataset_dir)
    model = build(name, data, "fp32")
    seen, _ = linear_output_dtypes(model)
    model.loss(torch.arange(8))
    model.eval()
    model.scorer()(torch.arange(4))
    assert seen and all(dtypes == {torch.float32} for dtypes in seen.values())


# What the two models computed before train.precision reached them (the code path without autocast), on the
# same modules: fp32 must give these bit for bit.
def diffrec_denoise(model, x_t, t):
    from ddrm.diffusion.denoiser import sinusoidal_embedding

    step = model.step_proj(sinusoidal_embedding(t, model.config.step_emb_dim))
    x_t = nn.functional.dropout(x_t, model.config.dropout, training=model.training)
    return model.net(torch.cat([x_t, step], dim=-1))


def diffrec_loss(model, users):
    x0 = dense_rows(model.train_matrix, users)
    t = torch.randint(1, model.schedule.steps + 1, (len(users),), device=x0.device)
    x_t = model.schedule.add_noise(x0, torch.randn_like(x0), t)
    mse = (diffrec_denoise(model, x_t, t) - x0).pow(2).mean(dim=1)
    if model.config.reweight:
        mse = model.step_weights[t] * mse
    return mse.mean()


def diffrec_scores(model, users):
    x = dense_rows(model.train_matrix, users)
    for step in range(model.schedule.steps, 0, -1):
        t = torch.full((len(x),), step, dtype=torch.long)
        x = model.schedule.step(diffrec_denoise(model, x, t), step, x)
    return x


def multivae_encode(model, rows):
    first = model.encoder[0]
    values = (1.0 / torch.sqrt(rows.counts.float())).repeat_interleave(rows.counts)
    values = nn.functional.dropout(values, model.config.dropout, training=model.training)
    h = nn.functional.embedding_bag(rows.items, first.weight.t(), rows.offsets, mode="sum",
                                    per_sample_weights=values) + first.bias
    h = model.encoder[1:](h)
    return h[:, :model.latent], h[:, model.latent:]


def multivae_loss(model, users):
    rows = model.sparse_rows(users)
    mu, logvar = multivae_encode(model, rows)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    log_probs = torch.log_softmax(model.decoder(z), dim=1)
    nll = -log_probs[rows.rows, rows.items].sum() / len(users)
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    beta = model.kl_weight()
    model.anneal_step += 1
    return nll + beta * kl


def multivae_scores(model, users):
    mu, _ = multivae_encode(model, model.sparse_rows(users))
    return model.decoder(mu)


REFERENCE = {"multivae": (multivae_loss, multivae_scores), "diffrec": (diffrec_loss, diffrec_scores)}


@pytest.mark.parametrize("name", BF16_MODELS)
def test_fp32_computes_bit_for_bit_what_the_code_without_autocast_did(tiny_dataset_dir, name):
    data = load_prepared("tiny", tiny_dataset_dir)
    reference_loss, reference_scores = REFERENCE[name]
    users = torch.tensor([7, 1, 30, 12, 45, 0, 22, 9])
    models = {"model": build(name, data, "fp32"), "reference": build(name, data, "fp32")}
    models["model"].precision = "fp32"  # what fit_model leaves (it sets nothing under fp32)
    losses, grads, scores = {}, {}, {}
    for key, model in models.items():
        loss_fn = model.loss if key == "model" else (lambda u, m=model: reference_loss(m, u))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        model.train()
        torch.manual_seed(3)
        history = []
        for _ in range(3):  # a few updates: the dropout and noise draws must line up too
            loss = loss_fn(users)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.detach())
        losses[key] = torch.stack(history)
        grads[key] = [p.grad.clone() for p in model.parameters()]
        model.eval()
        with torch.no_grad():
            scores[key] = model.scorer()(users) if key == "model" else reference_scores(model, users)
    assert torch.equal(losses["model"], losses["reference"])
    assert all(torch.equal(a, b) for a, b in zip(grads["model"], grads["reference"]))
    assert torch.equal(scores["model"], scores["reference"])


TINY_RUN = {"data.name": "tiny", "train.epochs": 2, "model.batch_size": 16, "model.lr": 0.01}


@pytest.mark.parametrize("name", BF16_MODELS)
def test_a_tiny_bf16_run_finishes_with_finite_metrics_and_records_its_precision(tiny_dataset_dir, name, monkeypatch):
    from ddrm.baselines import base

    asked: list[str] = []
    real = base.autocast
    monkeypatch.setattr(base, "autocast", lambda dtype, device: asked.append(dtype) or real(dtype, device))
    small = {f"model.{k}": list(v) if isinstance(v, tuple) else v for k, v in SMALL[name].items()}
    config = Config().replace({**TINY_RUN, "model.name": name, "train.precision": "bf16", **small})
    with quiet_precision_warning():
        result = run(config, data_dir=tiny_dataset_dir, progress=False)
    assert asked and set(asked) == {"bf16"}  # the stage handed bf16 to the model: training and scoring autocast
    assert all(math.isfinite(v) for v in {**result.valid, **result.test}.values())
    assert result.test["recall_at_20"] > 0
    assert all(math.isfinite(h["loss"]) for h in result.backend.history)
    assert result.info["precision_stages"] == {"backend": "fp32", "ddrm": "bf16", "model": "bf16"}


@pytest.mark.parametrize("name", ["cdae", "ease", "mostpop"])
def test_other_standalone_models_run_fp32_under_bf16(tiny_dataset_dir, name):
    config = Config().replace({"data.name": "tiny", "model.name": name, **(
        {"train.epochs": 2, "model.batch_size": 16, "model.lr": 0.01, "model.hidden_dims": [16, 4]}
        if name == "cdae" else {})})
    fp32 = run(config, data_dir=tiny_dataset_dir, progress=False)
    with quiet_precision_warning():
        bf16 = run(config.replace({"train.precision": "bf16"}), data_dir=tiny_dataset_dir, progress=False)
    assert bf16.info["precision_stages"]["model"] == "fp32"
    assert bf16.valid == fp32.valid and bf16.test == fp32.test  # the same computation, bit for bit
    if name == "cdae":
        assert [h["loss"] for h in bf16.backend.history] == [h["loss"] for h in fp32.backend.history]


def test_a_standalone_probe_is_keyed_by_the_precision_it_runs_at():
    for name in BF16_MODELS:
        config = load_config(None, {"model.name": name})
        assert probe_key(config) == f"{name}+none+alone"
        assert probe_key(config.replace({"train.precision": "bf16"})) == f"{name}+none+alone@bf16"
    for name in ("cdae", "ease"):
        assert probe_key(load_config(None, {"model.name": name, "train.precision": "bf16"})) == f"{name}+none+alone"
