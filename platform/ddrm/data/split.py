"""Raw ratings → a prepared split folder (see :mod:`ddrm.data.prepared`), plus Table-1 statistics.

Order (per user), the ``split`` argument:

* ``chronological`` — the user's rows sorted by ``(timestamp, item id)``: ratings with the same timestamp (e.g. the
  same day in the Amazon HIN file) are ordered by item id ascending, in numeric order when all ids are digit strings,
  so the order is total and does not depend on the order of the input lines.
* ``random`` — a seeded random order: the rows are put in ``(user id, item id)`` order (the same for any order of the
  input lines), ``numpy.random.default_rng(seed).permutation(N)`` gives each row its rank, and each user's rows are
  sorted by rank. Deterministic for a given seed and input; for data without timestamps (format ``uir``, Yelp HIN).
* ``auto`` (default) — ``chronological``, or ``random`` when the frame has no timestamps
  (``df.attrs["has_timestamp"] is False``); ``chronological`` on such a frame is refused.

Meta.json records ``split_kind`` (chronological / random), ``split_seed`` (random only, else null) and
``split_order`` (the rule in words); :attr:`InteractionData.split_kind` exposes it.

Timeline cut: with ``n`` ordered rows of a user and ratios ``(r_train, r_valid, r_test)`` the cut points are
``b1 = max(1, round_half_up(n * r_train))`` and ``b2 = max(b1, round_half_up(n * (r_train + r_valid)))``; rows
``[0, b1)`` go to train, ``[b1, b2)`` to valid, ``[b2, n)`` to test. So every user with a row has a training
row, and a user's train rows are never later than their valid rows, which are never later than their test rows.

Settings (``threshold`` = ``positive_threshold``, a rating >= threshold is a true positive):

* ``clean``   — the timeline is the user's positives only; ratings < threshold are dropped everywhere.
* ``natural`` — the timeline is the user's full history; the cut is made on it, then negatives are removed from
  test only. Negatives in train are flagged True in ``train_noise.npy`` (and in ``valid_noise.npy`` for valid).
* ``random``  — the ``clean`` split, then per user ``round(noise_ratio * clean train count)`` sampled unobserved
  items are added to train and ``round(noise_ratio * clean valid count)`` to valid (flagged True). Unobserved =
  not among any of the user's raw rows (any rating); candidates are the items of the clean split; train and valid
  injections are distinct; users with too few unobserved items get as many as exist. Seeded by ``seed``.

Test holds true positives only. Users left without a training row are dropped; users and items are re-indexed to
0-based contiguous ids (numeric-looking raw ids in numeric order) and ``user_ids.npy`` / ``item_ids.npy`` hold the
raw id string of each index (numpy unicode arrays).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from .prepared import InteractionData, write_prepared
from .raw import COLUMNS, HAS_TIMESTAMP, deduplicate

SETTINGS = ("clean", "natural", "random")
SPLIT_KINDS = ("auto", "chronological", "random")
SPLIT_ORDER = {
    "chronological": "per user by (timestamp, item id); same-timestamp ratings ordered by item id ascending "
                     "(numeric ids in numeric order)",
    "random": "per user by numpy default_rng(split_seed).permutation over all rows in (user id, item id) order",
}
SETTING_ALIASES = {"noisy": "natural"}
DEFAULT_RATIOS = (0.7, 0.1, 0.2)
_EPS = 1e-9


# --------------------------------------------------------------------------------------------- arguments
def check_arguments(setting: str, ratios: Sequence[float], noise_ratio: float | None,
                    positive_threshold: float) -> tuple[str, tuple[float, float, float]]:
    """Validate prepare's arguments; returns the canonical setting and ratios (ConfigError otherwise)."""
    setting = SETTING_ALIASES.get(setting, setting)
    if setting not in SETTINGS:
        raise ConfigError(f"unknown setting {setting!r}; expected one of {', '.join(SETTINGS)} (noisy = natural)")
    try:
        ratios = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise ConfigError(f"ratios must be three numbers train,valid,test, got {ratios!r}") from None
    if len(ratios) != 3 or not all(math.isfinite(r) and r > 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ConfigError(f"ratios must be three positive numbers train,valid,test summing to 1, got {list(ratios)}")
    if setting == "random":
        if noise_ratio is None:
            raise ConfigError("setting 'random' needs noise_ratio (--noise-ratio), a number in [0, 1]")
        if isinstance(noise_ratio, bool) or not isinstance(noise_ratio, (int, float)) or not 0 <= noise_ratio <= 1:
            raise ConfigError(f"noise_ratio must be a number in [0, 1], got {noise_ratio!r}")
    elif noise_ratio is not None:
        raise ConfigError(f"noise_ratio is only allowed with setting 'random', not {setting!r}")
    if not isinstance(positive_threshold, (int, float)) or not math.isfinite(positive_threshold):
        raise ConfigError(f"positive_threshold must be a finite number, got {positive_threshold!r}")
    return setting, ratios  # type: ignore[return-value]


def _check_frame(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"ratings frame lacks column(s) {missing}; expected {list(COLUMNS)} (use read_ratings)")
    if df.empty:
        raise DataError("no ratings to prepare (empty input, or everything was filtered out)")
    out = df.loc[:, list(COLUMNS)]
    for column in ("rating", "timestamp"):
        if not pd.api.types.is_numeric_dtype(out[column]):
            raise DataError(f"ratings frame column {column!r} must be numeric, got dtype {out[column].dtype}")
    return deduplicate(out.astype({"user": str, "item": str}))  # keeps the latest, as read_ratings does


# --------------------------------------------------------------------------------------------- encoding
def _natural_order(ids: np.ndarray) -> np.ndarray:
    """Positions that sort distinct ids numerically when all are digit strings, else lexicographically."""
    if len(ids) and np.char.isdigit(ids).all():
        return np.lexsort((ids, np.char.str_len(ids)))
    return np.argsort(ids, kind="stable")


def encode(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Raw ids → (codes int64 ``(N,)``, ids unicode ``(K,)``) with ``ids[codes] == values`` and codes following
    the natural order of the ids (so sorting by code sorts by id)."""
    codes, uniques = pd.factorize(values, sort=False)
    uniques = np.asarray(uniques, dtype=str)
    order = _natural_order(uniques)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank[codes], uniques[order]


# --------------------------------------------------------------------------------------------- splitting
def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5 + _EPS).astype(np.int64)


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based; faster than ``np.unique``'s hash path for int64)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_set)`` for a sorted distinct ``sorted_set``, bool ``(N,)``."""
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[pos] == values


def _group_rank(sorted_groups: np.ndarray) -> np.ndarray:
    """Rank of each element within its run of equal values (input grouped), int64 ``(N,)``."""
    if len(sorted_groups) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(sorted_groups)])
    return np.arange(len(sorted_groups)) - np.repeat(starts, lengths)


def random_ranks(user: np.ndarray, item: np.ndarray, seed: int) -> np.ndarray:
    """A seeded random rank per row (int64 ``(N,)``, a permutation of 0..N-1) assigned in ``(user, item)`` order, so
    the ranks of a (user, item) pair do not depend on the row order of the input (codes: see :func:`encode`)."""
    canonical = np.lexsort((item, user))
    ranks = np.empty(len(user), dtype=np.int64)
    ranks[canonical] = np.random.default_rng(seed).permutation(len(user))
    return ranks


def resolve_split(split: str, has_timestamp: bool, source: str | None = None) -> str:
    """``auto`` → chronological when the frame has timestamps, else random (ConfigError / DataError otherwise)."""
    if split not in SPLIT_KINDS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_KINDS)}")
    if split == "auto":
        return "chronological" if has_timestamp else "random"
    if split == "chronological" and not has_timestamp:
        raise DataError(f"{source or 'the ratings'}: no timestamps (format uir), so a chronological split is "
                        f"impossible; use split random (--split random, seeded by --seed)")
    return split


def cut_timelines(user: np.ndarray, timestamp: np.ndarray, item: np.ndarray,
                  ratios: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Chronological per-user cut (module docstring). Inputs int64 ``(N,)`` codes / seconds; returns ``order``
    (row indices sorted by user, timestamp, item; ``(N,)``) and ``part`` of each sorted row (0 train, 1 valid,
    2 test; int8 ``(N,)``)."""
    order = np.lexsort((item, timestamp, user))
    sorted_user = user[order]
    pos = _group_rank(sorted_user)
    n = np.bincount(sorted_user)[sorted_user] if len(order) else np.zeros(0, dtype=np.int64)
    b1 = np.minimum(n, np.maximum(1, _round_half_up(n * ratios[0])))
    b2 = np.minimum(n, np.maximum(b1, _round_half_up(n * (ratios[0] + ratios[1]))))
    part = np.where(pos < b1, 0, np.where(pos < b2, 1, 2)).astype(np.int8)
    return order, part


def sample_unobserved(rng: np.random.Generator, users: np.ndarray, need: np.ndarray, pool: np.ndarray,
                      observed: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``need[j]`` distinct items of ``pool`` per user ``users[j]`` whose key ``user * n_codes + item`` is not in
    ``observed`` (int64). ``users`` sorted unique int64 ``(U,)``; returns (user, item) int64 ``(M,)`` grouped by user
    in draw order (fewer than asked where too few items are free). Bulk rejection sampling; users it cannot finish
    are drawn exactly."""
    observed = _unique(observed)
    taken = np.zeros(0, dtype=np.int64)
    remaining = need.astype(np.int64).copy()
    out_keys: list[np.ndarray] = []
    for _ in range(12):
        active = np.flatnonzero(remaining > 0)
        if len(active) == 0 or len(pool) == 0:
            break
        draws = np.ceil(remaining[active] * 1.5).astype(np.int64) + 4
        user_rep = np.repeat(users[active], draws)
        keys = user_rep * n_codes + pool[rng.integers(0, len(pool), size=int(draws.sum()))]
        keys = keys[~_member(keys, observed) & ~_member(keys, taken)]
        by_key = np.argsort(keys, kind="stable")
        first = by_key[np.r_[True, keys[by_key][1:] != keys[by_key][:-1]]] if len(keys) else by_key
        keys = keys[np.sort(first)]  # distinct, still grouped by user in draw order
        owner = np.searchsorted(users, keys // n_codes)
        keys = keys[_group_rank(owner) < remaining[owner]]
        np.subtract.at(remaining, np.searchsorted(users, keys // n_codes), 1)
        out_keys.append(keys)
        taken = np.sort(np.concatenate([taken, keys]))
    for j in np.flatnonzero(remaining > 0):  # dense users only: exact draw from what is left
        lo = users[j] * n_codes
        seen = np.concatenate([observed[(observed >= lo) & (observed < lo + n_codes)],
                               taken[(taken >= lo) & (taken < lo + n_codes)]])
        free = np.setdiff1d(pool, seen - lo)
        pick = rng.choice(free, size=min(len(free), int(remaining[j])), replace=False)
        out_keys.append(lo + pick.astype(np.int64))
    keys = np.concatenate(out_keys) if out_keys else np.zeros(0, dtype=np.int64)
    keys = keys[np.argsort(keys // n_codes, kind="stable")]
    return keys // n_codes, keys % n_codes


def _inject_random(user: np.ndarray, item: np.ndarray, rows: dict[str, np.ndarray], n_codes: int,
                   noise_ratio: float, seed: int) -> dict[str, np.ndarray]:
    """Rows (user, item, part, order, noise=True) of unobserved pairs to add to train (part 0) / valid (part 1).
    ``user``/``item``: all raw rows (codes); ``rows``: the clean split."""
    n_users = int(max(user.max(), rows["user"].max())) + 1
    n_train = np.bincount(rows["user"][rows["part"] == 0], minlength=n_users)
    n_valid = np.bincount(rows["user"][rows["part"] == 1], minlength=n_users)
    users = np.flatnonzero(n_train > 0).astype(np.int64)
    k_train = _round_half_up(noise_ratio * n_train[users])
    k_valid = _round_half_up(noise_ratio * n_valid[users])
    pool = _unique(rows["item"])
    u, i = sample_unobserved(np.random.default_rng(seed), users, k_train + k_valid, pool,
                             user * n_codes + item, n_codes)
    owner = np.searchsorted(users, u)
    return {
        "user": u, "item": i,
        "part": np.where(_group_rank(u) < k_train[owner], 0, 1).astype(np.int8),
        "order": len(rows["user"]) + np.arange(len(u), dtype=np.int64),
        "noise": np.ones(len(u), dtype=bool),
    }


# --------------------------------------------------------------------------------------------- prepare
def prepare(
    df: pd.DataFrame,
    out_folder: str | os.PathLike,
    setting: str,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    noise_ratio: float | None = None,
    positive_threshold: float = 4.0,
    seed: int = 0,
    overwrite: bool = False,
    source: str | None = None,
    split: str = "auto",
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Split ``df`` (columns user, item, rating, timestamp) into a prepared folder; see the module docstring for
    the exact rules. Writes train/valid/test_list.npy (int64 ``(N, 2)``), train_noise.npy (bool ``(N_train,)``),
    valid_noise.npy (bool ``(N_valid,)``), user_ids.npy / item_ids.npy (unicode), meta.json — atomically.
    ``split``: auto / chronological / random (seeded by ``seed``, which also seeds the random setting);
    ``extra_meta``: further meta.json keys (e.g. the dataset name), which may not replace the computed ones."""
    setting, ratios = check_arguments(setting, ratios, noise_ratio, positive_threshold)
    split = resolve_split(split, bool(getattr(df, "attrs", {}).get(HAS_TIMESTAMP, True)), source)
    out_folder = Path(out_folder)
    if out_folder.exists() and not overwrite:
        raise DataError(f"{out_folder} already exists (pass overwrite / --force to replace it)")
    df = _check_frame(df)
    user, raw_user_ids = encode(df["user"])
    item, raw_item_ids = encode(df["item"])
    timestamp = df["timestamp"].to_numpy(dtype=np.int64)
    positive = df["rating"].to_numpy(dtype=np.float64) >= positive_threshold
    base = np.arange(len(df)) if setting == "natural" else np.flatnonzero(positive)
    if len(base) == 0:
        raise DataError(f"no rating >= {positive_threshold} in the input: nothing to split")
    when = timestamp[base] if split == "chronological" else random_ranks(user[base], item[base], seed)
    order, part = cut_timelines(user[base], when, item[base], ratios)
    picked = base[order]
    noise = ~positive[picked]
    keep = ~(noise & (part == 2))  # test holds true positives only
    test_negatives = int((~keep).sum())
    rows = {"user": user[picked][keep], "item": item[picked][keep], "part": part[keep],
            "order": np.flatnonzero(keep).astype(np.int64), "noise": noise[keep]}
    if setting == "random":
        extra = _inject_random(user, item, rows, len(raw_item_ids), float(noise_ratio), seed)
        rows = {key: np.concatenate([rows[key], extra[key]]) for key in rows}

    has_train = np.zeros(len(raw_user_ids), dtype=bool)
    has_train[rows["user"][rows["part"] == 0]] = True
    keep = has_train[rows["user"]]
    dropped_users = int(len(_unique(rows["user"][~keep])))
    rows = {key: value[keep] for key, value in rows.items()}
    used_users, used_items = _unique(rows["user"]), _unique(rows["item"])
    uid, iid = np.searchsorted(used_users, rows["user"]), np.searchsorted(used_items, rows["item"])
    sort = np.lexsort((rows["order"], uid))
    uid, iid = uid[sort].astype(np.int64), iid[sort].astype(np.int64)
    part, noise = rows["part"][sort], rows["noise"][sort]
    pairs = {p: np.stack([uid[part == p], iid[part == p]], axis=1) for p in (0, 1, 2)}
    train_noise, valid_noise = noise[part == 0], noise[part == 1]

    meta: dict[str, Any] = {
        "n_users": int(len(used_users)),
        "n_items": int(len(used_items)),
        "setting": setting,
        "ratios": list(ratios),
        "threshold": float(positive_threshold),
        "noise_ratio": None if noise_ratio is None else float(noise_ratio),
        "seed": int(seed),
        "source": None if source is None else str(source),
        "split_rule": f"{SPLIT_ORDER[split]}; b1=max(1,round(n*r_train)), b2=round(n*(r_train+r_valid))",
        "split_kind": split,
        "split_order": SPLIT_ORDER[split],
        "split_seed": int(seed) if split == "random" else None,
        "counts": {
            "raw_interactions": int(len(df)),
            "raw_users": int(len(raw_user_ids)),
            "raw_items": int(len(raw_item_ids)),
            "raw_positives": int(positive.sum()),
            "train": int(len(pairs[0])),
            "valid": int(len(pairs[1])),
            "test": int(len(pairs[2])),
            "train_noisy": int(train_noise.sum()),
            "valid_noisy": int(valid_noise.sum()),
            "test_negatives_dropped": test_negatives,
            "users_dropped_without_train": dropped_users,
        },
    }
    clash = sorted(set(extra_meta or {}) & set(meta))
    if clash:
        raise ConfigError(f"extra_meta may not replace meta.json keys {clash}")
    meta.update(extra_meta or {})
    return write_prepared(
        out_folder, pairs[0], pairs[1], pairs[2], train_noise=train_noise, meta=meta, overwrite=overwrite,
        extra={"user_ids": raw_user_ids[used_users], "item_ids": raw_item_ids[used_items], "valid_noise": valid_noise},
    )


# --------------------------------------------------------------------------------------------- statistics
def table1_stats(data: InteractionData) -> dict[str, Any]:
    """Table-1 style counts of a prepared split: users, items, interactions (train+valid+test), density,
    train/valid/test, ``train_noisy`` / ``train_noise_share`` when train_noise exists, and ``split`` (how it was
    split: :attr:`InteractionData.split_label`)."""
    raw = data.stats()
    order = ("users", "items", "interactions", "density", "train", "valid", "test")
    stats = {key: raw[key] for key in order}
    if "train_noisy" in raw:
        stats["train_noisy"] = raw["train_noisy"]
        stats["train_noise_share"] = raw["train_noise_ratio"]
    valid_noise = data.path / "valid_noise.npy"
    if valid_noise.is_file():
        try:
            flags = np.load(valid_noise, allow_pickle=False)
        except Exception:  # an optional extra; ignore when unreadable
            flags = None
        if flags is not None and flags.shape == (len(data.valid),):
            stats["valid_noisy"] = int(flags.sum())
    for key in ("setting", "noise_ratio"):
        if data.meta.get(key) is not None:
            stats[key] = data.meta[key]
    stats["split"] = data.split_label
    return stats


def format_stats(stats: dict[str, Any], title: str | None = None) -> str:
    """A two-column text table of :func:`table1_stats` output (for ``ddrm data stats``)."""
    rows = []
    for key, value in stats.items():
        if key == "density" or key.endswith("_share"):
            text = f"{value:.4%}" if key == "density" else f"{value:.2%}"
        elif isinstance(value, (int, np.integer)):
            text = f"{int(value):,}"
        else:
            text = str(value)
        rows.append((key, text))
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"{k:<{width}}  {v:>12}" for k, v in rows]
    return "\n".join(lines)
