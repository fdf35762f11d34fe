"""cluster.yaml is a config Ray's own cluster launcher accepts (a CPU head + autoscaling GPU workers), and
``ray job submit --working-dir .`` from a used checkout uploads the code only.

Both checks call Ray's code: ``prepare_config`` + ``validate_config`` (what ``ray up`` runs on the YAML), and
``create_package`` with the excludes the job SDK passes (what ``ray job submit`` zips and uploads).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

pytest.importorskip("jsonschema")  # ray[default] brings it; validate_config needs it
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402


def _launcher_config(config: dict | None = None) -> dict:
    """``cluster.yaml`` as ``ray up`` sees it: defaults filled in, setup commands merged, then validated."""
    raw = copy.deepcopy(config) if config is not None else yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    prepared = prepare_config(raw)
    validate_config(prepared)
    return prepared


def test_ray_accepts_cluster_yaml_and_it_means_what_the_readme_says():
    config = _launcher_config()
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert config["provider"]["type"] == "aws" and head["resources"].get("GPU", 0) == 0
    gpu_workers = [n for n in nodes.values() if n.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_workers and all(n["max_workers"] > n["min_workers"] for n in gpu_workers)  # autoscaling GPU nodes
    for commands in (config["head_setup_commands"], config["worker_setup_commands"]):
        setup = "\n".join(commands)
        assert 'pip install -e "/home/ubuntu/ddrm"' in setup  # every node runs the project
        assert "/mnt/shared" in setup and "DDRM_CACHE_DIR=/mnt/shared/backend_cache" in setup  # shared storage
    # only the driver (on the head) logs to MLflow: the head knows the server, workers need no tracking URI
    head_setup = "\n".join(config["head_setup_commands"])
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in head_setup and "mlflow server" in head_setup
    assert "--port 5000" in head_setup
    assert not any("MLFLOW" in c or "mlflow server" in c for c in config["worker_setup_commands"])
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in c for c in config["worker_start_ray_commands"])
    assert {".gitignore", ".rayignore"} <= set(config["rsync_filter"])  # `ray up` syncs the code only


def test_cluster_yaml_pins_the_versions_the_project_does():
    pinned = r'"(ray\[default,tune\]|optuna|mlflow)==([\w.]+)"'
    pins = dict(re.findall(pinned, (REPO_ROOT / "cluster.yaml").read_text()))
    assert pins == dict(re.findall(pinned, (REPO_ROOT / "pyproject.toml").read_text())) and len(pins) == 3


@pytest.mark.parametrize("edit", [
    lambda c: c.update(setup_comands=c.pop("setup_commands")),  # a typo Ray refuses
    lambda c: c["available_node_types"]["gpu_worker"].update(max_workers="eight"),
    lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
], ids=["typo-key", "non-integer", "missing-node-config"])
def test_an_edit_ray_would_refuse_fails_here(edit):
    import jsonschema

    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    edit(config)
    with pytest.raises(jsonschema.ValidationError):
        _launcher_config(config)


# ------------------------------------------------------------------ what `ray job submit --working-dir .` sends
CODE = ["pyproject.toml", "README.md", "platform/ddrm/cli.py", "platform/ddrm/data/__init__.py",
        "ablations/quick.yaml", "search_spaces/mf_ml1m_ddrm.yaml", "cluster.yaml",
        # committed results go (runs/ and reports/ are ignored only at the root, not docs/results' group folders)
        "docs/results/README.md", "docs/results/runs/mf_ml1m.json", "docs/results/table2_tuned/runs.csv"]
LEFT_BEHIND = {  # what a used checkout holds that must stay on this machine
    "data/ml-1m_noisy/train_list.npy": 3, "runs/mf-seed0/metrics.json": 1, "reports/fig5/table.csv": 1,
    "ray_results/quick/trial_0/checkpoint_000000/state.pt": 3, "ray_results/backend_cache/backends/x.pt": 3,
    "mlruns.db": 3, "mlflow.db": 2, "mlruns/0/meta.yaml": 1, "mlartifacts/1/a/config.yaml": 1,
    "bench_results/run.json": 1, ".ddrm_cache/backends/y.pt": 2, "scratch/emb.npy": 2,
    ".pytest_cache/v/cache": 1, "platform/ddrm/__pycache__/cli.cpython-311.pyc": 1, ".venv/lib/big.so": 3,
    ".git/objects/pack/pack.pack": 3,
}


def _used_checkout(folder: Path) -> Path:
    """The project's files (git's list, else a copy without the usual clutter) plus big fake outputs."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True)
    files = [f for f in listed.stdout.split("\0") if f] if listed.returncode == 0 else []
    if files:
        for name in files + [".rayignore"]:
            if (REPO_ROOT / name).is_file():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / name, folder / name)
    else:
        shutil.copytree(REPO_ROOT, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", "data", "ray_results", "runs", "reports", "mlruns*", "*.db", ".venv", "__pycache__"))
    for name, mib in LEFT_BEHIND.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with open(folder / name, "wb") as handle:
            handle.write(os.urandom(mib * 2**20))  # incompressible: the zip would be as big
    return folder


@pytest.mark.parametrize("respect_gitignore", [True, False], ids=["gitignore+rayignore", "rayignore-only"])
def test_job_submit_uploads_the_code_and_nothing_a_used_checkout_accumulates(tmp_path, respect_gitignore):
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, create_package

    checkout = _used_checkout(tmp_path / "checkout")
    target = tmp_path / "package.zip"
    # what the job SDK does for --working-dir: Ray's default excludes (.git, .venv, __pycache__) plus none of
    # ours on the command line; .gitignore honoured unless RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1
    create_package(str(checkout), target, include_gitignore=respect_gitignore,
                   excludes=ray_constants.get_runtime_env_default_excludes())
    names = set(zipfile.ZipFile(target).namelist())
    assert set(CODE) <= names
    assert not [n for n in names if any(n == f or n.startswith(f.rsplit("/", 1)[0] + "/") for f in LEFT_BEHIND)]
    assert not [n for n in names if n.endswith((".db", ".npy", ".pt", ".pyc"))]
    size = target.stat().st_size
    # the committed code, specs and docs (runs.csv included, result plots excluded by .rayignore) are ~2.8 MiB:
    # Ray stores them in the zip uncompressed; it refuses 100 MiB
    assert size < 6 * 2**20 < GCS_STORAGE_MAX_SIZE, f"{size / 2**20:.1f} MiB"
