"""The committed results are traceable: every report folder under docs/results holds its per-run runs.csv, and no
committed table, runs.csv or JSON carries the absolute path of the machine it was measured on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"

MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|Users)/|\.\./\.\./")


def _report_folders() -> list[str]:
    return sorted(str(table.parent.relative_to(RESULTS)) for table in RESULTS.rglob("table.md"))


@pytest.mark.skipif(not RESULTS.is_dir(), reason="docs/results is not in this checkout")
def test_every_report_folder_holds_its_runs_csv():
    folders = _report_folders()
    assert folders
    assert [folder for folder in folders if not (RESULTS / folder / "runs.csv").is_file()] == []


@pytest.mark.skipif(not RESULTS.is_dir(), reason="docs/results is not in this checkout")
def test_no_committed_table_runs_csv_or_json_names_a_machine_path():
    files = [path for suffix in ("*.csv", "*.json", "table.md") for path in RESULTS.rglob(suffix)]
    assert files
    leaking = [str(path.relative_to(RESULTS)) for path in files if MACHINE_PATH.search(path.read_text())]
    assert leaking == []


def test_the_machine_path_pattern_tells_absolute_from_relative_paths():
    assert MACHINE_PATH.search("sqlite:////work/main/mlruns.db")
    assert MACHINE_PATH.search("sqlite:///../../tmp/mainjob/repo/mlruns.db")
    assert MACHINE_PATH.search('"data_dir": "/root/ddrm/data"')
    assert not MACHINE_PATH.search("sqlite:///docs/results/fig4_losses_mf/mlruns.db")
    assert not MACHINE_PATH.search("ray_results/work/x and data/tmp/y")
