"""Every shipped experiment spec runs end to end, reduced: its variants x 2 seeds on tiny generated data,
one epoch per stage and a small denoiser (Ray and MLflow are covered by the integration tests; this checks
that each variant's config trains, evaluates and, on known-noise data, reports its diagnostics)."""

from pathlib import Path

import pytest

from conftest import REPO_ROOT, make_interactions
from ddrm.config import apply_overrides, config_from_dict
from ddrm.data import write_prepared
from ddrm.train import run
from ddrm.tuning.spec import load_ablation_spec

SPECS = sorted((REPO_ROOT / "ablations").glob("*.yaml"))
REDUCED = {"train.epochs": 1, "train.batch_size": 128, "ddrm.hidden_dims": [8, 16], "ddrm.steps": 5,
           "ddrm.epochs": 1, "backend.epochs": 1, "backend.dim": 8}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    train, valid, test = make_interactions(n_users=40, n_items=30, seed=2)
    for name in ("ml-1m_noisy", "ml-1m_clean", "ml-100k_natural"):  # the specs' dataset names, tiny stand-ins
        write_prepared(root / name, train, valid, test)
    return root


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_variants_run_reduced(path, tiny_dir):
    spec = load_ablation_spec(path, REDUCED, seeds=2)
    assert spec.expected_minutes and spec.description  # every spec states its cost on this machine
    for variant, seed in spec.trials:
        config = config_from_dict(apply_overrides(spec.base, {**spec.variants[variant], "seed": seed}))
        result = run(config, data_dir=tiny_dir, progress=False)
        assert 0 <= result.test["recall_at_20"] <= 1, (path.name, variant)
        if config.data.noise_ratio > 0:
            assert "backend_noise_auc" in result.diagnostics, (path.name, variant)
