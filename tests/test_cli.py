"""``ddrm train`` end to end on generated data, and its bad-input behaviour (exit 2, one line, nothing written)."""

import json

import numpy as np
import pytest

from ddrm.cli import main
from ddrm.host import host_tags

FAST = ["--set", "train.batch_size=64", "--set", "ddrm.hidden_dims=[8,16]", "--set", "ddrm.steps=4",
        "--set", "backend.lr=0.01", "--quiet"]


def test_train_writes_metrics_json(tiny_dataset_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--backend", "mf", "--dataset", "tiny", "--data-dir", str(tiny_dataset_dir),
                 "--epochs", "2", "--seed", "3", "--out", str(out), *FAST])
    assert code == 0
    payload = json.loads((out / "metrics.json").read_text())
    for split in ("valid", "test"):
        for key in ("recall_at_10", "recall_at_20", "ndcg_at_10", "ndcg_at_20", "recall_at_50", "ndcg_at_100"):
            assert 0.0 <= payload[split][key] <= 1.0
    assert payload["config"]["seed"] == 3 and payload["config"]["ddrm"]["steps"] == 4
    assert payload["config"]["ddrm"]["enabled"] is True and "ddrm" in payload
    assert {k: payload["info"][k] for k in host_tags()} == host_tags()  # where it ran (CPU model, kernels, torch)
    printed = capsys.readouterr().out
    assert "recall_at_20" in printed and str(out / "metrics.json") in printed


def test_no_ddrm_reports_the_backend(tiny_dataset_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "tiny", "--data-dir", str(tiny_dataset_dir), "--no-ddrm", "--epochs", "1",
                 "--out", str(out), *FAST]) == 0
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["test"] == payload["backend"]["test"] and "ddrm" not in payload


@pytest.mark.parametrize("args,fragment", [
    (["--backend", "nosuch"], "model.name"),
    (["--dataset", "nosuch"], "nosuch"),
    (["--set", "ddrm.noise_scale=1.5"], "ddrm.noise_scale"),
    (["--set", "ddrm.steps=0"], "ddrm.steps"),
    (["--set", "ddrm.inference_multiplier=0.5"], "ddrm.inference_multiplier"),
    (["--set", "ddrm.nosuchkey=1"], "ddrm.nosuchkey"),
    (["--set", "novalue"], "KEY=VALUE"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_dataset_dir, tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    base = ["train", "--dataset", "tiny", "--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--out", str(out)]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_missing_data_dir_and_malformed_npy(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DDRM_FETCH_BASE_URL", "http://127.0.0.1:9/")  # nothing listens: offline
    out = tmp_path / "run"
    assert main(["train", "--dataset", "ml-1m_noisy", "--data-dir", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "ml-1m_noisy" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() and not out.exists()
    bad = tmp_path / "data" / "bad"
    bad.mkdir(parents=True)
    (bad / "train_list.npy").write_bytes(b"not a numpy file")
    np.save(bad / "valid_list.npy", np.zeros((1, 2), dtype=np.int64))
    np.save(bad / "test_list.npy", np.zeros((1, 2), dtype=np.int64))
    assert main(["train", "--dataset", "bad", "--data-dir", str(tmp_path / "data"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train_list.npy" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_study_commands_fail_before_ray_on_bad_specs_and_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DDRM_FETCH_BASE_URL", "http://127.0.0.1:9/")
    spec = tmp_path / "a.yaml"
    spec.write_text("name: a\nbase: {data: {name: ml-1m_noisy}}\nvariants: {full: {}}\n")
    assert main(["ablate", str(spec), "--data-dir", str(tmp_path / "nodata")]) == 2
    assert "ml-1m_noisy" in capsys.readouterr().err
    spec.write_text("name: a\nvariants: {full: {ddrm.stepz: 3}}\n")
    assert main(["ablate", str(spec)]) == 2
    assert "ddrm.stepz" in capsys.readouterr().err
    spec.write_text("name: a\nvariants: {full: {}}\nmodels: {mf: {model.name: mf}}\n")
    assert main(["ablate", str(spec), "--seed-list", "1,two"]) == 2
    assert "--seed-list '1,two'" in capsys.readouterr().err
    assert main(["ablate", str(spec), "--models", "mf,sgl"]) == 2
    assert "unknown model(s) ['sgl']" in capsys.readouterr().err
    space = tmp_path / "s.yaml"
    space.write_text("name: s\nspace: {ddrm.steps: {type: normal, mu: 3}}\n")
    assert main(["tune", str(space)]) == 2
    err = capsys.readouterr().err
    assert "unknown distribution" in err and len(err.strip().splitlines()) == 1
    import ray
    assert not ray.is_initialized()


def test_cpus_per_trial_and_max_concurrent_replace_the_specs_values(tmp_path, capsys):
    import argparse

    from ddrm.cli import _with_study_flags
    from ddrm.tuning.spec import load_ablation_spec

    spec_file = tmp_path / "a.yaml"
    spec_file.write_text("name: a\nvariants: {full: {}}\nresources: {cpu: 2, gpu: 0.5}\nmax_concurrent: 1\n")
    spec = load_ablation_spec(spec_file, {}, None, None)
    unchanged = _with_study_flags(spec, argparse.Namespace(cpus_per_trial=None, max_concurrent=None))
    assert (unchanged.resources.cpu, unchanged.resources.gpu, unchanged.max_concurrent) == (2.0, 0.5, 1)
    changed = _with_study_flags(spec, argparse.Namespace(cpus_per_trial=1, max_concurrent=3))
    assert (changed.resources.cpu, changed.resources.gpu, changed.max_concurrent) == (1.0, 0.5, 3)
    assert main(["ablate", str(spec_file), "--cpus-per-trial", "0"]) == 2
    assert "--cpus-per-trial 0: expected a number > 0" in capsys.readouterr().err
    assert main(["ablate", str(spec_file), "--max-concurrent", "0"]) == 2
    assert "--max-concurrent 0: expected an integer >= 1" in capsys.readouterr().err
    missing = tmp_path / "missing.db"
    assert main(["ablate", str(spec_file), "--reuse-from", f"sqlite:///{missing}"]) == 2
    assert "--reuse-from sqlite:///" in capsys.readouterr().err and not missing.exists()
    import ray
    assert not ray.is_initialized()


@pytest.mark.parametrize("command", ["ablate", "tune"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_epochs_below_one_is_one_error_line_before_ray_starts(tmp_path, capsys, command, value):
    spec_file = tmp_path / "s.yaml"  # a valid spec: the flag alone is refused
    spec_file.write_text("name: s\n" + ("variants: {full: {}}\n" if command == "ablate"
                                        else "space: {ddrm.steps: {type: choice, values: [2, 4]}}\n"))
    assert main([command, str(spec_file), "--max-epochs", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --max-epochs {value}: expected an integer >= 1") and len(err.splitlines()) == 1
    import ray
    assert not ray.is_initialized()
