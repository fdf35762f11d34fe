"""Raw MovieLens-100K to a report: `ddrm data prepare` -> `ddrm ablate` (models x variants x 2 seeds) -> `ddrm report`.

Runs on ``../shared/datasets/ml-100k-raw`` (skipped with a reason when absent), with a reduced spec: two
training epochs, a small denoiser. The random-noise setting makes the runs log the denoising diagnostics.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")
from mlflow.tracking import MlflowClient  # noqa: E402

from ddrm.cli import main  # noqa: E402

pytestmark = [pytest.mark.dataset, pytest.mark.slow]

SPEC = """name: raw100k
base:
  data: {name: ml-100k_random20}
  train: {epochs: 2, batch_size: 1024, patience: 5}
  ddrm: {hidden_dims: [16, 32], steps: 5}
seeds: [0, 1]
models:
  mf: {model.name: mf}
  lightgcn: {model.name: lightgcn, model.layers: 2}
variants:
  alone: {ddrm.enabled: false}
  ddrm: {}
reference: alone
resources: {cpu: 1}
max_concurrent: 2
"""


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_raw_ml100k_prepare_ablate_report(shared_datasets, ray_local, tmp_path, capsys):
    data_dir = tmp_path / "data"
    raw = shared_datasets / "ml-100k-raw"
    if not (raw / "u.data").is_file():
        pytest.skip(f"raw MovieLens-100K not found at {raw}")
    assert main(["data", "prepare", str(raw), "--setting", "random", "--noise-ratio", "0.2",
                 "--data-dir", str(data_dir), "--name", "ml-100k_random20"]) == 0
    meta = json.loads((data_dir / "ml-100k_random20" / "meta.json").read_text())
    flags = np.load(data_dir / "ml-100k_random20" / "train_noise.npy")
    assert 0.1 < flags.mean() < 0.25 and meta  # about one injected pair per five clean ones

    spec = tmp_path / "raw100k.yaml"
    spec.write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["ablate", str(spec), "--data-dir", str(data_dir), "--storage", str(tmp_path / "ray"),
                 "--tracking-uri", uri]) == 0
    capsys.readouterr()

    out = tmp_path / "report"
    assert main(["report", "raw100k", "--tracking-uri", uri, "--out", str(out)]) == 0
    table = pd.read_csv(out / "table.csv")
    assert sorted(zip(table["model"], table["variant"])) == [("lightgcn", "alone"), ("lightgcn", "ddrm"),
                                                             ("mf", "alone"), ("mf", "ddrm")]
    assert (table["n_seeds"] == 2).all()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("raw100k").experiment_id
    kids = [r for r in client.search_runs([experiment]) if r.data.tags.get("role") == "trial"]
    assert len(kids) == 8 and {k.data.tags["model"] for k in kids} == {"mf", "lightgcn"}
    for _, row in table.iterrows():
        values = [k.data.metrics["test_recall_at_20"] for k in kids
                  if (k.data.tags["model"], k.data.tags["variant"]) == (row["model"], row["variant"])]
        assert row["test_recall_at_20_mean"] == pytest.approx(np.mean(values), abs=1e-6)
        assert 0.0 < row["test_recall_at_20_mean"] < 1.0
        # diagnostics on the injected pairs: backend's in every row, DDRM's only in the DDRM rows
        assert 0.0 <= row["diag_backend_noise_auc_mean"] <= 1.0
        assert np.isnan(row["diag_ddrm_noise_auc_mean"]) == (row["variant"] == "alone")
    markdown = (out / "table.md").read_text()
    assert "| mf | alone (reference) | 2 |" in markdown and "backend_noise_auc" in markdown
    assert (out / "bars.png").stat().st_size > 5000
