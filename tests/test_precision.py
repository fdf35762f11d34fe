"""``train.precision: fp32 | bf16``: validation, recording, cache keys, where bf16 actually runs."""

from __future__ import annotations

import contextlib
import math
import warnings

import pytest
import torch

from ddrm import cache, precision
from ddrm.config import Config
from ddrm.data import load_prepared
from ddrm.diffusion.ddrm import DDRM
from ddrm.errors import ConfigError
from ddrm.evaluation import evaluate
from ddrm.train import backend_cache_key, build_backend, run

FAST = {"data.name": "tiny", "train.epochs": 2, "train.batch_size": 64, "train.patience": 5, "backend.lr": 0.01,
        "ddrm.hidden_dims": [16, 32], "ddrm.steps": 5, "ddrm.lr": 0.01}


def tiny_config(**extra) -> Config:
    return Config().replace({**FAST, **extra})


@contextlib.contextmanager
def quiet_precision_warning():
    """bf16 on a host without native bf16 warns once; the tests here do not care which host runs them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", precision.PrecisionWarning)
        yield


def tiny_ddrm(data, config: Config, dtype: str) -> DDRM:
    torch.manual_seed(0)
    backend = build_backend(config, data, torch.device("cpu"))
    return DDRM(config.ddrm, backend, data.csr("train"), seed=0, precision=dtype)


def test_bad_precision_names_the_key():
    with pytest.raises(ConfigError, match="train.precision"):
        Config().replace({"train.precision": "fp16"})
    assert Config().train.precision == "fp32"
    assert Config().to_flat_dict()["train.precision"] == "fp32"  # logged as an MLflow param like every key


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_tiny_run_gives_finite_metrics_and_records_the_precision(tiny_dataset_dir, dtype):
    with quiet_precision_warning():
        result = run(tiny_config(**{"train.precision": dtype}), data_dir=tiny_dataset_dir, progress=False)
    assert all(math.isfinite(v) for v in result.test.values()) and result.test["recall_at_20"] > 0
    assert all(math.isfinite(h["loss"]) for h in result.ddrm.history)
    assert result.config["train"]["precision"] == dtype
    assert result.info["precision"] == dtype
    assert result.info["precision_stages"] == {"backend": "fp32", "ddrm": dtype, "model": "fp32"}
    assert result.info["precision_native_bf16"] == precision.native_bf16("cpu")
    assert result.to_json()["info"]["precision"] == dtype


def test_bf16_run_reuses_the_fp32_backend_and_stays_close(tiny_dataset_dir):
    first = run(tiny_config(), data_dir=tiny_dataset_dir, progress=False)
    with quiet_precision_warning():
        second = run(tiny_config(**{"train.precision": "bf16"}), data_dir=tiny_dataset_dir, progress=False)
    assert second.backend.from_cache  # the backend trains in fp32 either way: one cache entry
    assert second.backend.test == first.backend.test
    assert abs(second.ddrm.history[0]["loss"] - first.ddrm.history[0]["loss"]) < 0.05 * abs(first.ddrm.history[0]["loss"])


def test_backend_cache_key_omits_fp32_and_changes_for_a_bf16_backend(tiny_dataset_dir, monkeypatch):
    data = load_prepared("tiny", tiny_dataset_dir)
    seen: list[dict] = []
    real = cache.cache_key
    monkeypatch.setattr(cache, "cache_key", lambda parts: seen.append(parts) or real(parts))
    plain = backend_cache_key(Config().replace({"data.name": "tiny"}), data)  # no train.precision given
    fp32 = backend_cache_key(Config().replace({"data.name": "tiny", "train.precision": "fp32"}), data)
    assert fp32 == plain and len(seen) == 2 and not any("precision" in parts for parts in seen)
    # as shipped the backends train in fp32 under bf16, so a bf16 run shares the fp32 backend ...
    bf16_config = Config().replace({"data.name": "tiny", "train.precision": "bf16"})
    assert backend_cache_key(bf16_config, data) == plain
    # ... and a backend that does train in bf16 gets its own key
    monkeypatch.setattr(precision, "BF16_STAGES", ("backend", "ddrm"))
    bf16_backend = backend_cache_key(bf16_config, data)
    assert bf16_backend != plain and seen[-1]["precision"] == "bf16"
    assert backend_cache_key(Config().replace({"data.name": "tiny"}), data) == plain


def test_bf16_denoiser_runs_in_bf16_with_fp32_parameters_losses_and_scores(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    config = tiny_config()
    model = tiny_ddrm(data, config, "bf16")
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    users, pos, neg = (torch.arange(8) % data.n_users, torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long))
    model.train()
    loss = model.loss(users, pos, neg)
    assert seen and set(seen) == {torch.bfloat16}  # every linear layer of both denoisers ran in bf16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    for param in model.parameters():
        assert param.dtype == torch.float32 and param.grad.dtype == torch.float32
    assert all(v.dtype == torch.float32 for s in optimizer.state.values() for v in s.values() if v.is_floating_point())
    seen.clear()
    model.eval()
    scores = model.scorer()(torch.arange(5))
    assert set(seen) == {torch.bfloat16} and scores.dtype == torch.float32  # inference: bf16 steps, fp32 scores
    metrics = evaluate(model.scorer(), data, "valid", batch_size=16)
    assert all(math.isfinite(v) for v in metrics.values())
    for hook in hooks:
        hook.remove()


def test_fp32_denoiser_stays_fp32(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    model = tiny_ddrm(data, tiny_config(), "fp32")
    seen: list[torch.dtype] = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    model.loss(torch.arange(4), torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long))
    assert set(seen) == {torch.float32}


def test_transformer_denoiser_trains_and_infers_in_bf16(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    model = tiny_ddrm(data, tiny_config(**{"ddrm.denoiser": "transformer"}), "bf16")
    loss = model.loss(torch.arange(8), torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    model.eval()
    assert model.scorer()(torch.arange(3)).dtype == torch.float32


def test_evaluation_ranks_bf16_scores_in_fp32(tiny_dataset_dir):
    data = load_prepared("tiny", tiny_dataset_dir)
    table = torch.randn(data.n_users, data.n_items)
    seen: list[torch.dtype] = []
    real_topk = torch.topk

    def spy_topk(scores, *args, **kwargs):
        seen.append(scores.dtype)
        return real_topk(scores, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "topk", spy_topk)
        evaluate(lambda users: table[users].to(torch.bfloat16), data, "valid", batch_size=16)
    assert seen and set(seen) == {torch.float32}


def test_autocast_helper_and_native_detection(monkeypatch):
    assert isinstance(precision.autocast("fp32", "cpu"), contextlib.nullcontext)
    with precision.autocast("bf16", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        precision.autocast("fp16", "cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert precision.native_bf16("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not precision.native_bf16("cpu")
    assert precision.stage_precision("bf16", "ddrm") == "bf16" and precision.stage_precision("bf16", "backend") == "fp32"


def test_emulated_bf16_warns_once_and_native_or_fp32_never(monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision.warn_if_emulated("fp32", "cpu")
        precision.warn_if_emulated("bf16", "cpu")
        precision.warn_if_emulated("bf16", "cpu")
    assert len(caught) == 1 and issubclass(caught[0].category, precision.PrecisionWarning)
    assert "\n" not in str(caught[0].message) and "runs anyway" in str(caught[0].message)
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision.warn_if_emulated("bf16", "cpu")
    assert not caught
