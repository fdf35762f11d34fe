"""Smoke test of the benchmark suite (`bench/run --quick`): it runs, and every figure it prints is sane.

Not a timed test: the figures are only checked to be positive and consistent with each other.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.dataset
@pytest.mark.slow
def test_bench_run_quick(shared_datasets, tmp_path):
    out = tmp_path / "bench.json"
    # every section but ``tune`` (a Ray study, ~20 s of this test; the tuning tests run real studies)
    sections = ["gemm", "backends", "ddrm_train", "ddrm_eval", "scale"]
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run"), "--quick", "--data-dir", str(shared_datasets),
                           "--json", str(out), "--sections", *sections], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["gemm"]["gflops"] > 0
    assert set(results["backends"]) >= {"mf", "lightgcn", "sgl"}
    assert all(row["interactions_per_s"] > 0 for row in results["backends"].values() if isinstance(row, dict))
    train = results["ddrm_train"]
    assert train["gflops"] == pytest.approx(train["interactions_per_s"] * train["mflop_per_interaction"] / 1e3)
    assert results["ddrm_eval"]["users"] > 0 and results["ddrm_eval"]["seconds"] > 0
    scale = results["scale"]
    assert scale["train_pairs"] > 0 and scale["evaluated_users"] > 0 and scale["peak_rss_mb"] > 0
    assert min(scale["mf_epoch_s"], scale["ddrm_epoch_s"], scale["evaluation_s"]) > 0
    assert "tune" not in results and "| Tune overhead |" not in done.stdout  # only the sections asked for
    assert "| DDRM training (MF, released, fp32) |" in done.stdout
    # every DDRM figure in both dtypes, each against the GEMM rate of its own dtype; the host recorded
    assert "| DDRM training (MF, released, bf16) |" in done.stdout and results["gemm"]["bf16"]["gflops"] > 0
    assert train["bf16"]["precision"] == "bf16" and train["bf16"]["gemm_share"] > 0
    assert results["ddrm_eval"]["bf16"]["seconds"] > 0 and scale["bf16"]["ddrm_epoch_s"] > 0
    assert results["host"]["cpu_model"] and "bf16_flags" in results["host"]


@pytest.mark.slow
def test_tune_overhead_times_a_real_one_trial_study(monkeypatch, tmp_path):
    """``bench/run``'s ``tune`` section in this process (no child process, one trial): a real Ray + MLflow study."""
    import importlib.machinery
    import importlib.util

    ray = pytest.importorskip("ray")
    loader = importlib.machinery.SourceFileLoader("bench_run", str(REPO / "bench" / "run"))
    bench = importlib.util.module_from_spec(importlib.util.spec_from_loader("bench_run", loader))
    loader.exec_module(bench)
    monkeypatch.setenv("DDRM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        tune = bench.tune_overhead(1)
    finally:
        ray.shutdown()
    assert tune["finished"] == tune["trials"] == 1 and 0 < tune["first_report_s"] < tune["study_wall_s"]
    assert tune["wall_per_trial_s"] == pytest.approx(tune["study_wall_s"])


def test_loss_terms_prints_both_terms_of_sgl(tmp_path):
    from conftest import make_interactions
    from ddrm.data import write_prepared

    train, valid, test = make_interactions()
    write_prepared(tmp_path / "tiny", train, valid, test)
    done = subprocess.run([sys.executable, str(REPO / "bench" / "loss_terms.py"), "--data-dir", str(tmp_path),
                           "--dataset", "tiny", "--set", "backend.name=sgl", "--set", "train.batch_size=64",
                           "--batches", "4", "--every", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 2, 4]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)  # BPR and InfoNCE both reported


def test_end_to_end_records_each_precision_with_its_metrics_and_peak_rss(tmp_path):
    from conftest import make_interactions
    from ddrm.data import write_prepared

    write_prepared(tmp_path / "tiny", *make_interactions(n_users=40, n_items=30, seed=1))
    out = tmp_path / "e2e.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "end_to_end.py"), "--data-dir", str(tmp_path),
                           "--set", "data.name=tiny", "--set", "train.epochs=2", "--set", "ddrm.epochs=1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert [r["precision"] for r in record["runs"]] == ["fp32", "bf16"]
    for run in record["runs"]:
        assert run["exit_code"] == 0 and run["wall_seconds"] > 0 and run["peak_rss_mb"] > 50
        assert run["train_config"]["precision"] == run["precision"]  # the child ran the precision asked for
        assert 0 <= run["test"]["recall_at_20"] <= 1
    assert record["host"]["cpu_model"] and record["host_kind"].startswith("cpu_")
    assert not list(tmp_path.glob("*.tmp"))


def test_determinism_compares_every_metric_byte_for_byte(tmp_path):
    """bench/determinism.py: a side run twice is identical; a one-ulp change of one metric is reported."""
    import math

    script = str(REPO / "bench" / "determinism.py")
    sides = []
    for shape in ("old", "new"):
        side = tmp_path / f"{shape}.json"
        done = subprocess.run([sys.executable, script, "run", "--package-root", str(REPO / "platform"), "--shape",
                               shape, "--only", "mf", "mf+tce", "mostpop", "--json", str(side)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        sides.append(str(side))
    record = json.loads(Path(sides[0]).read_text())
    assert list(record["runs"]) == ["mf", "mf+tce", "mostpop"] and record["host"]["cpu_model"]
    assert record["runs"]["mf+tce"]["config"]["denoise.name"] == "tce"  # the old shape, read through ddrm.legacy
    out = tmp_path / "compare.json"
    done = subprocess.run([sys.executable, script, "compare", *sides, "--json", str(out)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "DIFFERS" not in done.stdout, done.stdout
    assert json.loads(out.read_text())["comparison"]["all_identical"]
    record["runs"]["mf"]["test"]["ndcg_at_20"] = math.nextafter(record["runs"]["mf"]["test"]["ndcg_at_20"], 1.0)
    Path(sides[0]).write_text(json.dumps(record))
    done = subprocess.run([sys.executable, script, "compare", *sides], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "| mf | DIFFERS |" in done.stdout, done.stdout


def test_vector_models_times_every_variant_and_pairs_fp32_with_bf16_per_seed(tmp_path):
    """bench/vector_models.py on generated data: the speed mode times the dense and sparse Mult-VAE and DiffRec at
    fp32 and bf16; the accuracy mode trains each model at both precisions per seed and pairs them."""
    script = str(REPO / "bench" / "vector_models.py")
    common = ["--quick", "--generated", "120", "80", "1500", "--set", "model.hidden_dims=[32, 8]"]
    speed_json, accuracy_json = tmp_path / "speed.json", tmp_path / "accuracy.json"
    done = subprocess.run([sys.executable, script, *common, "--json", str(speed_json)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    speed = json.loads(speed_json.read_text())
    assert speed["package"] == "platform/ddrm"  # this checkout's code (relative to it), not an installed one
    assert set(speed["speed"]["multivae"]["variants"]) == {"dense fp32", "sparse fp32", "dense bf16", "sparse bf16"}
    assert set(speed["speed"]["diffrec"]["variants"]) == {"fp32", "bf16"}
    for row in speed["speed"].values():
        assert all(len(v["train_s"]) == speed["reps"] and min(v["train_s"] + v["eval_s"]) > 0
                   for v in row["variants"].values())
        assert all(r["train"] > 0 and r["eval"] > 0 for r in row["speedup"].values())
    assert speed["host"]["cpu_model"] and "bf16_flags" in speed["host"] and speed["host"]["torch_threads"] == 1
    assert "| sparse_vs_dense_fp32 |" in done.stdout and "| bf16_vs_fp32 |" in done.stdout
    done = subprocess.run([sys.executable, script, *common, "--accuracy", "--seeds", "0", "1", "--set",
                           "train.epochs=1", "--json", str(accuracy_json)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy = json.loads(accuracy_json.read_text())["accuracy"]
    for name, arms in (("multivae", {"fp32", "bf16", "dense_fp32"}), ("diffrec", {"fp32", "bf16"})):
        runs = accuracy[name]["runs"]
        assert set(runs) == arms and all(set(r) == {"0", "1"} for r in runs.values())
        assert all(r["precision_stages"]["model"] == arm.removeprefix("dense_")
                   for arm, seeds in runs.items() for r in seeds.values())
        for arm in arms - {"fp32"}:
            paired = accuracy[name]["paired"][f"{arm}_minus_fp32"]["test_recall_at_20"]
            assert paired["diff"]["values"] == pytest.approx(
                [runs[arm][s]["test_recall_at_20"] - runs["fp32"][s]["test_recall_at_20"] for s in ("0", "1")])
    assert "multivae: dense_fp32 - fp32, paired over seeds [0, 1]" in done.stdout

def test_graph_epoch_times_every_arm_and_checks_their_losses_are_identical(tmp_path):
    """bench/graph_epoch.py on generated data: LightGCN and SGL, the old propagation (bench/graph_reference.py) and the fused
    one, each arm training the same batches; losses and parameters identical across arms, op counts, host. Timings
    are not checked (they mean nothing at this size)."""
    out = tmp_path / "graph.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "graph_epoch.py"), "--quick", "--generated", "120", "80",
                           "1500", "--set", "model.dim=16", "--set", "train.batch_size=256", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["package"] == "platform/ddrm" and record["command"].startswith("python bench/graph_epoch.py --quick")
    assert record["host"]["cpu_model"] and record["host"]["torch_threads"] == 1
    assert set(record["speed"]) == {"lightgcn", "sgl"}
    arms = ["reference", "reference_int32", "fused_all_rows", "fused"]
    for name, row in record["speed"].items():
        assert list(row["arms"]) == arms and row["batches"] >= 2
        assert row["losses_identical"] and row["parameters_identical"] and row["max_rel_loss_diff"] == 0
        assert all(len(v["train_s"]) == record["reps"] and min(v["train_s"]) > 0 for v in row["arms"].values())
        assert set(row["speedup"]) == {f"{arm}_vs_reference" for arm in arms[1:]}
        assert all(row["op_counts"][arm]["aten_calls"] > 0 for arm in arms)
        assert row["settings"]["model"]["name"] == name and row["settings"]["batch_size"] == 256
    assert "| fused_vs_reference |" in done.stdout
