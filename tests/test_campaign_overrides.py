"""Per-dataset, per-stage overrides (spec ``overrides``): set last on the stage's base on their dataset alone, they
reach its search, chosen config and table rows, a plug-in only through ``inherit``, the plan and its probes; an
override for another dataset leaves this one's stages as they were (also the committed Amazon campaign's); bad
overrides are refused with one line naming the key path, for any dataset; a stage that ran otherwise is refused;
one small campaign run records them in campaign.json and campaign.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from campaign_spaces import SPACE_DDRM, SPACE_EASE, SPACE_MF
from conftest import REPO_ROOT, local_ray, make_interactions

from ddrm.campaign.estimate import probe_key
from ddrm.campaign.plan import format_plan, plan_campaign, stage_bases
from ddrm.campaign.run import (CHOSEN_FILE, _write_chosen, best_config, fixed_config, search_spec, table_spec,
                               write_record)
from ddrm.campaign.spec import CampaignSpec, load_campaign, stage_order
from ddrm.cli import main
from ddrm.config import Config, config_from_dict, load_config
from ddrm.data import write_prepared
from ddrm.errors import ConfigError

CAMPAIGN = """name: ovr
budget: 2
search_seed: 0
table_seeds: [1, 2]
max_concurrent: 1
base: {train: {epochs: 2}}
stages:
  mf: {space: mf.yaml}
  ease: {space: ease.yaml}
  mf_ddrm: {space: ddrm.yaml, inherit: {mf: ["model.*"]}}
  mostpop: {fixed: {model: {name: mostpop}}}
tables:
  main:
    rows: {mf/alone: mf, mf/ddrm: mf_ddrm, ease/tuned: ease, mostpop/fixed: mostpop}
"""
OVERRIDES = """overrides:
  tiny:
    mf: {model.dim: 16, train.epochs: 3}   # over the space's model.dim 8 and the campaign's train.epochs 2
    mf_ddrm: {train: {precision: bf16}}    # a nested section reads as its dotted keys
    mostpop: {train.eval_batch_size: 64}
  other:
    ease: {train.eval_batch_size: 7}
"""
MF_LR = 0.01


def _spec(tmp: Path, text: str = CAMPAIGN + OVERRIDES, name: str = "ovr.yaml") -> Path:
    folder = tmp / "spec"
    folder.mkdir(parents=True, exist_ok=True)
    for space, body in (("mf.yaml", SPACE_MF), ("ddrm.yaml", SPACE_DDRM), ("ease.yaml", SPACE_EASE)):
        (folder / space).write_text(body)
    (folder / name).write_text(text)
    return folder / name


def _flat(base: dict[str, Any]) -> dict[str, Any]:
    return config_from_dict(base).to_flat_dict()


def _chosen(spec: CampaignSpec, dataset: str) -> dict[str, Config]:
    """Each stage's chosen config as the run makes it (a search: its base at model.lr 0.01 or EASE's lambda 10)."""
    chosen: dict[str, Config] = {}
    for level in stage_order(spec):
        for stage in level:
            if spec.stages[stage].fixed is not None:
                chosen[stage] = fixed_config(spec, stage, dataset, chosen)
                continue
            search = search_spec(spec, stage, dataset, chosen)
            params = {k: v for k, v in {"model.lr": MF_LR, "model.ease_lambda": 10}.items() if k in search.space}
            chosen[stage] = best_config(search, {"best": {"params": params}})
    return chosen


# ------------------------------------------------------------------------------------------------ semantics
def test_an_override_sets_its_stages_base_last_on_its_dataset_alone(tmp_path):
    spec = load_campaign(_spec(tmp_path))
    mf = _flat(search_spec(spec, "mf", "tiny", {}).base)
    assert mf["model.dim"] == 16 and mf["train.epochs"] == 3  # over the space's base and the campaign's base
    assert mf["train.patience"] == 2 and mf["model.name"] == "mf"  # the rest is the space's
    elsewhere = _flat(search_spec(spec, "mf", "other", {}).base)
    assert elsewhere["model.dim"] == 8 and elsewhere["train.epochs"] == 2  # no override on "other"
    assert _flat(search_spec(spec, "ease", "other", {}).base)["train.eval_batch_size"] == 7
    assert _flat(search_spec(spec, "ease", "tiny", {}).base)["train.eval_batch_size"] == 1024
    mostpop = fixed_config(spec, "mostpop", "tiny", {})
    assert mostpop.model.name == "mostpop" and mostpop.train.eval_batch_size == 64  # applied after `fixed`
    assert fixed_config(spec, "mostpop", "other", {}).train.eval_batch_size == 1024


def test_the_override_reaches_the_chosen_config_and_the_table_and_a_plug_in_only_through_inherit(tmp_path):
    spec = load_campaign(_spec(tmp_path))
    chosen = _chosen(spec, "tiny")
    assert chosen["mf"].model.dim == 16 and chosen["mf"].train.epochs == 3 and chosen["mf"].model.lr == MF_LR
    ddrm = _flat(search_spec(spec, "mf_ddrm", "tiny", chosen).base)
    assert ddrm["model.dim"] == 16  # model.* inherited from mf's chosen config, override included ...
    assert ddrm["train.epochs"] == 2  # ... but not mf's train.epochs: mf_ddrm inherits model.* only
    assert ddrm["train.precision"] == "bf16"  # its own override
    rows = table_spec(spec, "main", "tiny", chosen).variants  # each row reruns its stage's chosen config
    assert rows["mf/alone"]["model.dim"] == 16 and rows["mf/alone"]["train.epochs"] == 3
    assert rows["mf/ddrm"]["train.precision"] == "bf16" and rows["mf/ddrm"]["model.dim"] == 16
    assert rows["mostpop/fixed"]["train.eval_batch_size"] == 64
    assert rows["ease/tuned"]["train.eval_batch_size"] == 1024


def test_the_plan_prints_the_overrides_and_probes_the_overridden_base(tmp_path, monkeypatch):
    probed: dict[str, Config] = {}

    def fake_probe(config, data_dir, threads=1):
        probed[probe_key(config)] = config
        return {"backend": 1.0, "ddrm": 2.0, "model": 1.0, "total": 3.0}

    monkeypatch.setattr("ddrm.campaign.plan.probe_epoch", fake_probe)
    spec = load_campaign(_spec(tmp_path))
    plan = plan_campaign(spec, "tiny", tmp_path / "out", probe=True)
    assert plan["stages"]["mf"]["overrides"] == {"model.dim": 16, "train.epochs": 3}
    assert plan["stages"]["mf_ddrm"]["overrides"] == {"train.precision": "bf16"}
    assert "overrides" not in plan["stages"]["ease"]  # a stage without one keeps the plan's shape
    assert plan["stages"]["mf"]["epoch_cap"] == 3  # the estimate's epochs are the overridden base's
    assert probed["mf+none+alone"].model.dim == 16
    assert probed["mf+none+ddrm@bf16"].train.precision == "bf16"  # the probe of a bf16 stage runs at bf16
    printed = format_plan(plan, 2)
    assert "mf_ddrm <- mf[model.*]: mf+none+ddrm@bf16," in printed and "; overrides train.precision=bf16" in printed
    assert "; overrides model.dim=16, train.epochs=3" in printed and printed.count("; overrides") == 3
    other = plan_campaign(spec, "other", tmp_path / "other", probe=False)
    assert [s for s, e in other["stages"].items() if "overrides" in e] == ["ease"]


def test_a_probe_is_keyed_by_the_precision_its_trained_stage_runs_at(monkeypatch):
    diffrec = load_config(None, {"model.name": "diffrec", "train.precision": "bf16"})
    assert probe_key(diffrec) == "diffrec+none+alone@bf16"  # a standalone model that computes in bf16 ...
    assert probe_key(diffrec.replace({"model.name": "ease"})) == "ease+none+alone"  # ... not one that stays fp32
    monkeypatch.setattr("ddrm.precision.BF16_STAGES", ("ddrm",))
    assert probe_key(diffrec) == "diffrec+none+alone"  # the key follows what the stage computes at
    assert probe_key(diffrec.replace({"train.precision": "fp32"})) == "diffrec+none+alone"
    ddrm = load_config(None, {"model.name": "mf", "ddrm.enabled": True, "train.precision": "bf16"})
    assert probe_key(ddrm) == "mf+none+ddrm@bf16"
    assert probe_key(ddrm.replace({"ddrm.enabled": False})) == "mf+none+alone"  # a backend alone: fp32


# ------------------------------------------------------------------------------------------------ resume safety
def test_a_spec_gaining_overrides_for_another_dataset_leaves_this_datasets_stages_identical(tmp_path):
    without = load_campaign(_spec(tmp_path, CAMPAIGN, "plain.yaml"))
    gained = load_campaign(_spec(tmp_path, CAMPAIGN + OVERRIDES, "gained.yaml"))
    for dataset, overridden in (("third", None), ("other", "ease")):  # none at all; another stage's only
        chosen = _chosen(without, dataset)
        same = [s for s in without.stages if s != overridden]
        assert {s: c for s, c in _chosen(gained, dataset).items() if s in same} == {s: chosen[s] for s in same}
        for stage in same:
            if without.stages[stage].fixed is not None:
                assert fixed_config(gained, stage, dataset, chosen) == fixed_config(without, stage, dataset, chosen)
            else:
                assert search_spec(gained, stage, dataset, chosen) == search_spec(without, stage, dataset, chosen)
        rows = [{r: v for r, v in table_spec(s, "main", dataset, chosen).variants.items() if r != "ease/tuned"}
                for s in (without, gained)]
        assert rows[0] == rows[1]
        bases = [{k: (b.config, b.search) for k, b in stage_bases(s, dataset, tmp_path / dataset).items()
                  if k in same} for s in (without, gained)]
        assert bases[0] == bases[1] and len(bases[0]) == len(same)


TUNED = REPO_ROOT / "campaigns" / "tuned.yaml"
AMAZON = REPO_ROOT / "docs" / "results" / "campaigns" / "tuned" / "amazon-hin_noisy"


def test_overrides_for_other_datasets_leave_the_committed_amazon_campaigns_studies_as_they_ran():
    """campaigns/tuned.yaml with overrides for Yelp and ML-1M builds every Amazon stage's study (its base: the
    study key) from the chosen configs committed there exactly as without them; on ML-1M the stages without an
    override are unchanged too."""
    committed_spec = load_campaign(TUNED)
    assert "amazon-hin_noisy" not in committed_spec.overrides
    spec = CampaignSpec.model_validate({**committed_spec.model_dump(), "overrides": {}})  # as Amazon's stages ran
    bf16 = {"diffrec": {"train.precision": "bf16"}, "multivae": {"train.precision": "bf16"}}
    gained = CampaignSpec.model_validate({**spec.model_dump(),
                                          "overrides": {"yelp-hin_noisy": bf16, "ml-1m_noisy": bf16}})
    committed = {p.parent.name: config_from_dict(yaml.safe_load(p.read_text()))
                 for p in AMAZON.glob(f"stages/*/{CHOSEN_FILE}")}
    assert {"mf", "lightgcn", "diffrec", "multivae", "mostpop"} <= set(committed)
    for dataset, overridden in (("amazon-hin_noisy", set()), ("ml-1m_noisy", set(bf16))):
        chosen: dict[str, Config] = {}
        for level in stage_order(spec):
            for stage in level:
                specs = (spec, gained, committed_spec)
                if spec.stages[stage].fixed is not None:
                    built = [fixed_config(s, stage, dataset, chosen) for s in specs]
                    chosen[stage] = committed.get(stage, built[0])
                else:
                    built = [search_spec(s, stage, dataset, chosen) for s in specs]
                    chosen[stage] = committed.get(stage, config_from_dict(built[0].base))
                assert (built[0] == built[1]) is (stage not in overridden), (dataset, stage)
                if dataset == "amazon-hin_noisy":  # the committed spec (its Yelp override) builds what Amazon ran
                    assert built[2] == built[0], stage
    diffrec = search_spec(gained, "diffrec", "ml-1m_noisy", {})
    assert _flat(diffrec.base)["train.precision"] == "bf16"


def _runs_csv(folder: Path, configs: list[Config]) -> None:
    """A stage's runs.csv with one trial per config (its ``param.*`` columns)."""
    rows = [{"model": c.model.name, "variant": f"trial{n}", "seed": c.seed, "run_id": f"r{n}",
             "tracking_store": "sqlite:///x.db", **{f"param.{k}": v for k, v in c.to_flat_dict().items()}}
            for n, c in enumerate(configs)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)


def _plan_error(spec_path: Path, out: Path) -> str:
    with pytest.raises(ConfigError) as error:
        stage_bases(load_campaign(spec_path), "tiny", out)
    assert len(str(error.value).splitlines()) == 1
    return str(error.value)


def test_a_stage_that_ran_otherwise_on_an_overridden_key_is_refused(tmp_path):
    out = tmp_path / "out"
    plain = load_campaign(_spec(tmp_path, CAMPAIGN, "plain.yaml"))
    ran = config_from_dict(search_spec(plain, "mf", "tiny", {}).base).replace({"model.lr": MF_LR})  # model.dim 8
    _runs_csv(out / "stages" / "mf", [ran, ran.replace({"model.lr": 0.02})])
    stage_bases(plain, "tiny", out)  # as it ran: nothing to check
    message = _plan_error(_spec(tmp_path), out)  # the spec gains an override of model.dim on tiny's mf
    assert message.startswith(f"{tmp_path / 'spec' / 'ovr.yaml'}: overrides.tiny.mf.model.dim: the override sets "
                              f"model.dim 16, but 2 trial(s) of its runs.csv ran with 8")
    assert "move " in message
    assert len(stage_bases(load_campaign(_spec(tmp_path, CAMPAIGN + OVERRIDES.replace("tiny:", "third:"))), "tiny",
                           out)) == 4  # an override of another dataset: nothing to refuse
    spec = load_campaign(_spec(tmp_path))
    matching = config_from_dict(search_spec(spec, "mf", "tiny", {}).base).replace({"model.lr": MF_LR})
    _runs_csv(out / "stages" / "mf", [matching])
    _write_chosen(out / "stages" / "mf", matching, "test")
    assert stage_bases(spec, "tiny", out)["mf"].source == "chosen"  # ran with the override: fine
    write_record(out, {"campaign": "ovr", "dataset": "tiny", "budget": 2, "search_seed": 0, "table_seeds": [1, 2],
                       "overrides": {"mf": {"model.dim": 16, "train.epochs": 3}}, "stages": {}, "tables": {}})
    message = _plan_error(_spec(tmp_path, CAMPAIGN, "plain.yaml"), out)  # the override is dropped from the spec
    assert ("overrides.tiny.mf.model.dim: campaign.json records that the stage ran with the override model.dim 16, "
            "which the spec no longer sets (8 now), and 1 trial(s) of its runs.csv and its chosen_config.yaml ran "
            "with 16") in message


# ------------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("overrides, fragment", [
    ("{2024: {mf: {train.epochs: 3}}}", "overrides: dataset 2024 (int) is not a dataset name; expected a string"),
    ("{a/b: {mf: {train.epochs: 3}}}", "overrides.a/b: 'a/b' is not a dataset name"),
    ("{other: {nope: {train.epochs: 3}}}", "overrides.other.nope: 'nope' is not a stage; stages: ['mf', 'ease', "),
    ("{other: {mf: {}}}", "overrides.other.mf: expected a mapping of dotted config keys to values"),
    ("{other: {mf: {train.epoch: 3}}}", "overrides.other.mf.train.epoch: unknown config key 'train.epoch'; allowed "
                                        "in 'train': ['epochs', "),
    ("{other: {mf: {train.epochs: -1}}}", "overrides.other.mf.train.epochs: config key 'train.epochs': value -1 is "
                                          "not allowed; input should be greater than or equal to 0"),
    ("{other: {mostpop: {model.dim: 8}}}", "overrides.other.mostpop.model.dim: unknown config key 'model.dim'; "
                                           "allowed in 'model' (model 'mostpop'): ['name']"),
    ("{other: {mf: {model.lr: 0.01}}}", "overrides.other.mf.model.lr: 0.01 is not allowed; stage 'mf' searches "
                                        "model.lr (its space mf.yaml), so the search sets it"),
    ("{other: {ease: {model: {ease_lambda: 10}}}}", "overrides.other.ease.model.ease_lambda: 10 is not allowed; "
                                                    "stage 'ease' searches model.ease_lambda"),
    ("{other: {mf_ddrm: {model.dim: 16}}}", "overrides.other.mf_ddrm.model.dim: stage 'mf_ddrm' inherits model.dim "
                                            "from the chosen config of 'mf' (inherit ['model.*']); an override of "
                                            "'mf' reaches it through inherit"),
    ("{other: {mf: {seed: 3}}}", "overrides.other.mf.seed: 3 is not allowed; the campaign sets it"),
    ("{other: {mf: {data.name: x}}}", "overrides.other.mf.data.name: 'x' is not allowed; the campaign sets it"),
    ("{other: {mf: {model.name: lightgcn}}}", "overrides.other.mf.model.name: 'lightgcn' is not allowed; what the "
                                              "stage is"),
    ("{other: {mf: {train.device: cuda}}}", "overrides.other.mf.train.device: 'cuda' is not allowed; where trials "
                                            "run, not what they compute"),
])
def test_bad_overrides_are_refused_with_one_line_for_any_dataset(tmp_path, capsys, overrides, fragment):
    spec = _spec(tmp_path, CAMPAIGN + f"overrides: {overrides}\n")
    with pytest.raises(ConfigError) as error:
        load_campaign(spec)
    assert str(error.value).startswith(f"{spec}: ") and fragment in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    assert main(["campaign", "plan", str(spec), "--dataset", "tiny", "--out", str(tmp_path / "out"),
                 "--no-probe"]) == 2  # "other" is not the dataset run: refused all the same
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------------ one run
@pytest.mark.slow
def test_a_run_trains_records_and_reports_the_overrides(tmp_path, capsys):
    text = CAMPAIGN.replace("  ease: {space: ease.yaml}\n  mf_ddrm: {space: ddrm.yaml, inherit: {mf: [\"model.*\"]}}\n",
                            "").replace("mf/ddrm: mf_ddrm, ease/tuned: ease, ", "")
    spec = _spec(tmp_path, text + "overrides:\n  tiny: {mf: {model.dim: 16}, mostpop: {train.eval_batch_size: 64}}\n"
                                  "  other: {mf: {model.dim: 4}}\n")
    write_prepared(tmp_path / "data" / "tiny", *make_interactions())
    out = tmp_path / "out"
    with local_ray(tmp_path / "cache"), pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # MLflow's artifacts folder is relative to the working directory
        assert main(["campaign", "run", str(spec), "--dataset", "tiny", "--data-dir", str(tmp_path / "data"),
                     "--out", str(out), "--storage", str(tmp_path / "ray"), "--no-probe"]) == 0
    printed = capsys.readouterr().out
    assert "  mf: mf+none+alone, tpe, 2 trials, <= 2 epochs each" in printed and "; overrides model.dim=16" in printed
    search = pd.read_csv(out / "stages" / "mf" / "runs.csv")
    assert len(search) == 2 and set(search["param.model.dim"]) == {16}
    assert yaml.safe_load((out / "stages" / "mf" / CHOSEN_FILE).read_text())["model"]["dim"] == 16
    table = pd.read_csv(out / "tables" / "main" / "runs.csv")
    assert set(table.loc[table["model"] == "mf", "param.model.dim"]) == {16}
    assert set(table.loc[table["model"] == "mostpop", "param.train.eval_batch_size"]) == {64}
    record = json.loads((out / "campaign.json").read_text())
    assert record["overrides"] == {"mf": {"model.dim": 16}, "mostpop": {"train.eval_batch_size": 64}}
    assert record["estimate"]["frozen"]["stages"]["mf"]["overrides"] == {"model.dim": 16}
    summary = (out / "campaign.md").read_text()
    assert "## Overrides" in summary and "| mf | `model.dim: 16` |" in summary
    assert "| mostpop | `train.eval_batch_size: 64` |" in summary
    changed = _spec(tmp_path, spec.read_text().replace("model.dim: 16", "model.dim: 12"), "changed.yaml")
    capsys.readouterr()
    assert main(["campaign", "plan", str(changed), "--dataset", "tiny", "--data-dir", str(tmp_path / "data"),
                 "--out", str(out), "--no-probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert ("overrides.tiny.mf.model.dim: the override sets model.dim 12, but 2 trial(s) of its runs.csv and its "
            "chosen_config.yaml ran with 16") in err and len(err.splitlines()) == 1
