"""The shipped DDRM search spaces hold the paper's whole grids (DESIGN §4, paper §4.1.3), or say why not.

Convention: a ``search_spaces/*_ddrm*.yaml`` may search less than the paper's grid for a key (fewer
values, a smaller range, or not searching the key at all, which fixes it at the base / default value)
only when the file has a comment line naming that key and giving a reason::

    # narrowed: ddrm.steps — <why>

(``—``, ``--``, ``-`` or ``:`` may separate key and reason; the reason must not be empty.) Searching *more*
than the grid is fine, e.g. λ (``ddrm.bpr_weight``) up to 0.9 for the reference code's reading.
The full-grid files ``*_ml1m_ddrm.yaml`` may not narrow anything.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from ddrm.config import config_from_dict
from ddrm.tuning.spec import load_search_spec

# DESIGN §4 "Paper grids (§4.1.3)", by config key
PAPER_GRID: dict[str, list[float]] = {
    "ddrm.steps": [10, 20, 30, 40, 50, 60],  # T
    "ddrm.inference_multiplier": [1.0, 1.25, 1.5],  # n
    "ddrm.noise_min": [1e-4, 1e-3],  # alpha_min
    "ddrm.noise_max": [1e-3, 1e-2],  # alpha_max
    "ddrm.noise_scale": [1e-4, 1e-3],  # s
    "ddrm.bpr_weight": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # lambda
    "ddrm.reweight_power": [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],  # gamma
}
NARROWED = re.compile(r"^\s*#\s*narrowed:\s*(?P<key>[\w.]+)\s*(?:—|--|-|:)\s*(?P<reason>\S.*)$")
DDRM_SPECS = sorted((REPO_ROOT / "search_spaces").glob("*_ddrm*.yaml"))
FULL_GRID_SPECS = sorted((REPO_ROOT / "search_spaces").glob("*_ml1m_ddrm.yaml"))


def missing_values(dist: dict, grid: list[float]) -> list[float]:
    """Grid values a space distribution cannot produce."""
    if dist["type"] == "choice":
        values = [v for v in dist["values"] if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return [g for g in grid if not any(math.isclose(g, v, rel_tol=1e-9, abs_tol=1e-12) for v in values)]
    low, high = dist["low"], dist["high"]
    inside = (lambda g: low <= g < high) if dist["type"] == "randint" else (lambda g: low <= g <= high)
    return [g for g in grid if not inside(g)]


def narrowing(path: Path) -> dict[str, list[float]]:
    spec = load_search_spec(path)
    config = config_from_dict(spec.base).to_flat_dict()  # a key not searched stays at this one value
    gaps = {key: missing_values(spec.space.get(key, {"type": "choice", "values": [config[key]]}), grid)
            for key, grid in PAPER_GRID.items()}
    return {key: gap for key, gap in gaps.items() if gap}


def declared(path: Path) -> dict[str, str]:
    """``{key: reason}`` of the file's ``# narrowed: <key> — <reason>`` lines."""
    found = (NARROWED.match(line) for line in path.read_text().splitlines())
    return {m["key"]: m["reason"].strip() for m in found if m}


def test_the_full_grid_specs_exist():
    names = {p.name for p in FULL_GRID_SPECS}
    assert {"mf_ml1m_ddrm.yaml", "lightgcn_ml1m_ddrm.yaml", "sgl_ml1m_ddrm.yaml"} <= names


@pytest.mark.parametrize("path", DDRM_SPECS, ids=[p.name for p in DDRM_SPECS])
def test_ddrm_spec_holds_the_paper_grid_or_says_why(path):
    gaps, reasons = narrowing(path), declared(path)
    undeclared = {key: gap for key, gap in gaps.items() if key not in reasons}
    assert not undeclared, (f"{path.name} lacks the paper's grid values {undeclared}; search them, or add a line "
                            f"'# narrowed: <key> — <reason>' per key")
    unknown = sorted(set(reasons) - set(PAPER_GRID))
    assert not unknown, f"{path.name}: '# narrowed:' names {unknown}, not paper-grid keys {sorted(PAPER_GRID)}"


@pytest.mark.parametrize("path", FULL_GRID_SPECS, ids=[p.name for p in FULL_GRID_SPECS])
def test_full_grid_specs_narrow_nothing(path):
    assert narrowing(path) == {} and declared(path) == {}


def test_the_check_catches_a_narrowed_grid(tmp_path):
    source = (REPO_ROOT / "search_spaces" / "mf_ml1m_ddrm.yaml").read_text()
    narrowed = source.replace("ddrm.noise_max: {type: choice, values: [1.0e-3, 1.0e-2]}",
                              "ddrm.noise_max: {type: choice, values: [1.0e-2]}")
    assert narrowed != source
    path = tmp_path / "x_ddrm.yaml"
    path.write_text(narrowed)
    assert narrowing(path) == {"ddrm.noise_max": [1e-3]} and declared(path) == {}
    path.write_text("# narrowed: ddrm.noise_max — a reason\n" + narrowed)
    assert declared(path) == {"ddrm.noise_max": "a reason"}
    dropped = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("ddrm.steps:"))
    path.write_text(dropped)
    assert narrowing(path)["ddrm.steps"] == [10, 30, 40, 50, 60]  # not searched: fixed at the default T = 20
