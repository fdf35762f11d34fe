"""Spec validation happens before Ray starts: each mistake is one ConfigError naming the file and key."""

import pytest

from ddrm.config import apply_overrides, config_from_dict
from ddrm.errors import ConfigError
from ddrm.tuning.spec import load_ablation_spec, load_search_spec
from conftest import REPO_ROOT

SPACE = """
name: s
mode: tpe
num_samples: 4
seeds: [0]
base: {data: {name: tiny}, train: {epochs: 2}}
space:
  ddrm.steps: {type: choice, values: [5, 10]}
  ddrm.noise_scale: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
  ddrm.hidden_dims: {type: choice, values: [[8, 16], [16, 32]]}
scheduler: {type: asha, grace_period: 1, max_t: 2, reduction_factor: 2}
"""


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_search_spec(tmp_path):
    spec = load_search_spec(write(tmp_path, SPACE), {"train.batch_size": 64})
    assert spec.mode == "tpe" and spec.num_samples == 4 and spec.scheduler["type"] == "asha"
    assert spec.base["train"]["batch_size"] == 64


@pytest.mark.parametrize("old,new,fragment", [
    ("mode: tpe", "mode: bayes", "mode"),
    ("{type: loguniform,", "{type: lognormal,", "unknown distribution"),
    ("ddrm.steps:", "ddrm.stepz:", "ddrm.stepz"),
    ("values: [5, 10]", "values: [5, 0]", "ddrm.steps"),
    ("low: 1.0e-4, high: 1.0e-2", "low: 1.0e-2, high: 1.0e-4", "low"),
    ("seeds: [0]", "seeds: [0, 1]", "seeds"),
    ("num_samples: 4", "num_samples: 4\nnum_sample: 3", "num_sample"),
    ("grace_period: 1", "grace: 1", "scheduler"),
    ("train: {epochs: 2}", "train: {epochs: -1}", "train.epochs"),
])
def test_search_spec_errors_name_file_and_key(tmp_path, old, new, fragment):
    assert old in SPACE
    path = write(tmp_path, SPACE.replace(old, new))
    with pytest.raises(ConfigError, match=fragment) as info:
        load_search_spec(path)
    assert str(path) in str(info.value)


def test_grid_needs_choices_and_set_cannot_fix_a_searched_key(tmp_path):
    with pytest.raises(ConfigError, match="grid"):
        load_search_spec(write(tmp_path, SPACE.replace("mode: tpe", "mode: grid")))
    with pytest.raises(ConfigError, match="ddrm.steps"):
        load_search_spec(write(tmp_path, SPACE), {"ddrm.steps": 3})


def test_ablation_spec(tmp_path):
    text = ("name: a\nbase: {data: {name: tiny}}\nseeds: [0, 1]\nreference: full\n"
            "variants: {full: {}, item_only: {ddrm.denoise_users: false}}\n")
    spec = load_ablation_spec(write(tmp_path, text))
    assert spec.trials == [("full", 0), ("full", 1), ("item_only", 0), ("item_only", 1)]
    assert load_ablation_spec(write(tmp_path, text), seeds=3).seeds == (0, 1, 2)
    with pytest.raises(ConfigError, match="variant 'bad'"):
        load_ablation_spec(write(tmp_path, text.replace("item_only: {", "bad: {ddrm.steps: 0, ")))
    with pytest.raises(ConfigError, match="reference"):
        load_ablation_spec(write(tmp_path, text.replace("reference: full", "reference: nope")))


def test_ablation_spec_models_cross_every_variant(tmp_path):
    text = ("name: a\nbase: {data: {name: tiny}, ddrm: {steps: 5}}\nseeds: [0]\nreference: alone\n"
            "variants: {alone: {ddrm.enabled: false}, ddrm: {ddrm.steps: 7}}\n"
            "models: {mf: {model.name: mf}, sgl: {model.name: sgl, ddrm.steps: 9, ddrm.activation: relu}}\n")
    spec = load_ablation_spec(write(tmp_path, text))
    assert list(spec.variants) == ["mf/alone", "mf/ddrm", "sgl/alone", "sgl/ddrm"]
    assert spec.variants["sgl/ddrm"] == {"model.name": "sgl", "ddrm.steps": 7, "ddrm.activation": "relu"}
    assert spec.reference == "alone" and len(spec.trials) == 4
    with pytest.raises(ConfigError, match="model 'sgl'"):
        load_ablation_spec(write(tmp_path, text.replace("ddrm.activation: relu", "ddrm.activation: nope")))
    with pytest.raises(ConfigError, match="contain no '/'"):
        load_ablation_spec(write(tmp_path, text.replace("alone: {", "a/b: {")))
    with pytest.raises(ConfigError, match="key 'models' must map"):
        load_ablation_spec(write(tmp_path, text.split("models:")[0] + "models: [mf, sgl]\n"))


def test_a_model_may_cross_only_some_variants_and_a_baseline_row_is_named(tmp_path):
    text = ("name: a\nbase: {data: {name: tiny}}\nseeds: [0, 1]\nreference: alone\nbaseline: ease/tuned\n"
            "variants: {alone: {ddrm.enabled: false}, ddrm: {}, tuned: {}}\n"
            "models: {mf: {model.name: mf, variants: [alone, ddrm]}, ease: {model.name: ease, variants: [tuned]}}\n")
    spec = load_ablation_spec(write(tmp_path, text))
    assert list(spec.variants) == ["mf/alone", "mf/ddrm", "ease/tuned"] and len(spec.trials) == 6
    assert spec.variants["ease/tuned"] == {"model.name": "ease"} and spec.baseline == ("ease/tuned",)
    with pytest.raises(ConfigError, match=r"key 'models.ease.variants': \['nope'\] is not allowed"):
        load_ablation_spec(write(tmp_path, text.replace("variants: [tuned]", "variants: [nope]")))
    with pytest.raises(ConfigError, match="key 'baseline'"):
        load_ablation_spec(write(tmp_path, text.replace("baseline: ease/tuned", "baseline: ease")))


def test_ablation_spec_runs_only_the_chosen_models(tmp_path):
    text = ("name: a\nbase: {data: {name: tiny}}\nseeds: [0, 1]\nreference: alone\n"
            "variants: {alone: {ddrm.enabled: false}, ddrm: {}}\n"
            "models: {mf: {model.name: mf}, lightgcn: {model.name: lightgcn}, sgl: {model.name: sgl}}\n")
    path = write(tmp_path, text)
    spec = load_ablation_spec(path, only_models=["sgl", "mf"])
    assert list(spec.variants) == ["mf/alone", "mf/ddrm", "sgl/alone", "sgl/ddrm"]  # the spec's order
    assert len(spec.trials) == 8 and spec.reference == "alone"
    with pytest.raises(ConfigError, match=r"unknown model\(s\) \['ngcf'\].*\['mf', 'lightgcn', 'sgl'\]"):
        load_ablation_spec(path, only_models=["mf", "ngcf"])
    plain = write(tmp_path, "name: b\nbase: {data: {name: tiny}}\nvariants: {x: {}}\n", "plain.yaml")
    with pytest.raises(ConfigError, match="no 'models' block"):
        load_ablation_spec(plain, only_models=["mf"])


def test_ablation_spec_runs_only_the_chosen_variants(tmp_path):
    text = ("name: a\nbase: {data: {name: tiny}}\nseeds: [0, 1, 2]\nreference: alone\n"
            "variants: {alone: {ddrm.enabled: false}, ddrm: {}, item_only: {ddrm.denoise_users: false}}\n"
            "models: {mf: {model.name: mf}, sgl: {model.name: sgl}}\n")
    path = write(tmp_path, text)
    spec = load_ablation_spec(path, only_models=["sgl"], only_variants=["item_only", "ddrm"])
    assert list(spec.variants) == ["sgl/ddrm", "sgl/item_only"]  # the spec's order
    assert spec.variants["sgl/item_only"] == {"model.name": "sgl", "ddrm.denoise_users": False}
    assert len(spec.trials) == 6 and spec.reference == "alone"  # the report pairs with reference rows elsewhere
    with pytest.raises(ConfigError, match=r"--variants ddrm,full: unknown variant\(s\) \['full'\]"):
        load_ablation_spec(path, only_variants=["ddrm", "full"])
    with pytest.raises(ConfigError, match=r"--variants : unknown variant"):
        load_ablation_spec(path, only_variants=[])


def test_ablation_seeds_from_the_command_line(tmp_path):
    path = write(tmp_path, "name: a\nbase: {data: {name: tiny}}\nseeds: [0, 1, 2, 3, 4]\nvariants: {x: {}, y: {}}\n")
    assert load_ablation_spec(path).seeds == (0, 1, 2, 3, 4)
    assert load_ablation_spec(path, seeds=2).seeds == (0, 1)
    spec = load_ablation_spec(path, seeds=[3, 1])  # exactly these, e.g. to add seeds to a finished study
    assert spec.seeds == (3, 1) and spec.trials == [("x", 3), ("x", 1), ("y", 3), ("y", 1)]
    for bad in ([1, 1], [-1], [], [2**31]):
        with pytest.raises(ConfigError, match="--seed-list"):
            load_ablation_spec(path, seeds=bad)
    with pytest.raises(ConfigError, match="key 'seeds'"):
        load_ablation_spec(write(tmp_path, "name: a\nseeds: [0, -1]\nvariants: {x: {}}\n"))
    with pytest.raises(ConfigError, match="--seeds 0"):
        load_ablation_spec(path, seeds=0)


@pytest.mark.parametrize("folder,loader", [("search_spaces", load_search_spec), ("ablations", load_ablation_spec)])
def test_shipped_specs_are_valid(folder, loader):
    paths = sorted((REPO_ROOT / folder).glob("*.yaml"))
    assert paths, f"no specs in {folder}/"
    for path in paths:
        loader(path)


def test_a_model_may_carry_its_own_settings_of_a_variant(tmp_path):
    """Each backend's searched DDRM config is that model's row of the one `tuned_ddrm` variant."""
    text = ("name: a\nbase: {data: {name: tiny}}\nseeds: [0]\nreference: alone\n"
            "variants: {alone: {ddrm.enabled: false}, tuned_ddrm: {ddrm.epochs: 20}}\n"
            "models: {mf: {model.name: mf, settings: {tuned_ddrm: {ddrm.steps: 10}}},\n"
            "         lightgcn: {model.name: lightgcn, settings: {tuned_ddrm: {ddrm.steps: 40, ddrm.epochs: 9}}}}\n")
    spec = load_ablation_spec(write(tmp_path, text))
    assert spec.variants["mf/tuned_ddrm"] == {"model.name": "mf", "ddrm.epochs": 20, "ddrm.steps": 10}
    assert spec.variants["lightgcn/tuned_ddrm"]["ddrm.epochs"] == 9  # the model's own setting wins
    assert spec.variants["lightgcn/alone"] == {"model.name": "lightgcn", "ddrm.enabled": False}
    assert spec.configs()[("lightgcn/tuned_ddrm", 0)].ddrm.steps == 40
    assert list(load_ablation_spec(write(tmp_path, text), only_variants=["alone"]).variants) == [
        "mf/alone", "lightgcn/alone"]  # settings of a variant left out by --variants are fine
    with pytest.raises(ConfigError, match=r"key 'models.mf.settings'.*expected a mapping from variants"):
        load_ablation_spec(write(tmp_path, text.replace("settings: {tuned_ddrm: {ddrm.steps: 10}}",
                                                        "settings: {nope: {ddrm.steps: 10}}")))
    with pytest.raises(ConfigError, match="variant 'mf/tuned_ddrm'"):
        load_ablation_spec(write(tmp_path, text.replace("ddrm.steps: 10", "ddrm.steps: 0")))


def test_a_spec_in_the_old_key_names_loads_to_the_configs_of_the_new_names(tmp_path):
    """Specs written before the config refactor (a ``backend`` section, ``backend.*`` and the loss plug-in's
    ``backend.denoise`` / ``backend.tce_*`` / ``backend.rce_beta`` keys) still load, through ddrm.legacy, to the
    very configs of the same spec in the new names."""
    old_search = ("name: s\nmode: grid\nbase:\n  data: {name: tiny}\n"
                  "  backend: {name: lightgcn, layers: 2, lr: 0.002, denoise: tce}\n  ddrm: {enabled: false}\n"
                  "space:\n  backend.tce_max_rate: {type: choice, values: [0.05, 0.1]}\n"
                  "  backend.tce_num_gradual: {type: choice, values: [10000, 30000]}\n"
                  "  backend.weight_decay: {type: choice, values: [1.0e-5, 1.0e-4]}\n")
    new_search = ("name: s\nmode: grid\nbase:\n  data: {name: tiny}\n"
                  "  model: {name: lightgcn, layers: 2, lr: 0.002}\n  denoise: {name: tce}\n  ddrm: {enabled: false}\n"
                  "space:\n  denoise.max_rate: {type: choice, values: [0.05, 0.1]}\n"
                  "  denoise.num_gradual: {type: choice, values: [10000, 30000]}\n"
                  "  model.weight_decay: {type: choice, values: [1.0e-5, 1.0e-4]}\n")
    old, new = (load_search_spec(write(tmp_path, text, f"{i}.yaml")) for i, text in enumerate((old_search, new_search)))
    assert old.base == new.base and old.space == new.space
    assert list(new.space) == ["denoise.max_rate", "denoise.num_gradual", "model.weight_decay"]
    assert config_from_dict(old.base).to_flat_dict() == config_from_dict(new.base).to_flat_dict()
    for key, dist in new.space.items():
        for value in dist["values"]:
            point = config_from_dict(apply_overrides(old.base, {key: value}))
            assert point == config_from_dict(apply_overrides(new.base, {key: value}))
    old_ablation = ("name: a\nbase: {data: {name: tiny}, backend: {name: mf, lr: 0.01}}\nseeds: [0, 1]\n"
                    "variants: {alone: {ddrm.enabled: false}, tce: {backend.denoise: tce, ddrm.enabled: false},\n"
                    "           rce: {backend.denoise: rce, backend.rce_beta: 0.5, ddrm.enabled: false}, ddrm: {}}\n"
                    "models:\n"
                    "  mf: {backend.name: mf, backend.lr: 0.01, settings: {tce: {backend.tce_max_rate: 0.05}}}\n"
                    "  sgl: {backend.name: sgl, backend.ssl_reg: 0.01, variants: [alone, ddrm]}\n"
                    "  ease: {model.name: ease, model.ease_lambda: 900.0, variants: [alone]}\n")
    new_ablation = ("name: a\nbase: {data: {name: tiny}, model: {name: mf, lr: 0.01}}\nseeds: [0, 1]\n"
                    "variants: {alone: {ddrm.enabled: false}, tce: {denoise.name: tce, ddrm.enabled: false},\n"
                    "           rce: {denoise.name: rce, denoise.beta: 0.5, ddrm.enabled: false}, ddrm: {}}\n"
                    "models:\n  mf: {model.name: mf, model.lr: 0.01, settings: {tce: {denoise.max_rate: 0.05}}}\n"
                    "  sgl: {model.name: sgl, model.ssl_reg: 0.01, variants: [alone, ddrm]}\n"
                    "  ease: {model.name: ease, model.ease_lambda: 900.0, variants: [alone]}\n")
    old, new = (load_ablation_spec(write(tmp_path, text, f"a{i}.yaml"))
                for i, text in enumerate((old_ablation, new_ablation)))
    assert list(old.variants) == list(new.variants) and old.trials == new.trials and len(new.trials) == 14
    assert old.configs() == new.configs()
    configs = new.configs()
    assert configs[("mf/tce", 1)].denoise.max_rate == 0.05 and configs[("mf/rce", 0)].denoise.beta == 0.5
    assert configs[("sgl/ddrm", 0)].model.ssl_reg == 0.01 and configs[("ease/alone", 0)].final_stage == "model"
