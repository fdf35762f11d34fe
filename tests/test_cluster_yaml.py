"""cluster.yaml is a valid Ray cluster-launcher config for a CPU head + autoscaling GPU workers."""

import yaml

from conftest import REPO_ROOT


def test_cluster_yaml_shape():
    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    assert config["provider"]["type"] == "aws"
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    gpu_workers = [n for n in nodes.values() if n.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_workers and all(n["max_workers"] > n.get("min_workers", 0) for n in gpu_workers)  # autoscaling
    setup = " ".join(config["setup_commands"])
    assert "pip install -e" in setup and "ray[default,tune]" in setup  # installs the project and job server
    assert "DDRM_CACHE_DIR=/mnt/shared" in setup and "MLFLOW_TRACKING_URI" in setup  # shared storage + MLflow
    assert any("mlflow server" in c for c in config["head_setup_commands"])
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
