"""``bench/seed_table.py``: the JSON it writes, and resuming an interrupted run from its saved state."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import make_interactions
from ddrm.config import load_config
from ddrm.data import load_prepared, write_prepared
from ddrm.train import run

REPO = Path(__file__).resolve().parents[1]


def seed_table():
    spec = importlib.util.spec_from_file_location("seed_table", REPO / "bench" / "seed_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("DDRM_CACHE_DIR", str(tmp_path / "cache"))
    train, valid, test = make_interactions(seed=2)
    write_prepared(tmp_path / "tiny", train, valid, test)
    return tmp_path


COMMON = ["train.epochs=4", "train.patience=100", "train.batch_size=64", "backend.lr=0.01", "ddrm.enabled=false"]


def args(tmp_path: Path, *extra: str) -> list[str]:
    common = [part for item in COMMON for part in ("--set", item)]
    return ["--dataset", "tiny", "--data-dir", str(tmp_path), "--seeds", "0", "--variant", "MF=backend.name=mf",
            "--json", str(tmp_path / "out.json"), "--checkpoint-dir", str(tmp_path / "ckpt"), *common, *extra]


def test_seed_table_writes_each_run_and_leaves_no_checkpoint(tiny):
    assert seed_table().main(args(tiny)) == 0
    rows = json.loads((tiny / "out.json").read_text())["rows"]["MF"]
    assert len(rows) == 1 and rows[0]["seed"] == 0 and rows[0]["resumed"] is False
    assert 0 < rows[0]["test"]["recall_at_20"] <= 1 and rows[0]["epochs_run"] == 4
    assert not list((tiny / "ckpt").glob("*.pt"))


def test_seed_table_resumes_an_interrupted_run_where_it_stopped(tiny, capsys):
    module = seed_table()
    config = load_config(None, {"data.name": "tiny", "seed": 0, "backend.name": "mf",
                                **dict(module.parse_override(item) for item in COMMON)})
    data = load_prepared("tiny", tiny)
    uninterrupted = run(config, data=data, progress=False, use_cache=False)
    # an interrupted run: the state saved after its 2nd evaluation, as the saving callback writes it
    path = module.checkpoint_path(tiny / "ckpt", config)
    states = []
    run(config, data=data, progress=False, use_cache=False,
        callback=lambda event: states.append(event.state()) if event.epoch == 2 else None)
    path.parent.mkdir(parents=True)
    torch.save(states[0], path)
    assert module.main(args(tiny, "--resume")) == 0
    assert "resuming the backend stage after epoch 2" in capsys.readouterr().err
    row = json.loads((tiny / "out.json").read_text())["rows"]["MF"][0]
    assert row["resumed"] is True and not path.exists()
    assert row["test"]["recall_at_20"] == pytest.approx(uninterrupted.test["recall_at_20"], abs=1e-7)
    assert row["best_epoch"] == uninterrupted.backend.best_epoch


def with_seeds(argv: list[str], *seeds: str) -> list[str]:
    at = argv.index("--seeds")
    return argv[:at + 1] + list(seeds) + argv[at + 2:]


def test_resuming_with_other_seeds_keeps_the_runs_already_in_the_json(tiny):
    module = seed_table()
    assert module.main(with_seeds(args(tiny), "0")) == 0
    seed0 = json.loads((tiny / "out.json").read_text())["rows"]["MF"][0]
    assert module.main(with_seeds(args(tiny, "--resume"), "1")) == 0  # e.g. a second process, seed 1 only
    saved = json.loads((tiny / "out.json").read_text())
    assert saved["seeds"] == [0, 1] and [r["seed"] for r in saved["rows"]["MF"]] == [0, 1]
    assert saved["rows"]["MF"][0] == seed0
    assert module.main(with_seeds(args(tiny), "1")) == 0  # without --resume the file is this run's alone
    assert json.loads((tiny / "out.json").read_text())["seeds"] == [1]


def test_resuming_with_fewer_variants_keeps_the_other_variants_runs(tiny):
    module = seed_table()
    two = args(tiny, "--variant", "MF2=backend.name=mf,backend.lr=0.02")
    assert module.main(two) == 0
    before = json.loads((tiny / "out.json").read_text())["rows"]
    # rerun one variant of seed 0 (its entry removed, e.g. after a code change): the other variant's seed 0 stays
    saved = json.loads((tiny / "out.json").read_text())
    saved["rows"]["MF2"] = []
    (tiny / "out.json").write_text(json.dumps(saved))
    one = [a for a in args(tiny, "--resume") if a != "MF=backend.name=mf"]
    one[one.index("--variant") + 1:one.index("--variant") + 1] = ["MF2=backend.name=mf,backend.lr=0.02"]
    assert module.main(one) == 0
    after = json.loads((tiny / "out.json").read_text())["rows"]
    assert after["MF"] == before["MF"] and [r["seed"] for r in after["MF2"]] == [0]
    assert after["MF2"][0]["test"] == before["MF2"][0]["test"]


def test_a_bad_variant_is_one_clear_error_before_anything_runs(tiny, capsys):
    bad = args(tiny, "--variant", "K (= the backend's)=ddrm.propagation_layers=2")  # '=' inside the name
    with pytest.raises(SystemExit):
        seed_table().main(bad)
    err = capsys.readouterr().err
    assert "--variant 'K ('" in err and "unknown config key" in err and "cannot contain '='" in err
    assert not (tiny / "out.json").exists()  # the valid first variant did not run either
