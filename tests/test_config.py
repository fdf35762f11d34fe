import pytest

from ddrm.config import Config, config_from_dict, load_config, parse_override
from ddrm.errors import ConfigError


def test_defaults_round_trip_through_flat_dict():
    config = Config()
    flat = config.to_flat_dict()
    assert flat["ddrm.steps"] == 20 and flat["model.name"] == "mf" and flat["seed"] == 0
    assert config_from_dict(config.to_dict()) == config
    assert "@" not in "".join(flat)


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ddrm:\n  steps: 10\nseed: 3\n")
    config = load_config(path, dict(parse_override(t) for t in ["ddrm.bpr_weight=0.3", "ddrm.hidden_dims=[8, 16]",
                                                                 "ddrm.first_beta=null", "train.epochs=2"]))
    assert config.ddrm.steps == 10 and config.seed == 3 and config.ddrm.bpr_weight == 0.3
    assert config.ddrm.hidden_dims == (8, 16) and config.ddrm.first_beta is None and config.train.epochs == 2
    assert config.ddrm.reverse_steps == 10
    assert config.replace({"ddrm.inference_multiplier": 1.25}).ddrm.reverse_steps == 13  # halves round up


@pytest.mark.parametrize("key,value,fragment", [
    ("ddrm.noise_scale", 1.5, "ddrm.noise_scale"),
    ("ddrm.noise_scale", 0, "ddrm.noise_scale"),
    ("ddrm.steps", 0, "ddrm.steps"),
    ("ddrm.inference_multiplier", 0.5, "ddrm.inference_multiplier"),
    ("ddrm.bpr_weight", 1.2, "ddrm.bpr_weight"),
    ("ddrm.activation", "gelu", "ddrm.activation"),
    ("ddrm.steps", "ten", "ddrm.steps"),
    ("ddrm.freeze_backend", "yes", "ddrm.freeze_backend"),
    ("model.name", "nope", "model.name"),
    ("ddrm.stepz", 3, "ddrm.stepz"),
    ("nosection.x", 3, "nosection.x"),
    ("seed", -1, "'seed'"),
    ("seed", 2**31, "'seed'"),
    ("data.noise_seed", -3, "data.noise_seed"),
])
def test_bad_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        Config().replace({key: value})


def test_bad_override_syntax_and_file(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("ddrm.steps")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_each_backend_declares_its_own_defaults_and_keys():
    assert Config().model.layers == 0  # MF: no propagation
    lightgcn = load_config(None, {"model.name": "lightgcn"})
    assert lightgcn.model.layers == 3 and load_config(None, {"model.name": "sgl"}).model.layers == 3
    assert load_config(None, {"model.name": "sgl", "model.layers": 0}).model.layers == 0
    # a changed model.name takes the new model's defaults, keeps what was set that it declares too, drops the rest
    assert Config().replace({"model.name": "lightgcn"}).model.layers == 3
    assert lightgcn.replace({"model.name": "mf"}).model.layers == 0
    assert Config().replace({"model.layers": 2}).replace({"model.name": "sgl"}).model.layers == 2
    assert Config().replace({"model.name": "sgl", "model.layers": 2}).model.layers == 2
    sgl = load_config(None, {"model.name": "sgl", "model.ssl_reg": 0.3, "model.lr": 0.01})
    assert sgl.replace({"model.name": "mf"}).model.lr == 0.01  # MF has no ssl_reg: dropped, not an error
    # a base's model keys reach every model a spec switches to (a --set smoke override, e.g. model.dim=8)
    from ddrm.config import apply_overrides
    base = apply_overrides({"model": {"name": "mf", "dim": 8}}, {"model.name": "sgl"})
    assert config_from_dict(base).model.dim == 8
    assert lightgcn.to_flat_dict()["model.layers"] == 3
    # pooling likewise: the reference code's SGL pools per-layer-normalised layers by a sum
    assert lightgcn.model.pooling == "mean" and lightgcn.replace({"model.name": "sgl"}).model.pooling == "normalized_sum"
    assert load_config(None, {"model.name": "sgl", "model.pooling": "mean"}).model.pooling == "mean"
    # only a model's own keys: SGL's contrastive keys are not MF's
    assert "model.ssl_reg" in load_config(None, {"model.name": "sgl"}).to_flat_dict()
    assert "model.ssl_reg" not in Config().to_flat_dict()
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.ssl_reg'.*model 'mf'"):
        Config().replace({"model.ssl_reg": 0.5})


def test_a_run_logs_only_its_models_keys_and_ddrm_only_when_on():
    ease = load_config(None, {"model.name": "ease"})
    assert ease.final_stage == "model" and not ease.ddrm.enabled
    flat = ease.to_flat_dict()
    assert {k.split(".")[0] for k in flat} == {"data", "model", "denoise", "ddrm", "train", "seed"}
    assert [k for k in flat if k.startswith(("model.", "ddrm.", "denoise."))] == [
        "model.name", "model.ease_lambda", "model.ease_max_items", "denoise.name", "ddrm.enabled"]
    mf = Config().to_flat_dict()
    assert "ddrm.steps" in mf and "model.ease_lambda" not in mf and "denoise.max_rate" not in mf
    tce = Config().replace({"denoise.name": "tce"}).to_flat_dict()
    assert tce["denoise.max_rate"] == 0.2 and "denoise.beta" not in tce


def test_old_shape_configs_and_keys_are_upgraded_by_one_mapping(tmp_path):
    old = {"backend": {"name": "sgl", "lr": 0.01, "layers": None, "ssl_reg": 0.3, "denoise": "tce",
                       "tce_max_rate": 0.1, "rce_beta": 0.9, "sparse_grad": False},
           "model": {"name": None, "ease_lambda": 500.0}, "ddrm": {"enabled": False, "steps": 5}, "seed": 2}
    config = config_from_dict(old)
    assert config.model.name == "sgl" and config.model.lr == 0.01 and config.model.layers == 3
    assert config.model.ssl_reg == 0.3 and config.denoise.name == "tce" and config.denoise.max_rate == 0.1
    assert not config.ddrm.enabled and config.seed == 2
    standalone = config_from_dict({"backend": {"name": "mf"}, "model": {"name": "ease", "ease_lambda": 900.0,
                                                                        "knn_k": 5}})
    assert standalone.model.ease_lambda == 900.0 and not standalone.ddrm.enabled
    path = tmp_path / "old.yaml"
    path.write_text("backend: {name: lightgcn, lr: 0.005}\nddrm: {steps: 7}\n")
    assert load_config(path, {"backend.dim": 32}).model.dim == 32  # an old --set key too
    assert load_config(path).model.lr == 0.005 and load_config(path).ddrm.steps == 7
