"""Code version in the caches: a change to what a stage computes retrains, a change to report/CLI text does not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, make_interactions

from ddrm.codeversion import fingerprint_of, source_digest

TRAIN_ONCE = """
import json, sys
from pathlib import Path
import torch
import ddrm
from ddrm.config import config_from_dict
from ddrm.train import fit_backend, load_dataset
config = config_from_dict({"data": {"name": "tiny", "dir": sys.argv[1]}, "ddrm": {"enabled": False},
                           "train": {"epochs": 1, "threads": 1}})
_, result = fit_backend(config, load_dataset(config), torch.device("cpu"), progress=False)
print(json.dumps({"from_cache": result.from_cache, "package": str(Path(ddrm.__file__).parent)}))
"""


def _copy_package(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(REPO_ROOT / "platform" / "ddrm", root / "ddrm", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_docstrings_comments_and_layout_do_not_change_a_digest(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Doc."""\n\ndef f(x):\n    """Shape (B,)."""\n    return x + 1\n')
    b.write_text('"""Other doc."""\n# a comment\ndef f( x ):\n    return x + 1  # note\n')
    c.write_text('def f(x):\n    return x + 2\n')
    assert source_digest(a) == source_digest(b) != source_digest(c)


RUNS = {"mf": ("backend", "mf", "none"), "mf+ddrm": ("ddrm", "mf", "none"), "lightgcn": ("backend", "lightgcn", "none"),
        "mf+tce": ("backend", "mf", "tce"), "ease": ("model", "ease", "none"), "multivae": ("model", "multivae", "none")}


def _fingerprints(root: Path) -> dict[str, str]:
    return {run: fingerprint_of.__wrapped__(*args, root=str(root)) for run, args in RUNS.items()}


def test_fingerprints_follow_the_sources_each_run_imports(tmp_path):
    root = _copy_package(tmp_path) / "ddrm"
    before = _fingerprints(root)
    assert len(set(before.values())) == len(before)  # every run computes something else
    _append(root / "report" / "table.py", "\nUNUSED = 1\n")
    _append(root / "cli.py", "\nUNUSED = 1\n")
    (root / "backends" / "newgcn.py").write_text("from .lightgcn import LightGCN\nUNUSED = 1\n")  # a new model file
    assert _fingerprints(root) == before  # report, CLI and another model's file: no run changes
    _append(root / "diffusion" / "ddrm.py", "\nUNUSED = 1\n")
    after = _fingerprints(root)
    assert {run for run in RUNS if after[run] != before[run]} == {"mf+ddrm"}
    _append(root / "backends" / "mf.py", "\nUNUSED = 1\n")
    changed = {run for run, fp in _fingerprints(root).items() if fp != after[run]}
    assert changed == {"mf", "mf+ddrm", "mf+tce"}  # LightGCN does not import MF
    mid = _fingerprints(root)
    _append(root / "denoise" / "tce.py", "\nUNUSED_TOO = 2\n")
    assert {run for run, fp in _fingerprints(root).items() if fp != mid[run]} == {"mf+tce"}  # only T-CE runs


def test_a_cached_backend_is_retrained_after_a_backend_change_but_not_after_a_report_change(tmp_path):
    src = _copy_package(tmp_path)
    data_dir = tmp_path / "data"
    from ddrm.data import write_prepared

    write_prepared(data_dir / "tiny", *make_interactions())
    env = {**os.environ, "PYTHONPATH": str(src), "DDRM_CACHE_DIR": str(tmp_path / "cache")}

    def train() -> bool:
        out = subprocess.run([sys.executable, "-c", TRAIN_ONCE, str(data_dir)], env=env, capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        payload = json.loads(out.stdout.strip().splitlines()[-1])
        assert payload["package"] == str(src / "ddrm")  # the modified copy is what ran
        return payload["from_cache"]

    assert train() is False
    assert train() is True
    _append(src / "ddrm" / "report" / "table.py", "\nUNUSED = 1\n")
    _append(src / "ddrm" / "cli.py", "\n# a new comment\n")
    assert train() is True  # report/CLI changes keep the cache
    _append(src / "ddrm" / "backends" / "mf.py", "\nUNUSED = 1\n")
    assert train() is False  # a backend change retrains
