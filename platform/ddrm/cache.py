"""On-disk cache of trained backends, keyed by (dataset content, backend config, loop settings, seed).

Layout: ``<cache>/backends/<key>/state.pt`` + ``info.json``; written atomically, so a crashed or
concurrent writer never leaves a half-written entry. ``<cache>`` = ``$DDRM_CACHE_DIR`` or
``~/.cache/ddrm`` (point it at shared storage on a cluster).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "DDRM_CACHE_DIR"
CACHE_VERSION = 1


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "ddrm"


def cache_key(parts: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able dict."""
    blob = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def load_entry(key: str, root: str | os.PathLike | None = None) -> tuple[dict[str, torch.Tensor], dict] | None:
    """``(state_dict, info)`` or None when absent/unreadable."""
    folder = cache_root(root) / "backends" / key
    try:
        info = json.loads((folder / "info.json").read_text())
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError):
        return None
    return state, info


def has_entry(key: str, root: str | os.PathLike | None = None) -> bool:
    """Whether a complete entry exists (entries appear atomically, so both files or neither)."""
    folder = cache_root(root) / "backends" / key
    return (folder / "info.json").is_file() and (folder / "state.pt").is_file()


def save_entry(key: str, state: dict[str, torch.Tensor], info: dict, root: str | os.PathLike | None = None) -> Path:
    """Write atomically (temp folder + rename); an existing entry wins a race."""
    base = cache_root(root) / "backends"
    base.mkdir(parents=True, exist_ok=True)
    folder = base / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=base))
    try:
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp / "state.pt")
        (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
