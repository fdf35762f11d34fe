"""Named datasets built from a raw file (DESIGN §4a): ``<source>_<setting>`` with source ``amazon-hin`` / ``yelp-hin``
and setting ``noisy`` (= ``natural``, like ml-1m_noisy) or ``clean``.

* ``amazon-hin`` — ``amazon-hin-raw/user_item.dat`` (format ``uirt``: user, item, rating, unix day timestamp):
  chronological 7:1:2 per user; same-day ratings are ordered by item id ascending (numeric), so the split does not
  depend on the order of the lines.
* ``yelp-hin`` — ``yelp-hin-raw/user_business.dat`` (format ``uir``: no timestamp): a seeded random 7:1:2 per user
  (``--seed``, default 0, recorded as ``split_seed`` in meta.json).

Both are built by :func:`ddrm.data.split.prepare` exactly as ml-1m / ml-100k are: natural noise = ratings < 4 kept
in train/valid and flagged (train_noise.npy / valid_noise.npy), test = ratings >= 4 only; cut points
``b1 = max(1, round(0.7 n))``, ``b2 = round(0.8 n)`` per user, so no user is dropped for having few ratings (a user
with 1 rating has it in train, one with 2 has train + valid) and no k-core is applied unless asked; users and
items are re-indexed to contiguous 0-based ids in numeric order of the raw ids (user_ids.npy / item_ids.npy).

The raw file is taken from ``raw`` (``--raw``), else the first that exists of ``<data_dir>/<folder>/<file>``,
``<data_dir>/raw/<folder>/<file>``, ``$DDRM_SHARED_DATASETS/<folder>/<file>``, ``./../shared/datasets/<folder>/<file>``
and ``<repo>/../shared/datasets/<folder>/<file>``; its md5 must be the published one (SOURCE.txt) so that a name
always means the same data (build other files with ``ddrm data prepare RAW_PATH --name ...``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError
from .prepared import resolve_data_dir

SHARED_ENV = "DDRM_SHARED_DATASETS"
SETTING_SUFFIXES = {"noisy": "natural", "natural": "natural", "clean": "clean"}


@dataclass(frozen=True)
class Preset:
    folder: str  # raw folder name under a datasets root
    file: str
    fmt: str
    split: str
    md5: str
    description: str


PRESETS: dict[str, Preset] = {
    "amazon-hin": Preset("amazon-hin-raw", "user_item.dat", "uirt", "chronological",
                         "2e916514194d6f1dc729a4c44e746a67",
                         "Amazon 2014 HIN subset, day timestamps: chronological, same-day ties by item id"),
    "yelp-hin": Preset("yelp-hin-raw", "user_business.dat", "uir", "random",
                       "f36acf0016328d9847382595d85f7119",
                       "Yelp HIN subset, no timestamps: seeded random split per user"),
}


def preset_names() -> list[str]:
    return [f"{source}_{suffix}" for source in PRESETS for suffix in ("noisy", "clean")]


def parse_preset(name: str) -> tuple[str, Preset, str] | None:
    """``amazon-hin_noisy`` → (source, preset, setting ``natural``); None when ``name`` is not a preset name."""
    match = re.fullmatch(rf"({'|'.join(map(re.escape, PRESETS))})_({'|'.join(SETTING_SUFFIXES)})", str(name))
    if not match:
        return None
    return match.group(1), PRESETS[match.group(1)], SETTING_SUFFIXES[match.group(2)]


def _roots(data_dir: Path) -> list[Path]:
    roots = [data_dir, data_dir / "raw"]
    if os.environ.get(SHARED_ENV):
        roots.append(Path(os.environ[SHARED_ENV]))
    roots.append(Path("..") / "shared" / "datasets")
    roots.append(Path(__file__).resolve().parents[3].parent / "shared" / "datasets")
    return roots


def find_raw(name: str, data_dir: str | os.PathLike | None = None, raw: str | os.PathLike | None = None) -> Path:
    """The raw file of preset ``name`` (module docstring); DataError listing where it looked."""
    parsed = parse_preset(name)
    if parsed is None:
        raise ConfigError(f"unknown dataset name {name!r}; expected one of {', '.join(preset_names())}")
    preset = parsed[1]
    if raw is not None:
        path = Path(raw)
        if path.is_dir():
            path = path / preset.file
        if not path.is_file():
            raise DataError(f"{path}: no such raw file for {name} (expected {preset.folder}/{preset.file})")
        return path
    looked = [root / preset.folder / preset.file for root in _roots(resolve_data_dir(data_dir))]
    for path in looked:
        if path.is_file():
            return path
    raise DataError(f"raw file of {name} not found; looked at {', '.join(map(str, dict.fromkeys(looked)))}; "
                    f"pass --raw PATH to {preset.file}")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_preset(name: str, data_dir: str | os.PathLike | None = None, *, raw: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, ratios: Sequence[float] | None = None, seed: int = 0,
                 threshold: float = 4.0, kcore: int | None = None, overwrite: bool = False) -> Path:
    """Build preset ``name`` into ``out`` (default ``<data_dir>/<name>``, data_dir as :func:`resolve_data_dir`),
    atomically; returns the folder. The prepared meta.json also records ``dataset``, ``raw_format`` and
    ``source_md5``."""
    from .raw import kcore as kcore_filter
    from .raw import read_ratings
    from .split import DEFAULT_RATIOS, prepare

    parsed = parse_preset(name)
    if parsed is None:
        raise ConfigError(f"unknown dataset name {name!r}; expected one of {', '.join(preset_names())}")
    _, preset, setting = parsed
    target = Path(out) if out is not None else resolve_data_dir(data_dir) / name
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists (pass overwrite / --force to replace it)")
    path = find_raw(name, data_dir, raw)
    md5 = _md5(path)
    if md5 != preset.md5:
        raise DataError(f"{path}: md5 {md5} is not the published {preset.md5} of {preset.folder}/{preset.file}; "
                        f"to split another file use ddrm data prepare {path} --name NAME --setting {setting}")
    df = read_ratings(path, fmt=preset.fmt)
    if kcore:
        df = kcore_filter(df, kcore)
    try:
        return prepare(df, target, setting, ratios=ratios or DEFAULT_RATIOS, positive_threshold=threshold,
                       seed=seed, overwrite=overwrite, source=str(path), split=preset.split,
                       extra_meta={"dataset": name, "raw_format": preset.fmt, "source_md5": md5})
    except OSError as exc:  # e.g. a read-only --data-dir
        raise DataError(f"cannot write {target} ({exc.strerror or exc}); pass a writable --data-dir or --out "
                        f"(../shared is read-only)") from None
