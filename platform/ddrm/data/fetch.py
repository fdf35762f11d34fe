"""Download MovieLens archives (checksum-verified, extracted atomically) and build named datasets on demand.

Raw files land in ``<data_dir>/raw/<dataset>/`` (``ratings.dat`` for ml-1m, ``u.data`` for ml-100k).
``$DDRM_FETCH_BASE_URL`` points at a mirror holding ``<dataset>.zip``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from ..errors import DataError
from .prepared import resolve_data_dir

BASE_URL_ENV = "DDRM_FETCH_BASE_URL"
DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
DATASETS: dict[str, dict[str, str]] = {
    "ml-1m": {"md5": "c4d9eecfca2ab87c1945afe126590906", "file": "ratings.dat"},
    "ml-100k": {"md5": "0e33842e24a9c977be4e0107933c0723", "file": "u.data"},
}
BUILDABLE_SETTINGS = {"noisy": "natural", "natural": "natural", "clean": "clean"}


def _check_dataset(dataset: str) -> dict[str, str]:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r} to fetch; expected one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def dataset_url(dataset: str) -> str:
    """``$DDRM_FETCH_BASE_URL/<dataset>.zip``, else the GroupLens URL."""
    _check_dataset(dataset)
    base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return f"{base.rstrip('/')}/{dataset}.zip"


def raw_path(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the fetched ratings file of ``dataset`` lives: ``<data_dir>/raw/<dataset>/<file>``."""
    return resolve_data_dir(data_dir) / "raw" / dataset / _check_dataset(dataset)["file"]


def _one_line(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split()) or type(exc).__name__


def _download(url: str, target: Path, timeout: float, algorithm: str) -> str:
    """Stream ``url`` into ``target``; returns its hex digest."""
    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise DataError(f"download of {url} failed: HTTP {exc.code} {_one_line(exc)}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DataError(f"download of {url} failed: {_one_line(exc)}") from None
    return digest.hexdigest()


def _extract(archive: Path, url: str, tmp: Path, wanted: str) -> Path:
    """Extract ``archive`` under ``tmp``; returns the folder that holds ``wanted``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.startswith(("/", "\\")) or ".." in Path(name).parts or re.match(r"^[A-Za-z]:", name):
                    raise DataError(f"archive from {url} has an unsafe member path {name!r}")
            zf.extractall(tmp)
    except zipfile.BadZipFile as exc:
        raise DataError(f"archive from {url} is not a valid zip ({exc})") from None
    found = sorted(tmp.rglob(wanted), key=lambda p: len(p.parts))
    if not found:
        raise DataError(f"archive from {url} holds no {wanted}")
    return found[0].parent


def fetch(dataset: str, data_dir: str | os.PathLike | None = None, url: str | None = None,
          sha256: str | None = None, md5: str | None = None, timeout: float = 30,
          overwrite: bool = False) -> Path:
    """Download ``dataset`` (ml-1m / ml-100k), verify its checksum (``sha256`` if given, else ``md5``, else the
    published md5), and extract it atomically to ``<data_dir>/raw/<dataset>/``. Returns the ratings file path.
    An existing extraction is kept unless ``overwrite``. On any failure nothing is left behind (DataError)."""
    info = _check_dataset(dataset)
    target = raw_path(dataset, data_dir)
    folder = target.parent
    if target.is_file() and not overwrite:
        return target
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise DataError(f"{folder} exists but holds no {info['file']}; remove it or pass --force to replace it")
    url = url or dataset_url(dataset)
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", md5 or info["md5"])
    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", expected):
        raise DataError(f"{algorithm} checksum {expected!r} is not a hex string")
    download_dir = Path(tempfile.mkdtemp(prefix=f"ddrm-{dataset}-download-"))
    tmp: Path | None = None
    try:
        archive = download_dir / f"{dataset}.zip"
        actual = _download(url, archive, timeout, algorithm)
        if actual != expected:
            raise DataError(f"download of {url} failed: {algorithm} mismatch (expected {expected}, got {actual})")
        # only now, with a verified archive, is anything created under the data dir
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}.fetch-", dir=folder.parent))
        extracted = _extract(archive, url, tmp / "x", info["file"])
        old = tmp / "old"
        if folder.exists() and overwrite:
            os.rename(folder, old)
        try:
            os.rename(extracted, folder)
        except OSError as exc:
            if old.exists():
                os.rename(old, folder)
            elif target.is_file():  # another process extracted it meanwhile
                return target
            raise DataError(f"cannot move the extracted {dataset} into {folder} ({_one_line(exc)})") from None
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def available(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Prepared dataset names under ``data_dir`` (folders holding train_list.npy)."""
    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "train_list.npy").is_file())


def ensure_dataset(name: str, data_dir: str | os.PathLike | None = None) -> None:
    """Make ``<data_dir>/<name>`` exist: nothing if it holds train_list.npy; else build ``<source>_<setting>``
    (source ml-1m / ml-100k, setting noisy = natural / natural / clean) from ``<data_dir>/raw/<source>/``,
    fetching the raw archive when it is missing, with the default ratios; or a preset of :mod:`.presets`
    (amazon-hin_noisy, yelp-hin_noisy, ...) from its raw file; else DataError."""
    from .presets import build_preset, parse_preset, preset_names
    from .raw import read_ratings
    from .split import prepare

    root = resolve_data_dir(data_dir)
    if (root / name / "train_list.npy").is_file():
        return
    if parse_preset(name) is not None:
        try:
            build_preset(name, root)
        except DataError:
            if (root / name / "train_list.npy").is_file():  # built concurrently by another process
                return
            raise
        return
    match = re.fullmatch(r"(ml-1m|ml-100k)_(noisy|natural|clean)", name)
    if not match:
        buildable = [f"{s}_{t}" for s in DATASETS for t in BUILDABLE_SETTINGS] + preset_names()
        raise DataError(
            f"dataset {name!r} not found in {root}; available: {available(root)}; buildable on demand: {buildable}"
        )
    source, setting = match.group(1), BUILDABLE_SETTINGS[match.group(2)]
    ratings = raw_path(source, root)
    if not ratings.is_file():
        try:
            ratings = fetch(source, root)
        except DataError as exc:
            raise DataError(f"dataset {name!r} not found in {root} and could not be built from GroupLens "
                            f"({exc}); pass --data-dir to a folder holding it, or run online") from None
    try:
        prepare(read_ratings(ratings), root / name, setting, source=str(ratings))
    except (DataError, OSError):
        if (root / name / "train_list.npy").is_file():  # built concurrently by another process
            return
        raise
