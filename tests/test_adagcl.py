"""AdaGCL (``model.name: adagcl``): its graph products and gradients, the two generated views, the three
updates per batch, and learning on generated data through ``train.run``."""

from pathlib import Path

import pytest
import torch

from conftest import make_interactions
from ddrm.backends.base import normalized_adjacency
from ddrm.baselines.adagcl import AdaGCL, GraphPattern, contrast, expected_l0, hard_concrete, pattern_spmm
from ddrm.config import Config
from ddrm.registry import model_params
from ddrm.data import write_prepared
from ddrm.data.prepared import InteractionData
from ddrm.data.sampling import BPRSampler
from ddrm.train import run


def tiny_data() -> InteractionData:
    train, valid, test = make_interactions(n_users=60, n_items=40, per_user=12, seed=4)
    return InteractionData(name="tiny", path=Path("."), n_users=60, n_items=40, train=train, valid=valid, test=test)


def build(**fields) -> tuple[AdaGCL, InteractionData]:
    data = tiny_data()
    torch.manual_seed(0)
    return AdaGCL(model_params("adagcl")(dim=8, **fields), data.n_users, data.n_items, data.csr("train")), data


def test_pattern_product_and_its_gradients_match_dense_autograd():
    data = tiny_data()
    graph = normalized_adjacency(data.csr("train"))
    pattern = GraphPattern(graph)
    torch.manual_seed(0)
    values = torch.rand(len(pattern.rows), dtype=torch.float64).float().requires_grad_()  # not symmetric
    x = torch.randn(pattern.n, 5, requires_grad=True)
    weight = torch.randn(pattern.n, 5)
    (pattern_spmm(pattern, values, x) * weight).sum().backward()
    dense_values = values.detach().clone().requires_grad_()
    dense_x = x.detach().clone().requires_grad_()
    dense = torch.zeros(pattern.n, pattern.n).index_put((pattern.rows, pattern.cols), dense_values)
    ((dense @ dense_x) * weight).sum().backward()
    torch.testing.assert_close(x.grad, dense_x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(values.grad, dense_values.grad, rtol=1e-4, atol=1e-5)
    # mirror maps every entry to its transpose
    assert torch.equal(pattern.rows[pattern.mirror], pattern.cols) and torch.equal(pattern.cols[pattern.mirror],
                                                                                  pattern.rows)


def test_hard_concrete_gates_and_their_l0_norm():
    log_alpha = torch.tensor([-10.0, 0.0, 10.0])
    gates = hard_concrete(log_alpha, 1.0, sample=False)
    assert gates[0] == 0 and gates[2] == 1 and 0 < gates[1] < 1  # stretched then clipped
    torch.manual_seed(0)
    sampled = hard_concrete(log_alpha.repeat(1000), 0.5, sample=True)
    assert sampled.min() >= 0 and sampled.max() <= 1 and len(torch.unique(sampled)) > 3
    assert expected_l0(torch.full((4,), -5.0), 1.0) < expected_l0(torch.full((4,), 5.0), 1.0)


def test_contrast_leaves_the_positive_out_of_the_denominator():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    loss = contrast(a, a, torch.tensor([0, 1]), temperature=1.0)
    # node 0: positive cos 1, the only other node (1) has cos 0 -> log(e^0) - 1 = -1
    torch.testing.assert_close(loss, torch.tensor([-1.0, -1.0]))


def test_generative_view_keeps_edges_the_decoder_accepts_and_rescales():
    model, _ = build()
    final = model.vgae_decoder[-1]
    with torch.no_grad():
        final.weight.zero_()
        final.bias.fill_(5.0)  # every edge probability > 0.5: the full graph
        torch.testing.assert_close(model.generative_view().values, model.graph_values)
        final.bias.fill_(-5.0)  # none kept
        assert torch.count_nonzero(model.generative_view().values) == 0
    # a decoder that accepts exactly user 0's edges: both directions kept, values / kept share
    z = torch.zeros(model.pattern.n, 8)
    z[0] = 1.0
    model.vgae_encode = lambda: (z, None, None)
    model.edge_logit = lambda zu, zi: zu[:, 0] * 2 - 1
    keep = ((model.pattern.rows == 0) | (model.pattern.cols == 0)).float()
    torch.testing.assert_close(model.generative_view().values, model.graph_values * keep / keep.mean())


def test_each_training_step_updates_encoder_and_both_generators():
    model, data = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    batch = next(iter(BPRSampler(data.csr("train"), seed=0, mode="interaction").batches(64, torch.device("cpu"))))
    model.start_epoch(1, torch.Generator())
    loss = model.training_step(batch, optimizer)
    assert torch.isfinite(loss) and not loss.requires_grad
    for name in ("encoder.ego", "vgae_encoder.ego", "vgae_decoder.3.weight", "gates.0.own.0.weight",
                 "gates.1.attention.weight"):
        assert not torch.equal(before[name], dict(model.named_parameters())[name]), name
    model.start_epoch(11, torch.Generator())
    assert model.gate_temperature == pytest.approx(2.0 * 0.98 ** 10)
    model.start_epoch(1000, torch.Generator())
    assert model.gate_temperature == 0.05


def test_weight_decay_applies_to_the_third_update_only_and_is_restored():
    """The reference adds its L2 term to the BPR/generator update alone; the two contrastive updates run
    without it (with it in all three the encoder collapses on ML-1M, docs/RESULTS.md)."""
    model, data = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=2e-5)
    seen: list[float] = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (seen.append(optimizer.param_groups[0]["weight_decay"]), step(*a, **k))[1]
    batch = next(iter(BPRSampler(data.csr("train"), seed=0, mode="interaction").batches(64, torch.device("cpu"))))
    model.training_step(batch, optimizer)
    assert seen == [0.0, 0.0, 2e-5]
    assert optimizer.param_groups[0]["weight_decay"] == 2e-5


def test_adagcl_learns_through_run_and_ranks_held_out_items_higher(tmp_path):
    train, valid, test = make_interactions(seed=5)
    write_prepared(tmp_path / "tiny", train, valid, test)
    config = Config().replace({"data.name": "tiny", "model.name": "adagcl", "model.dim": 16, "model.lr": 0.01,
                               "model.batch_size": 128, "train.epochs": 6, "train.patience": 100})
    result = run(config, data_dir=tmp_path, progress=False)
    losses = [h["loss"] for h in result.backend.history]
    assert result.ddrm is None and len(losses) == 6 and losses[-1] < losses[0]
    assert 0 < result.test["recall_at_20"] <= 1 and result.config["model"]["name"] == "adagcl"
