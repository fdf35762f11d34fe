"""DDRM variant switches (DESIGN §2): transformer denoiser and dynamic noise scale, on generated data."""

import pytest
import torch

from conftest import assert_learns_and_scores_all_items

from ddrm.config import Config
from ddrm.data import load_prepared
from ddrm.data.sampling import BPRSampler
from ddrm.diffusion.ddrm import DDRM
from ddrm.diffusion.denoiser import MLPDenoiser, TransformerDenoiser, build_denoiser
from ddrm.diffusion.schedule import NoiseSchedule
from ddrm.errors import ConfigError
from ddrm.train import build_backend

torch.set_num_threads(1)

FAST = {"train.epochs": 3, "train.batch_size": 64, "train.patience": 5, "backend.lr": 0.01,
        "ddrm.hidden_dims": [16, 32], "ddrm.steps": 5, "ddrm.lr": 0.01}


def tiny_config(**extra) -> Config:
    return Config().replace({"data.name": "tiny", **FAST, **extra})


# --- transformer denoiser -------------------------------------------------------------------------------

def small_transformer(**kwargs) -> TransformerDenoiser:
    torch.manual_seed(0)
    args = dict(dim=16, hidden_dims=(8, 24), activation="relu", dropout=0.0, heads=4, tokens=3)
    args.update(kwargs)
    return TransformerDenoiser(**args)


def test_transformer_denoiser_output_shape_and_gradients_reach_query_key_value():
    net = small_transformer()
    x, cond = torch.randn(5, 16), torch.randn(5, 16)
    t = torch.tensor([1, 2, 3, 4, 5])
    out = net(x, t, cond)
    assert out.shape == (5, 16) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    for layer in (net.query, net.key, net.value, net.out_proj, net.step_proj):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, layer


def test_transformer_denoiser_depends_on_condition_step_and_noisy_input():
    net = small_transformer().eval()
    x, cond = torch.randn(4, 16), torch.randn(4, 16)
    t = torch.full((4,), 3)
    base = net(x, t, cond)
    assert not torch.allclose(net(x, t, cond + torch.randn(4, 16)), base)  # condition (query) matters
    assert not torch.allclose(net(x, torch.full((4,), 1), cond), base)  # step (key) matters
    assert not torch.allclose(net(x + torch.randn(4, 16), t, cond), base)  # noisy embedding (value) matters
    # the condition also matters through the attention weights alone (no query residual path):
    # with identical value tokens every mix is the same, with different ones the mix depends on the query
    weights = []
    for c in (cond, cond * 3 + 1):
        q = net._split(net.query(c))
        k = net._split(net.key(net.step_proj(torch.ones(4, net.step_emb_dim))))
        weights.append(torch.softmax(q @ k.transpose(-1, -2) / (16 // 4) ** 0.5, dim=-1))
    assert not torch.allclose(weights[0], weights[1])


def test_transformer_denoiser_can_represent_the_identity():
    net = small_transformer().eval()
    last = net.mlp[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.randn(3, 16)
    assert torch.allclose(net(x, torch.tensor([1, 2, 3]), torch.randn(3, 16)), x)


def test_build_denoiser_follows_the_config():
    assert isinstance(build_denoiser(tiny_config().ddrm, 16), MLPDenoiser)
    net = build_denoiser(tiny_config(**{"ddrm.denoiser": "transformer", "ddrm.transformer_heads": 2,
                                        "ddrm.transformer_tokens": 5}).ddrm, 16)
    assert isinstance(net, TransformerDenoiser) and (net.heads, net.tokens, net.dim) == (2, 5, 16)


def test_tiny_ddrm_with_transformer_denoiser_trains_and_scores_all_items(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    config = tiny_config(**{"ddrm.denoiser": "transformer", "backend.dim": 16})
    backend = build_backend(config, data, torch.device("cpu"))
    torch.manual_seed(0)
    model = DDRM(config.ddrm, backend, data.csr("train"), seed=0)
    assert isinstance(model.item_denoiser, TransformerDenoiser)
    assert isinstance(model.user_denoiser, TransformerDenoiser)
    assert_learns_and_scores_all_items(model, data, steps=50)


# --- dynamic scale --------------------------------------------------------------------------------------

def test_schedule_scale_multiplies_the_noise_variance():
    sched = NoiseSchedule(10, 1e-3, 1e-1, 0.5)
    t = torch.tensor([2, 7, 10])
    scale = torch.tensor([[1.0], [0.25], [0.5]])
    x0, noise = torch.zeros(3, 6), torch.ones(3, 6)
    xt = sched.add_noise(x0, noise, t, scale=scale)  # x0 = 0, eps = 1: x_t is the noise std itself
    var = (1 - sched.alpha_bar[t]).float().unsqueeze(-1) * scale
    assert torch.allclose(xt, var.sqrt().expand(3, 6))
    assert torch.allclose(sched.noise_std(t, scale).float(), var.sqrt())
    x0 = torch.randn(3, 6)
    assert torch.allclose(sched.add_noise(x0, noise, t, scale=scale), (1 - var).sqrt() * x0 + var.sqrt() * noise)
    # scale 1 is the plain schedule; None is bit-identical to it
    assert torch.allclose(sched.add_noise(x0, noise, t, scale=torch.ones(3, 1)), sched.add_noise(x0, noise, t))


def recorded_noise_std(model: DDRM, users, pos, neg) -> list[torch.Tensor]:
    """Per-row noise std actually used by every add_noise call inside ``model.loss``."""
    calls = []
    original = model.schedule.add_noise

    def spy(x0, noise, t, scale=None):
        calls.append(model.schedule.noise_std(t, scale).reshape(-1).float())
        return original(x0, noise, t, scale=scale)

    model.schedule.add_noise = spy
    model.loss(users, pos, neg)
    model.schedule.add_noise = original
    return calls


@pytest.mark.parametrize("denoise_users", [True, False])
def test_dynamic_scale_gives_each_embedding_its_own_smaller_noise(tiny_dataset_dir, denoise_users):
    data = load_prepared("tiny", tiny_dataset_dir)
    u, i, j = (torch.from_numpy(a) for a in BPRSampler(data.csr("train"), 0).sample(64))
    stds = {}
    for dynamic in (False, True):
        config = tiny_config(**{"ddrm.dynamic_scale": dynamic, "ddrm.denoise_users": denoise_users})
        backend = build_backend(config, data, torch.device("cpu"))
        model = DDRM(config.ddrm, backend, data.csr("train"), seed=0)
        torch.manual_seed(3)
        t = torch.randint(1, config.ddrm.steps + 1, (len(u),))  # the loss draws t first
        configured = model.schedule.noise_std(t).float()
        torch.manual_seed(3)
        stds[dynamic] = recorded_noise_std(model, u, i, j)
        assert len(stds[dynamic]) == (2 if denoise_users else 1)
        for std in stds[dynamic]:
            if dynamic:
                assert (std <= configured + 1e-12).all() and (std > 0).all()
                ratio = std / configured
                assert ratio.std() > 0.1 and ratio.min() < 0.5  # a spread of levels, not one s
            else:
                assert torch.equal(std, configured)  # exactly the configured s
    if denoise_users:  # user and item embeddings draw their scales independently
        assert not torch.equal(stds[True][0], stds[True][1])


def test_dynamic_scale_leaves_inference_unchanged(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    base = tiny_config()
    backend = build_backend(base, data, torch.device("cpu"))
    torch.manual_seed(0)
    plain = DDRM(base.ddrm, backend, data.csr("train"), seed=0).eval()
    torch.manual_seed(0)
    dynamic = DDRM(base.replace({"ddrm.dynamic_scale": True}).ddrm, backend, data.csr("train"), seed=0).eval()
    users = torch.arange(data.n_users)
    assert torch.equal(plain.scorer()(users), dynamic.scorer()(users))
    assert dynamic.training_noise_scale(4, torch.device("cpu")).shape == (4, 1)
    assert plain.training_noise_scale(4, torch.device("cpu")) is None


# --- DDRM-time propagation layers ---------------------------------------------------------------------

def dense_propagation(train, user_emb, item_emb, layers: int, pooling: str):
    """Reference: dense ``D^-1/2 A D^-1/2`` powers, pooled like the reference DDRM code."""
    n_users = user_emb.shape[0]
    a = torch.zeros(n_users + item_emb.shape[0], n_users + item_emb.shape[0], dtype=torch.float64)
    coo = train.tocoo()
    a[coo.row, n_users + coo.col] = 1.0
    a[n_users + coo.col, coo.row] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    a_hat = inv[:, None] * a * inv[None, :]
    current = torch.cat([user_emb, item_emb]).double()
    total = current.clone()
    for _ in range(layers):
        current = a_hat @ current
        if pooling == "normalized_sum":
            current = torch.nn.functional.normalize(current, dim=1)
        total = total + current
    if pooling == "mean":
        total = total / (layers + 1)
    return total[:n_users].float(), total[n_users:].float()


@pytest.mark.parametrize("backend_name, freeze", [("mf", True), ("lightgcn", True), ("sgl", True),
                                                  ("lightgcn", False)])
def test_propagation_layers_hand_the_denoisers_the_ego_embeddings_propagated_k_layers(tiny_dataset_dir,
                                                                                      backend_name, freeze):
    data = load_prepared("tiny", tiny_dataset_dir)
    base = tiny_config(**{"backend.name": backend_name, "ddrm.freeze_backend": freeze})
    backend = build_backend(base, data, torch.device("cpu"))
    train = data.csr("train")
    own = DDRM(base.ddrm, backend, train).backend_embeddings()  # unset: the backend's final embeddings
    for got, want in zip(own, backend.embeddings()):
        assert torch.equal(got, want)
    for layers in (0, 2, 5):
        model = DDRM(base.replace({"ddrm.propagation_layers": layers}).ddrm, backend, train)
        want = dense_propagation(train, backend.user_emb.weight.detach(), backend.item_emb.weight.detach(), layers,
                                 backend.config.pooling)
        for got, expected in zip(model.backend_embeddings(), want):
            assert torch.allclose(got.detach(), expected, atol=1e-5)
    if backend_name == "mf":  # MF is trained unpropagated: 0 layers = its own embeddings
        zero = DDRM(base.replace({"ddrm.propagation_layers": 0}).ddrm, backend, train).backend_embeddings()
        assert torch.equal(zero[1], backend.item_emb.weight.detach())
    else:  # trained with 3 layers; other counts hand over different embeddings
        two = DDRM(base.replace({"ddrm.propagation_layers": 2}).ddrm, backend, train).backend_embeddings()
        assert not torch.allclose(two[1].detach(), own[1].detach())


def test_joint_fine_tuning_propagates_through_the_k_layers(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    config = tiny_config(**{"backend.name": "mf", "ddrm.freeze_backend": False, "ddrm.propagation_layers": 2})
    backend = build_backend(config, data, torch.device("cpu"))
    model = DDRM(config.ddrm, backend, data.csr("train"))
    u, i, j = (torch.from_numpy(a) for a in BPRSampler(data.csr("train"), 0).sample(32))
    model.loss(u, i, j).backward()
    # with 2 propagation layers, items never sampled in the batch still get a gradient through the graph
    touched = set(i.tolist()) | set(j.tolist())
    others = [k for k in range(data.n_items) if k not in touched]
    grad = model.backend.item_emb.weight.grad
    assert others and grad[others].abs().sum() > 0


# --- validation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("ddrm.denoiser", "foo"), ("ddrm.transformer_heads", 0),
                                        ("ddrm.transformer_tokens", 1), ("ddrm.dynamic_scale", "yes"),
                                        ("ddrm.propagation_layers", -1)])
def test_invalid_switch_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny_config(**{key: value})


def test_heads_not_dividing_the_dim_is_a_config_error_naming_both_keys(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    with pytest.raises(ConfigError, match=r"ddrm\.transformer_heads.*model\.dim"):  # refused with the config
        tiny_config(**{"ddrm.denoiser": "transformer", "ddrm.transformer_heads": 3, "model.dim": 16})
    # the same heads with the MLP denoiser are irrelevant and accepted
    config = tiny_config(**{"ddrm.denoiser": "mlp", "ddrm.transformer_heads": 3, "model.dim": 16})
    DDRM(config.ddrm, build_backend(config, data, torch.device("cpu")), data.csr("train"))
