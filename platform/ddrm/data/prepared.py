"""Prepared-split folders: ``train_list.npy``, ``valid_list.npy``, ``test_list.npy`` (int64 ``(N, 2)``
``[user, item]``, 0-based contiguous ids), optional ``train_noise.npy`` (bool per train row),
``meta.json``, ``user_ids.npy`` / ``item_ids.npy`` (original id of each index).

How the split was made is read from meta.json (``split_kind``, ``split_seed``, ``split_order``, written by
:func:`ddrm.data.split.prepare`) and shown by :attr:`InteractionData.split_kind` / :attr:`~InteractionData.split_label`.

:func:`load_prepared` validates on load; :func:`write_prepared` writes atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import DataError

SPLITS = ("train", "valid", "test")
DATA_DIR_ENV = "DDRM_DATA_DIR"
UNSPECIFIED_SPLIT = "unspecified"  # split_kind of a folder whose meta.json does not say (e.g. the shipped ml-1m splits)


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit`` (``--data-dir`` / ``data.dir``), else ``$DDRM_DATA_DIR``, else ``./data``."""
    if explicit:
        return Path(explicit)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return Path("data")


@dataclass
class InteractionData:
    """A validated prepared split. Arrays are int64 ``(N, 2)`` ``[user, item]``."""

    name: str
    path: Path
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    train_noise: np.ndarray | None = None  # bool (N_train,): True = injected / false positive
    meta: dict[str, Any] = field(default_factory=dict)
    _csr_cache: dict[str, sp.csr_matrix] = field(default_factory=dict, repr=False)

    @property
    def split_kind(self) -> str:
        """``chronological`` / ``random`` as recorded in meta.json; folders prepared before ``split_kind`` was
        recorded (meta.json with a ``split_rule``) were all chronological; without either: ``unspecified``."""
        kind = self.meta.get("split_kind")
        if isinstance(kind, str) and kind:
            return kind
        return "chronological" if "split_rule" in self.meta else UNSPECIFIED_SPLIT

    @property
    def split_seed(self) -> int | None:
        """The seed of a random split (None otherwise)."""
        seed = self.meta.get("split_seed")
        return int(seed) if self.split_kind == "random" and isinstance(seed, int) else None

    @property
    def split_label(self) -> str:
        """A short label for reports, e.g. ``chronological (ties: item id)`` or ``random (seed 0)``."""
        if self.split_kind == "random":
            return f"random (seed {self.split_seed})" if self.split_seed is not None else "random"
        if self.split_kind == "chronological":
            return "chronological (ties: item id)"
        return self.split_kind

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def csr(self, name: str) -> sp.csr_matrix:
        """Binary user x item matrix of a split, ``(n_users, n_items)`` float32, sorted indices."""
        if name not in self._csr_cache:
            pairs = self.split(name)
            matrix = sp.csr_matrix(
                (np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])),
                shape=(self.n_users, self.n_items),
            )
            matrix.sum_duplicates()
            matrix.sort_indices()
            self._csr_cache[name] = matrix
        return self._csr_cache[name]

    def fingerprint(self) -> str:
        """Content hash of the three splits (and the noise flags): a cache key for trained backends."""
        digest = hashlib.sha1()
        for name in SPLITS:
            digest.update(np.ascontiguousarray(self.split(name), dtype=np.int64).tobytes())
        digest.update(f"{self.n_users}x{self.n_items}".encode())
        return digest.hexdigest()[:16]

    def stats(self) -> dict[str, Any]:
        """Table-1 style counts."""
        n_inter = len(self.train) + len(self.valid) + len(self.test)
        out: dict[str, Any] = {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "density": n_inter / max(1, self.n_users * self.n_items),
        }
        if self.train_noise is not None:
            out["train_noisy"] = int(self.train_noise.sum())
            out["train_noise_ratio"] = float(self.train_noise.mean()) if len(self.train_noise) else 0.0
        return out


def _load_pairs(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for corrupt files
        raise DataError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from None
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{path}: expected an integer array of shape (N, 2) [user, item], got dtype {array.dtype} "
            f"shape {array.shape}"
        )
    array = array.astype(np.int64, copy=False)
    if len(array) and array.min() < 0:
        raise DataError(f"{path}: ids must be >= 0, found {int(array.min())}")
    return array


def _pair_keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    return pairs[:, 0] * np.int64(n_items) + pairs[:, 1]


def _sorted_member(sorted_ref: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bool mask: which ``values`` occur in the sorted array ``sorted_ref``."""
    if len(sorted_ref) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ref, values), len(sorted_ref) - 1)
    return sorted_ref[pos] == values


def _check_ids(pairs: dict[str, np.ndarray], folder: Path, column: int, count: int, what: str,
               from_meta: bool) -> None:
    seen = np.zeros(count, dtype=bool)
    for split, array in pairs.items():
        if len(array) and array[:, column].max() >= count:
            raise DataError(
                f"{folder / f'{split}_list.npy'}: {what} id {int(array[:, column].max())} out of range "
                f"(n_{what}s = {count}{' from meta.json' if from_meta else ''})"
            )
        seen[array[:, column]] = True
    if not from_meta and not seen.all():
        missing = np.flatnonzero(~seen)
        raise DataError(
            f"{folder}: {what} ids are not contiguous: {len(missing)} id(s) in 0..{count - 1} occur in no split "
            f"(first: {missing[:5].tolist()}); re-index them or give n_{what}s in meta.json"
        )


def load_prepared(name: str, data_dir: str | os.PathLike | None = None) -> InteractionData:
    """Load and validate ``<data_dir>/<name>``; every failure is a :class:`DataError` naming the file."""
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise DataError(f"data dir {root} does not exist (set --data-dir or ${DATA_DIR_ENV})")
    folder = root / name
    if not (folder / "train_list.npy").is_file():
        available = sorted(p.name for p in root.iterdir() if (p / "train_list.npy").is_file())
        raise DataError(f"dataset {name!r} not found: no {folder / 'train_list.npy'}; available in {root}: {available}")
    pairs: dict[str, np.ndarray] = {}
    for split in SPLITS:
        path = folder / f"{split}_list.npy"
        if not path.is_file():
            raise DataError(f"{path}: missing (a prepared split needs train/valid/test_list.npy)")
        pairs[split] = _load_pairs(path)
    if len(pairs["train"]) == 0:
        raise DataError(f"{folder / 'train_list.npy'}: no training interactions")

    meta: dict[str, Any] = {}
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise DataError(f"{meta_path}: expected a JSON object")
    n_users = int(meta.get("n_users") or 1 + max(int(a[:, 0].max()) for a in pairs.values() if len(a)))
    n_items = int(meta.get("n_items") or 1 + max(int(a[:, 1].max()) for a in pairs.values() if len(a)))
    _check_ids(pairs, folder, 0, n_users, "user", "n_users" in meta)
    _check_ids(pairs, folder, 1, n_items, "item", "n_items" in meta)

    keys = {split: np.sort(_pair_keys(a, n_items)) for split, a in pairs.items()}
    for split, k in keys.items():
        n_dup = int((k[1:] == k[:-1]).sum())
        if n_dup:
            raise DataError(f"{folder / f'{split}_list.npy'}: {n_dup} duplicated (user, item) rows")
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        overlap = keys[b][_sorted_member(keys[a], keys[b])]
        if len(overlap):
            u, i = divmod(int(overlap[0]), n_items)
            raise DataError(
                f"{folder / f'{b}_list.npy'}: {len(overlap)} pair(s) also in {a}_list.npy (first: user {u}, item {i}); "
                f"splits must be disjoint"
            )
    has_train = np.zeros(n_users, dtype=bool)
    has_train[pairs["train"][:, 0]] = True
    for split in ("valid", "test"):
        evaluated = np.zeros(n_users, dtype=bool)
        evaluated[pairs[split][:, 0]] = True
        orphans = np.flatnonzero(evaluated & ~has_train)
        if len(orphans):
            raise DataError(
                f"{folder / f'{split}_list.npy'}: {len(orphans)} evaluated user(s) have no training history "
                f"(first: {orphans[:5].tolist()})"
            )

    train_noise = None
    noise_path = folder / "train_noise.npy"
    if noise_path.is_file():
        try:
            train_noise = np.load(noise_path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{noise_path}: not a readable .npy array ({type(exc).__name__}: {exc})") from None
        if train_noise.dtype != np.bool_ or train_noise.shape != (len(pairs["train"]),):
            raise DataError(
                f"{noise_path}: expected bool array of shape ({len(pairs['train'])},), got dtype {train_noise.dtype} "
                f"shape {train_noise.shape}"
            )
    return InteractionData(name=name, path=folder, n_users=n_users, n_items=n_items, train=pairs["train"],
                           valid=pairs["valid"], test=pairs["test"], train_noise=train_noise, meta=meta)


def write_prepared(
    folder: str | os.PathLike,
    train: np.ndarray,
    valid: np.ndarray,
    test: np.ndarray,
    *,
    train_noise: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
    extra: dict[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a prepared split atomically: into a temp folder beside ``folder``, then one rename.

    ``extra`` holds further arrays saved as ``<key>.npy`` (e.g. ``user_ids``, ``item_ids``).
    On any error nothing is left at ``folder``.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise DataError(f"{folder} already exists (pass overwrite / --force to replace it)")
    existing = next(p for p in (folder.parent.absolute(), *folder.parent.absolute().parents) if p.exists())
    if not existing.stat().st_mode & 0o222:  # a read-only folder (e.g. ../shared), even for root, who could write
        raise DataError(f"cannot write {folder}: {existing} is read-only; choose a writable --data-dir or --out")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # a unique hidden sibling made with mkdir, so the final folder gets the umask's permissions (mkdtemp: 0700)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for split, array in (("train", train), ("valid", valid), ("test", test)):
            np.save(tmp / f"{split}_list.npy", np.asarray(array, dtype=np.int64).reshape(-1, 2))
        if train_noise is not None:
            np.save(tmp / "train_noise.npy", np.asarray(train_noise, dtype=bool))
        for key, array in (extra or {}).items():
            np.save(tmp / f"{key}.npy", np.asarray(array), allow_pickle=False)
        if meta is not None:
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
