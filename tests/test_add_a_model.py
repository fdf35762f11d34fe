"""The worked example of docs/ARCHITECTURE.md: a new model is one file (here, this test module) that declares its
params and registers itself; config validation, MLflow params, the cache key, DDRM and the code fingerprint
follow without touching any other file."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from conftest import make_interactions
from pydantic import Field

from ddrm.backends.base import Backend
from ddrm.codeversion import code_fingerprint
from ddrm.config import config_from_dict
from ddrm.data import write_prepared
from ddrm.errors import ConfigError
from ddrm.params import BackendParams
from ddrm.registry import model_names, register_model
from ddrm.train import run


class ScaledMFParams(BackendParams):
    """MF whose handed-out item embeddings are multiplied by ``item_scale``."""

    name: Literal["scaled_mf"] = "scaled_mf"
    item_scale: float = Field(default=1.0, gt=0)


@register_model("scaled_mf", ScaledMFParams)
class ScaledMF(Backend):
    def train_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb.weight, self.item_emb.weight * self.config.item_scale


@pytest.fixture()
def tiny_dir(tmp_path):
    write_prepared(tmp_path / "tiny", *make_interactions())
    return tmp_path


def _config(tiny_dir, **model):
    return config_from_dict({"data": {"name": "tiny", "dir": str(tiny_dir)}, "model": {"name": "scaled_mf", **model},
                             "ddrm": {"steps": 3, "hidden_dims": [8, 16], "epochs": 1},
                             "train": {"epochs": 2, "threads": 1}})


def test_a_new_model_file_is_validated_logged_and_wrapped_by_ddrm(tiny_dir, monkeypatch):
    monkeypatch.setenv("DDRM_CACHE_DIR", str(tiny_dir / "cache"))
    assert "scaled_mf" in model_names()
    config = _config(tiny_dir, item_scale=2.0)
    flat = config.to_flat_dict()
    assert flat["model.item_scale"] == 2.0 and "model.ssl_reg" not in flat and flat["ddrm.enabled"] is True
    with pytest.raises(ConfigError, match=r"config key 'model\.item_scale'.*greater than 0"):
        _config(tiny_dir, item_scale=0)
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.layerz'.*scaled_mf"):
        _config(tiny_dir, layerz=2)
    result = run(config, progress=False)
    assert result.ddrm is not None and 0 <= result.test["recall_at_20"] <= 1
    assert len(code_fingerprint(config)) == 16  # fingerprinted by its own file, outside the package
