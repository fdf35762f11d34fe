import pytest

from ddrm.config import Config, config_from_dict, load_config, parse_override
from ddrm.errors import ConfigError


def test_defaults_round_trip_through_flat_dict():
    config = Config()
    flat = config.to_flat_dict()
    assert flat["ddrm.steps"] == 20 and flat["backend.name"] == "mf" and flat["seed"] == 0
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
    ("backend.name", "nope", "backend.name"),
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


def test_backend_layers_default_to_each_backends_paper_setting():
    assert Config().backend.layers == 0  # MF: no propagation
    lightgcn = load_config(None, {"backend.name": "lightgcn"})
    assert lightgcn.backend.layers == 3 and load_config(None, {"backend.name": "sgl"}).backend.layers == 3
    assert load_config(None, {"backend.name": "sgl", "backend.layers": 0}).backend.layers == 0
    # switching the backend of a config whose layers were defaulted follows the new backend's default
    assert Config().replace({"backend.name": "lightgcn"}).backend.layers == 3
    assert lightgcn.replace({"backend.name": "mf"}).backend.layers == 0
    # an explicit layer count survives a backend switch, and the flat dict records the resolved count
    assert Config().replace({"backend.layers": 2}).replace({"backend.name": "sgl"}).backend.layers == 2
    assert lightgcn.to_flat_dict()["backend.layers"] == 3
    # pooling likewise: the reference code's SGL pools per-layer-normalised layers by a sum
    assert lightgcn.backend.pooling == "mean" and lightgcn.replace({"backend.name": "sgl"}).backend.pooling == "normalized_sum"
    assert load_config(None, {"backend.name": "sgl", "backend.pooling": "mean"}).backend.pooling == "mean"
    assert Config().replace({"backend.pooling": "normalized_sum"}).replace({"backend.name": "lightgcn"}).backend.pooling \
        == "normalized_sum"


def test_which_backend_keys_were_defaulted_is_not_a_setting():
    from ddrm.config import allowed_keys

    assert Config().backend.defaulted == {"layers", "pooling"}
    assert load_config(None, {"backend.layers": 2}).backend.defaulted == {"pooling"}
    assert "backend.defaulted" not in Config().to_flat_dict() and "backend.defaulted" not in allowed_keys()
    with pytest.raises(ConfigError, match="backend.defaulted"):
        Config().replace({"backend.defaulted": []})
