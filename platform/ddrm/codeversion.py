"""Which code computed a result: a fingerprint of the source a stage depends on, and the git commit.

A cached backend or a replayed MLflow run is only reused when the code that produced it computes the same
thing. ``stage_fingerprint(stage)`` hashes the *syntax* of the modules the stage runs (``ast.dump`` with
docstrings dropped), so comments, formatting and docstrings do not count, while any change to a backend, the
sampler, the loop, the evaluation or DDRM does. The report, CLI, tracking and tuning code are not part of any
stage: changing them never invalidates a cache.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent

# What each stage runs, relative to the package root (folders: every .py file in them).
_COMMON = ("data/prepared.py", "data/noise.py", "data/sampling.py", "train.py", "loop.py", "stages.py",
           "evaluation.py", "precision.py", "diagnostics.py", "metrics.py")
STAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "backend": _COMMON + ("backends", "denoise"),
    "ddrm": _COMMON + ("backends", "denoise", "diffusion"),
    "model": _COMMON + ("baselines", "diffusion", "backends/base.py", "backends/lightgcn.py"),
}
STAGE_SOURCES["all"] = tuple(dict.fromkeys(STAGE_SOURCES["backend"] + STAGE_SOURCES["ddrm"]
                                           + STAGE_SOURCES["model"]))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(path: Path) -> str:
    """sha1 of a Python file's syntax tree without docstrings (comments and layout never reach the AST)."""
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha1(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _files(root: Path, entries: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = root / entry
        if path.is_dir():
            files += sorted(path.rglob("*.py"))
        elif path.is_file():
            files.append(path)
    return files


@lru_cache(maxsize=None)
def stage_fingerprint(stage: str, root: str | None = None) -> str:
    """16-hex fingerprint of the source ``stage`` (backend | ddrm | model | all) depends on.

    ``root``: a package folder to fingerprint instead of this one (tests use a modified copy).
    """
    if stage not in STAGE_SOURCES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_SOURCES)}")
    base = Path(root) if root else PACKAGE_ROOT
    digest = hashlib.sha1()
    for path in _files(base, STAGE_SOURCES[stage]):
        digest.update(path.relative_to(base).as_posix().encode())
        digest.update(source_digest(path).encode())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def git_commit() -> str:
    """``<sha>`` of the checkout holding this package, ``<sha>-dirty`` with uncommitted changes, or ""."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                               cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}-dirty" if dirty else sha


def run_tags(stage: str) -> dict[str, str]:
    """MLflow tags naming the code of a run whose final stage is ``stage``."""
    return {"code_fingerprint": stage_fingerprint(stage), "git_commit": git_commit()}


def final_stage(config) -> str:
    """The stage whose output a run of ``config`` reports: model | ddrm | backend."""
    if config.model.name:
        return "model"
    return "ddrm" if config.ddrm.enabled else "backend"
