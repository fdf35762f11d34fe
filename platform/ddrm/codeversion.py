"""Which code computed a result: a fingerprint of the source a run's stage depends on, and the git commit.

A cached backend or a replayed MLflow run is only reused when the code that produced it computes the same
thing. :func:`code_fingerprint` hashes the *syntax* (``ast.dump``, docstrings dropped) of the loop's modules and
of every module the run's model, loss plug-in and (for the ``ddrm`` stage) DDRM actually import, followed
through the package's imports: comments, formatting and docstrings do not count, any change to what the stage
runs does, and adding or changing another model's file does not (so a new backend leaves every cached one
valid). The report, CLI, tracking and tuning code are part of no stage.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent

# What every trained stage runs (hashed as files; their imports are not followed: train.py imports every stage)
LOOP_SOURCES = ("data/prepared.py", "data/noise.py", "data/sampling.py", "train.py", "loop.py", "stages.py",
                "evaluation.py", "precision.py", "diagnostics.py", "metrics.py")
DDRM_SOURCE = "diffusion/ddrm.py"
STAGES = ("backend", "ddrm", "model")


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


def _module_file(root: Path, parts: list[str]) -> Path | None:
    """``root/a/b.py`` or ``root/a/b/__init__.py`` for ``parts = [a, b]``, or None."""
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported_files(path: Path, root: Path) -> set[Path]:
    """The package files ``path`` imports (relative imports and ``ddrm.*``; local imports included)."""
    inside = path.is_relative_to(root)  # a model defined outside the package: only its ``ddrm.*`` imports count
    package = path.parent.relative_to(root).parts if inside else ()
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level and inside:
                base = list(package[:len(package) - node.level + 1])
            elif node.module and node.module.split(".")[0] == "ddrm":
                base = []
                node = ast.ImportFrom(module=node.module.partition(".")[2] or None, names=node.names, level=0)
            else:
                continue  # outside the package (a relative import of a file outside it is its own business)
            parts = base + (node.module.split(".") if node.module else [])
            target = _module_file(root, parts)
            if target is not None:
                found.add(target)
            for alias in node.names:  # ``from . import cache``: a submodule
                sub = _module_file(root, parts + [alias.name])
                if sub is not None:
                    found.add(sub)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ddrm":
                    target = _module_file(root, alias.name.split(".")[1:])
                    if target is not None:
                        found.add(target)
    return found


def import_closure(start: list[Path], root: Path) -> list[Path]:
    """``start`` and every package file reachable from it through imports, sorted."""
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [p for p in _imported_files(path, root) if p not in seen]
    return sorted(seen)


def _source_of(cls: type, root: Path) -> Path:
    """The file defining ``cls``: under ``root`` by its module path for the package's own models, else the file
    of its module (a model registered from outside the package, e.g. a user's own file)."""
    if cls.__module__.split(".")[0] == "ddrm":
        path = _module_file(root, cls.__module__.split(".")[1:])
        if path is not None:
            return path
    return Path(inspect.getsourcefile(cls)).resolve()


@lru_cache(maxsize=None)
def fingerprint_of(stage: str, model: str, denoise: str = "none", root: str | None = None) -> str:
    """16-hex fingerprint of what ``stage`` (backend | ddrm | model) of a run of ``model`` (with loss plug-in
    ``denoise``) runs. ``root``: a package folder to fingerprint instead of this one (tests use a modified copy)."""
    from .registry import get_denoise, get_model

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {list(STAGES)}")
    base = Path(root) if root else PACKAGE_ROOT
    start = [_source_of(get_model(model), base)]
    if denoise != "none":
        start.append(_source_of(get_denoise(denoise), base))
    if stage == "ddrm":
        start.append(base / DDRM_SOURCE)
    files = dict.fromkeys([base / entry for entry in LOOP_SOURCES] + import_closure(start, base))
    digest = hashlib.sha1()
    for path in sorted(files):
        digest.update((path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name).encode())
        digest.update(source_digest(path).encode())
    return digest.hexdigest()[:16]


def code_fingerprint(config: Any, stage: str | None = None) -> str:
    """The fingerprint of ``stage`` of a run of ``config`` (default: its final stage, ``config.final_stage``)."""
    return fingerprint_of(stage or config.final_stage, config.model.name, config.denoise.name)


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


def run_tags(config: Any) -> dict[str, str]:
    """MLflow tags naming the code of a run of ``config`` (its final stage)."""
    return {"code_fingerprint": code_fingerprint(config), "git_commit": git_commit()}
