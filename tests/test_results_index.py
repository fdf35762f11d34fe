"""docs/results is navigable: its index (docs/results/README.md) names everything there, and every
``docs/results/...`` path the repository mentions exists.

Layout (the index explains it): study report folders directly under docs/results (they stay put: their
runs.csv names the tracking store by its relative path), ``benchmarks/`` (bench script JSONs), ``campaigns/`` (one folder per campaign and dataset) and ``runs/``
(seed tables, single runs, logs). Nothing else may sit directly in docs/results.

What counts as *named* by the index: a relative link target in it (``[x](benchmarks/x.json)``, resolved from
docs/results) or a ``docs/results/...`` path written out in it. A report folder is named as a whole.

How a referenced ``docs/results/...`` path resolves (the rule of :func:`unresolved_references`):

- a trailing ``.`` (end of a sentence) is dropped; a path written with a trailing ``/`` must be a folder;
- ``{a,b}`` expands to one path per alternative, each checked;
- a placeholder (``<name>``) or a shell variable (``$p``) is not a path: skipped;
- a glob (``*``, ``**``) must match at least one existing path;
- a tracking store (a name ending in ``.db``) is never committed (.gitignore): its folder must exist instead;
- anything else must exist (file or folder).

Files scanned: README.md, docs/*.md, docs/results/README.md (whose relative links must resolve too), bench/*,
tests/*.py, ablations/*.yaml, search_spaces/*.yaml, platform/**/*.py. Ignore-pattern files (.rayignore,
.gitignore) are not scanned: their patterns name what may appear later.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO_ROOT

RESULTS_REL = "docs/results"
GROUPS = ("benchmarks", "runs", "campaigns")  # the group folders; everything else directly in docs/results is a report folder
INDEX_NAME = "README.md"

# docs/results followed by path components; a component may hold {a,b} alternatives (commas only inside braces)
_COMPONENT = r"(?:[\w.\-*<>$]|\{[\w.\-,]*\})+"
PATH = re.compile(r"(?<![\w\-])docs/results(?:/" + _COMPONENT + r")*/?")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _expand_braces(path: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [expanded for choice in match.group(1).split(",")
            for expanded in _expand_braces(path[:match.start()] + choice + path[match.end():])]


def referenced_paths(text: str) -> list[str]:
    """Every ``docs/results...`` path written in ``text``, as written (a sentence's final ``.`` dropped)."""
    return [found.rstrip(".") for found in PATH.findall(text)]


def resolves(repo: Path, written: str) -> bool:
    """Whether a written ``docs/results/...`` path exists under ``repo`` (the rule in the module docstring)."""
    must_be_folder = written.endswith("/")
    for path in _expand_braces(written.rstrip("/")):
        if "<" in path or "$" in path:
            continue
        if "*" in path:
            if not any(repo.glob(path)):
                return False
            continue
        target = repo / path
        if target.name.endswith(".db"):
            target = target.parent
        if not (target.is_dir() if must_be_folder else target.exists()):
            return False
    return True


def unresolved_references(repo: Path, files: list[Path]) -> list[str]:
    """``file: path`` for every ``docs/results/...`` path in ``files`` that does not resolve."""
    return [f"{file.relative_to(repo)}: {path}" for file in files for path in referenced_paths(file.read_text())
            if not resolves(repo, path)]


def _index_links(index: Path) -> list[str]:
    """The index's relative link targets (fragments and external links left out)."""
    targets = (target.split("#", 1)[0] for target in LINK.findall(index.read_text()))
    return [target for target in targets if target and "://" not in target and not target.startswith("mailto:")]


def unresolved_index_links(index: Path) -> list[str]:
    return [target for target in _index_links(index) if not (index.parent / target).exists()]


def named_in_index(results: Path, index: Path) -> set[str]:
    """Paths relative to ``results`` that the index names (link targets and written-out docs/results paths)."""
    named = set()
    for target in _index_links(index):
        resolved = (index.parent / target).resolve()
        if resolved == results.resolve() or results.resolve() in resolved.parents:
            named.add(resolved.relative_to(results.resolve()).as_posix())
    for written in referenced_paths(index.read_text()):
        for path in _expand_braces(written.rstrip("/")):
            if path.startswith(RESULTS_REL + "/"):
                named.add(path[len(RESULTS_REL) + 1:])
    return named


def entries_to_name(results: Path) -> list[str]:
    """Every file and folder directly in ``results`` and directly in each group folder (the index excepted)."""
    entries = [p for p in results.iterdir() if p.name != INDEX_NAME]
    for group in GROUPS:
        if (results / group).is_dir():
            entries += list((results / group).iterdir())
    return sorted(p.relative_to(results).as_posix() for p in entries)


def unnamed_entries(results: Path, index: Path) -> list[str]:
    named = named_in_index(results, index)
    return [entry for entry in entries_to_name(results) if entry not in named]


def misplaced_entries(results: Path) -> list[str]:
    """What sits directly in ``results`` but is neither the index, a group folder nor a report folder (one that
    holds a ``table.md`` somewhere below): a loose JSON or log folder belongs in a group folder."""
    return sorted(p.name for p in results.iterdir()
                  if p.name != INDEX_NAME and p.name not in GROUPS and not (p.is_dir() and any(p.rglob("table.md"))))


def scanned_files(repo: Path) -> list[Path]:
    patterns = ["README.md", "docs/*.md", f"{RESULTS_REL}/{INDEX_NAME}", "bench/*", "tests/*.py",
                "ablations/*.yaml", "search_spaces/*.yaml", "platform/**/*.py"]
    return sorted({path for pattern in patterns for path in repo.glob(pattern) if path.is_file()})


# ------------------------------------------------------------------------------------------- the repository
RESULTS = REPO_ROOT / RESULTS_REL
INDEX = RESULTS / INDEX_NAME
needs_results = pytest.mark.skipif(not RESULTS.is_dir(), reason="docs/results is not in this checkout")


@needs_results
def test_the_index_exists_and_the_group_folders_too():
    assert INDEX.is_file()
    assert all((RESULTS / group).is_dir() for group in GROUPS)


@needs_results
def test_the_index_names_every_file_and_folder_in_docs_results_and_its_group_folders():
    assert len(entries_to_name(RESULTS)) > 40
    assert unnamed_entries(RESULTS, INDEX) == []


@needs_results
def test_docs_results_holds_only_report_folders_and_the_group_folders():
    assert misplaced_entries(RESULTS) == []


@needs_results
def test_every_docs_results_path_the_repository_mentions_exists():
    files = scanned_files(REPO_ROOT)
    assert {REPO_ROOT / "README.md", REPO_ROOT / "docs" / "RESULTS.md", INDEX} <= set(files)
    assert sum(len(referenced_paths(f.read_text())) for f in files) > 100  # the scan does see the references
    assert unresolved_references(REPO_ROOT, files) == []


@needs_results
def test_every_relative_link_of_the_index_resolves():
    assert len(_index_links(INDEX)) > 40
    assert unresolved_index_links(INDEX) == []


# ------------------------------------------------------------------------- the rules, on a repository of their own
R = "docs/" + "results"  # written split: this file is scanned too, and these paths exist only in tmp_path


def _fake_repo(tmp_path: Path) -> Path:
    results = tmp_path / RESULTS_REL
    (results / "fig9" / "plots").mkdir(parents=True)
    (results / "fig9" / "table.md").write_text("| x |")
    (results / "benchmarks").mkdir()
    (results / "benchmarks" / "speed.json").write_text("{}")
    (results / "runs" / "logs").mkdir(parents=True)
    (results / "runs" / "mf_a.json").write_text("{}")
    (results / "runs" / "mf_b.json").write_text("{}")
    (results / INDEX_NAME).write_text(
        "[fig9/](fig9/), [benchmarks](benchmarks/), [runs](runs/), [speed](benchmarks/speed.json),\n"
        f"[logs](runs/logs/), [the results](../RESULTS.md#top), `{R}/runs/mf_{{a,b}}.json`.\n")
    (tmp_path / "docs" / "RESULTS.md").write_text("# Results\n")
    return tmp_path


def test_a_fully_indexed_layout_passes(tmp_path):
    repo = _fake_repo(tmp_path)
    results, index = repo / RESULTS_REL, repo / RESULTS_REL / INDEX_NAME
    assert unnamed_entries(results, index) == []
    assert misplaced_entries(results) == []
    assert unresolved_index_links(index) == []
    assert unresolved_references(repo, scanned_files(repo)) == []


def test_a_file_the_index_does_not_name_fails(tmp_path):
    repo = _fake_repo(tmp_path)
    results = repo / RESULTS_REL
    (results / "benchmarks" / "new.json").write_text("{}")
    (results / "stray.json").write_text("{}")
    assert unnamed_entries(results, results / INDEX_NAME) == ["benchmarks/new.json", "stray.json"]
    assert misplaced_entries(results) == ["stray.json"]  # a loose file: it belongs in a group folder
    (results / "old_logs").mkdir()
    assert misplaced_entries(results) == ["old_logs", "stray.json"]  # a folder without a report is loose too


def test_a_reference_to_a_moved_or_missing_file_fails(tmp_path):
    repo = _fake_repo(tmp_path)
    doc = repo / "docs" / "RESULTS.md"
    doc.write_text(f"JSON `{R}/speed.json` (moved to benchmarks/); the runs `{R}/runs/mf_{{a,c}}.json`.\n")
    assert unresolved_references(repo, [doc]) == [
        f"docs/RESULTS.md: {R}/speed.json", f"docs/RESULTS.md: {R}/runs/mf_{{a,c}}.json"]
    (repo / RESULTS_REL / INDEX_NAME).write_text("[gone](benchmarks/gone.json)\n")
    assert unresolved_index_links(repo / RESULTS_REL / INDEX_NAME) == ["benchmarks/gone.json"]


@pytest.mark.parametrize("written, ok", [
    (f"{R}/fig9.", True),                      # a sentence's final dot
    (f"{R}/fig9/", True),
    (f"{R}/benchmarks/speed.json/", False),    # written as a folder, is a file
    (f"{R}/fig9/mlruns.db", True),             # a store is not committed; its folder exists
    (f"{R}/gone/mlruns.db", False),
    (f"{R}/<study>/runs.csv", True),           # a placeholder
    (f"{R}/benchmarks/search_cost_$p.json", True),  # a shell variable
    (f"{R}/runs/mf_*.json", True),             # a glob that matches
    (f"{R}/runs/sgl_*.json", False),           # a glob that matches nothing
    (f"{R}/runs/mf_{{a,b}}.json", True),
    (f"{R}/runs/mf_{{a,z}}.json", False),
])
def test_the_resolution_rule(tmp_path, written, ok):
    repo = _fake_repo(tmp_path)
    assert referenced_paths(f"see `{written}`") == [written.rstrip(".")]
    assert resolves(repo, written.rstrip(".")) is ok
