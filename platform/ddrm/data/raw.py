"""Raw rating readers → a DataFrame with columns ``user`` (str), ``item`` (str), ``rating`` (float64),
``timestamp`` (int64, unix seconds), one row per distinct (user, item) pair.

Formats: ``ml-1m`` (``ratings.dat``, ``::``), ``ml-100k`` (``u.data``, tab), ``uirt`` (``user<TAB>item<TAB>rating
<TAB>timestamp``, no header: the ML-100K layout under any file name), ``uir`` (``user<TAB>item<TAB>rating``, no header,
NO timestamp: the frame's timestamps are 0 and ``df.attrs["has_timestamp"]`` is False, so a split must be random),
``csv`` (``user,item,rating,timestamp`` with or without a header), ``amazon`` (review JSON lines: ``reviewerID, asin,
overall, unixReviewTime``), ``yelp`` (review JSON lines: ``user_id, business_id, stars, date``). A tab-separated file
that is not named ``u.data`` is detected by the number of fields on its first line (4: uirt, 3: uir); every line
must then have that many. Files may be gzip-compressed (``.gz``).
Malformed input raises :class:`~ddrm.errors.DataError` naming the file and, where possible, the line.

Longer than the project's ~350 lines on purpose: the seven readers, format detection and the shared
line-numbered error helpers they all call form one table of formats; split, each reader would import the
private helpers of another module.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

COLUMNS = ("user", "item", "rating", "timestamp")
FORMATS = ("ml-1m", "ml-100k", "uirt", "uir", "csv", "amazon", "yelp")
# Tab-separated layouts by field count (auto-detection and the "what is allowed" part of error messages).
TAB_LAYOUTS = {4: ("uirt", "user item rating timestamp"), 3: ("uir", "user item rating")}
TAB_ALLOWED = ("a tab-separated ratings file has 3 fields (user item rating) or 4 fields "
               "(user item rating timestamp), the same number on every line")
HAS_TIMESTAMP = "has_timestamp"  # DataFrame.attrs key: False when the source had no timestamps (format uir)
# File names looked for when ``read_ratings`` is given a folder (e.g. ``data/raw/ml-1m``).
KNOWN_FILES = ("ratings.dat", "u.data", "ratings.csv")
JSON_KEYS = {
    "amazon": {"reviewerID": "user", "asin": "item", "overall": "rating", "unixReviewTime": "timestamp"},
    "yelp": {"user_id": "user", "business_id": "item", "stars": "rating", "date": "timestamp"},
}
# Header names accepted for each column of a ratings CSV (compared case-insensitively).
CSV_ALIASES = {
    "user": ("user", "user_id", "userid", "reviewerid", "uid"),
    "item": ("item", "item_id", "itemid", "movieid", "movie_id", "asin", "business_id", "iid"),
    "rating": ("rating", "overall", "stars", "score"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "unix_timestamp"),
}
_JSON_CHUNK = 200_000


# --------------------------------------------------------------------------------------------- helpers
def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "r", encoding="utf-8", errors="replace")


def _read_text(path: Path) -> str:
    try:
        with _open_text(path) as handle:
            text = handle.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not text.strip():
        raise DataError(f"{path}: empty file (no ratings)")
    return text


def _line_numbers(text: str) -> list[int]:
    """1-based numbers of the non-blank lines (error path only)."""
    return [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def _split_line(line: str, sep: str) -> list[str]:
    if sep == ",":
        return next(csv.reader([line]), [])
    return line.split(sep)


class _Delimited:
    """A headerless or headed delimited text: ``fields`` holds columns 0..n-1 (str; with ``numeric`` columns 2, 3
    may come back float64 / int64 already), one row per record."""

    def __init__(self, path: Path, text: str, sep: str, n_fields: int, what: str, skip: int = 0,
                 numeric: bool = False, hint: str = ""):
        self.path, self.text, self.sep, self.what, self.skip, self.hint = path, text, sep, what, skip, hint
        body = text
        for _ in range(skip):  # drop the header line (and the blank lines before it)
            start = 0
            while not body[start:_line_end(body, start)].strip():
                start = _line_end(body, start) + 1
            body = body[_line_end(body, start) + 1:]
        if re.search(r"(?m)^[ \t]+\r?$", body):  # whitespace-only lines count as blank
            body = re.sub(r"(?m)^[ \t]+(\r?)$", r"\1", body)
        c_sep = "\x1f" if len(sep) > 1 else sep
        if c_sep != sep:
            body = body.replace(sep, c_sep)
        options = dict(sep=c_sep, header=None, names=list(range(n_fields)), engine="c", na_filter=False,
                       skipinitialspace=True, index_col=False,
                       quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE)
        self.fields = None
        # A line with exactly one field too many is only a ParserWarning (pandas drops the field): an error here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            if numeric:  # fast path: the C parser converts the numbers; any trouble falls back to strings
                try:
                    types = {0: str, 1: str, 2: "float64", 3: "int64"}
                    self.fields = pd.read_csv(io.StringIO(body), **options,
                                              dtype={c: types[c] for c in range(min(4, n_fields))})
                except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError, OverflowError):
                    self.fields = None
            if self.fields is None:
                try:
                    self.fields = pd.read_csv(io.StringIO(body), dtype=str, **options)
                except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
                    self.fields = None
        if self.fields is not None and self.fields.empty:
            raise DataError(f"{path}: empty file (no ratings{' below the header' if skip else ''})")
        if self.fields is None or any((self.fields[c] == "").to_numpy().any()
                                      for c in self.fields.columns if self.fields[c].dtype.kind not in "fi"):
            self._raise_first_bad_line(n_fields)

    def _raise_first_bad_line(self, n_fields: int) -> None:
        numbers = _line_numbers(self.text)[self.skip:]
        lines = self.text.splitlines()
        for number in numbers:
            parts = [p.strip() for p in _split_line(lines[number - 1].strip(), self.sep)]
            if len(parts) != n_fields:
                raise DataError(f"{self.path}: line {number}: expected {n_fields} {self.what}-separated fields, "
                                f"found {len(parts)}: {lines[number - 1].strip()[:80]!r}{self.hint}")
            if "" in parts:
                raise DataError(f"{self.path}: line {number}: field {parts.index('') + 1} is empty")
        raise DataError(f"{self.path}: cannot parse as {n_fields} {self.what}-separated fields")

    def where(self, record: int) -> str:
        return f"{self.path}: line {_line_numbers(self.text)[self.skip + record]}"


def _finish(user: pd.Series, item: pd.Series, rating: pd.Series, timestamp: pd.Series,
            where: Callable[[int], str], strip: bool = False) -> pd.DataFrame:
    """Validate and convert the four columns (strings or JSON values) into the canonical frame;
    ``where(k)`` names the k-th record (file and line) in errors."""
    user, item = user.astype(str), item.astype(str)
    if strip:
        user, item = user.str.strip(), item.str.strip()
    for name, col in (("user", user), ("item", item)):
        bad = (col == "").to_numpy()
        if bad.any():
            raise DataError(f"{where(int(np.argmax(bad)))}: empty {name} id")
    rating_num = pd.to_numeric(rating, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(rating_num)
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"{where(k)}: rating {rating.iloc[k]!r} is not a number")
    ts_num = pd.to_numeric(timestamp, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(ts_num) | (ts_num != np.round(ts_num))
    if bad.any():
        k = int(np.argmax(bad))
        raise DataError(f"{where(k)}: timestamp {timestamp.iloc[k]!r} is not an integer")
    return pd.DataFrame({
        "user": user.reset_index(drop=True),
        "item": item.reset_index(drop=True),
        "rating": rating_num,
        "timestamp": ts_num.astype(np.int64),
    })


# --------------------------------------------------------------------------------------------- readers
def _read_delimited(path: str | os.PathLike, sep: str, what: str, hint: str = "") -> pd.DataFrame:
    path = Path(path)
    table = _Delimited(path, _read_text(path), sep, 4, what, numeric=True, hint=hint)
    f = table.fields
    return _finish(f[0], f[1], f[2], f[3], table.where)


def _tab_hint(fmt: str, n_fields: int) -> str:
    return f" (format {fmt}: {TAB_LAYOUTS[n_fields][1]}); {TAB_ALLOWED}"


def read_ml1m(path: str | os.PathLike) -> pd.DataFrame:
    """MovieLens-1M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``, no header."""
    return _read_delimited(path, "::", "'::'")


def read_ml100k(path: str | os.PathLike) -> pd.DataFrame:
    """MovieLens-100K ``u.data``: ``user<TAB>item<TAB>rating<TAB>timestamp``, no header."""
    return _read_delimited(path, "\t", "tab", hint=_tab_hint("ml-100k", 4))


def read_uirt(path: str | os.PathLike) -> pd.DataFrame:
    """``user<TAB>item<TAB>rating<TAB>timestamp`` (unix seconds), no header, any file name (e.g. the Amazon HIN
    ``user_item.dat``)."""
    return _read_delimited(path, "\t", "tab", hint=_tab_hint("uirt", 4))


def read_uir(path: str | os.PathLike) -> pd.DataFrame:
    """``user<TAB>item<TAB>rating``, no header, no timestamp (e.g. the Yelp HIN ``user_business.dat``). The frame's
    ``timestamp`` column is 0 everywhere and ``df.attrs["has_timestamp"]`` is False: :func:`ddrm.data.split.prepare`
    then splits in a seeded random order and refuses a chronological split."""
    path = Path(path)
    table = _Delimited(path, _read_text(path), "\t", 3, "tab", numeric=True, hint=_tab_hint("uir", 3))
    f = table.fields
    df = _finish(f[0], f[1], f[2], pd.Series(np.zeros(len(f), dtype=np.int64)), table.where)
    df.attrs[HAS_TIMESTAMP] = False
    return df


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv_ratings(path: str | os.PathLike) -> pd.DataFrame:
    """Ratings CSV. Without a header: exactly ``user,item,rating,timestamp``. With a header (detected when the
    first line's rating/timestamp fields are not numbers), columns are found by name (e.g. ``userId,movieId``)."""
    path = Path(path)
    text = _read_text(path)
    first_line = next(line for line in text.splitlines() if line.strip())
    first = [f.strip() for f in _split_line(first_line.strip(), ",")]
    if len(first) >= 4:
        has_header = not (_is_number(first[2]) and _is_number(first[3]))
    else:  # too few fields: a header only when nothing in it is a number
        has_header = not any(_is_number(f) for f in first)
    if not has_header:
        table = _Delimited(path, text, ",", 4, "comma", numeric=True)
        f = table.fields
        return _finish(f[0], f[1], f[2], f[3], table.where)
    header = [name.lower() for name in first]
    columns = {}
    for canon, aliases in CSV_ALIASES.items():
        found = [i for i, name in enumerate(header) if name in aliases]
        if not found:
            raise DataError(
                f"{path}: line {_line_numbers(text)[0]}: header {first} has no {canon} column "
                f"(accepted names: {', '.join(aliases)})"
            )
        columns[canon] = found[0]
    table = _Delimited(path, text, ",", len(header), "comma", skip=1)
    return _finish(*(table.fields[columns[c]] for c in COLUMNS), where=table.where)


def _scan_json(path: Path, check: Callable[[dict], str | None]) -> tuple[int, str] | None:
    """Error path only: the first (line number, reason) where a line is not a JSON object or fails ``check``."""
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                return number, f"not valid JSON ({exc.msg} at column {exc.colno})"
            if not isinstance(record, dict):
                return number, "not a JSON object"
            reason = check(record)
            if reason:
                return number, reason
    return None


def _json_where(path: Path, record: int) -> str:
    """``path: line N`` of the ``record``-th (0-based) non-blank line (error path only)."""
    seen = -1
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            seen += bool(line.strip())
            if seen == record:
                return f"{path}: line {number}"
    return f"{path}: record {record + 1}"


def _read_json_lines(path: Path, fmt: str) -> pd.DataFrame:
    keys = JSON_KEYS[fmt]

    def check(record: dict) -> str | None:
        for key in keys:
            if record.get(key) is None:
                return f"missing key {key!r} (a {fmt} review needs {', '.join(keys)})"
        return None

    frames = []
    try:
        with pd.read_json(path, lines=True, chunksize=_JSON_CHUNK, dtype=False, compression="infer",
                          encoding="utf-8", encoding_errors="replace") as reader:
            for chunk in reader:
                if any(k not in chunk.columns for k in keys) or chunk[list(keys)].isna().to_numpy().any():
                    raise LookupError
                frames.append(chunk[list(keys)])
    except (ValueError, LookupError) as exc:
        found = _scan_json(path, check)
        if found:
            raise DataError(f"{path}: line {found[0]}: {found[1]}") from None
        raise DataError(f"{path}: cannot parse as {fmt} JSON lines ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not frames or sum(len(f) for f in frames) == 0:
        raise DataError(f"{path}: empty file (no ratings)")
    raw = pd.concat(frames, ignore_index=True).rename(columns=keys)
    if fmt == "yelp":
        dates = pd.to_datetime(raw["timestamp"].astype(str), format="ISO8601", errors="coerce", utc=True)
        bad = dates.isna().to_numpy()
        if bad.any():
            k = int(np.argmax(bad))
            value = raw["timestamp"].iloc[k]
            raise DataError(f"{_json_where(path, k)}: date {value!r} is not a date like '2016-03-09 00:44:42'")
        raw["timestamp"] = (dates - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    return _finish(raw["user"], raw["item"], raw["rating"], raw["timestamp"], where=lambda k: _json_where(path, k),
                   strip=True)


def read_amazon_json(path: str | os.PathLike) -> pd.DataFrame:
    """Amazon review JSON lines (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``)."""
    return _read_json_lines(Path(path), "amazon")


def read_yelp_json(path: str | os.PathLike) -> pd.DataFrame:
    """Yelp review JSON lines (``user_id``, ``business_id``, ``stars``, ``date`` → unix seconds; a date without
    a zone is read as UTC)."""
    return _read_json_lines(Path(path), "yelp")


READERS: dict[str, Callable[[str | os.PathLike], pd.DataFrame]] = {
    "ml-1m": read_ml1m,
    "ml-100k": read_ml100k,
    "uirt": read_uirt,
    "uir": read_uir,
    "csv": read_csv_ratings,
    "amazon": read_amazon_json,
    "yelp": read_yelp_json,
}


# --------------------------------------------------------------------------------------------- dispatch
def detect_format(path: str | os.PathLike) -> str:
    """Guess the format from the file name, else from the first non-blank line."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name == "ratings.dat":
        return "ml-1m"
    if name == "u.data":
        return "ml-100k"
    try:
        with _open_text(path) as handle:
            number, first = next(((n, line.strip()) for n, line in enumerate(handle, start=1) if line.strip()),
                                 (0, ""))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not first:
        raise DataError(f"{path}: empty file (no ratings)")
    if first.startswith("{"):
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            record = {}
        for fmt, keys in JSON_KEYS.items():
            if isinstance(record, dict) and all(k in record for k in keys):
                return fmt
        raise DataError(
            f"{path}: JSON lines without the keys of a known format "
            f"(amazon: {', '.join(JSON_KEYS['amazon'])}; yelp: {', '.join(JSON_KEYS['yelp'])})"
        )
    if "::" in first:
        return "ml-1m"
    if "\t" in first:
        n_fields = len(first.split("\t"))
        if n_fields not in TAB_LAYOUTS:
            raise DataError(f"{path}: line {number}: found {n_fields} tab-separated fields; {TAB_ALLOWED} "
                            f"(or pass a format, one of {', '.join(FORMATS)})")
        return TAB_LAYOUTS[n_fields][0]
    if "," in first or name.endswith(".csv"):
        return "csv"
    raise DataError(f"{path}: cannot detect the ratings format; pass a format, one of {', '.join(FORMATS)}")


def deduplicate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, item): the one with the latest timestamp (file order breaks ties: last wins)."""
    users, _ = pd.factorize(df["user"])
    items, item_values = pd.factorize(df["item"])
    keys = users.astype(np.int64) * max(1, len(item_values)) + items
    ordered_keys = np.sort(keys)
    if not (ordered_keys[1:] == ordered_keys[:-1]).any():
        return df.reset_index(drop=True)
    order = np.argsort(df["timestamp"].to_numpy(), kind="stable")
    last = ~pd.Series(keys[order]).duplicated(keep="last").to_numpy()
    return df.iloc[np.sort(order[last])].reset_index(drop=True)


def read_ratings(path: str | os.PathLike, fmt: str = "auto") -> pd.DataFrame:
    """Read a raw ratings file (or a folder holding ``ratings.dat`` / ``u.data`` / ``ratings.csv``).

    Returns columns ``user`` str, ``item`` str, ``rating`` float64, ``timestamp`` int64 (unix seconds);
    duplicated (user, item) pairs are reduced to the latest one.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in READERS:
        raise ConfigError(f"unknown ratings format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    if path.is_dir():
        found = [path / name for name in KNOWN_FILES if (path / name).is_file()]
        if not found:
            raise DataError(f"{path}: a folder without a ratings file (looked for {', '.join(KNOWN_FILES)})")
        path = found[0]
    if not path.is_file():
        raise DataError(f"{path}: no such ratings file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    return deduplicate(READERS[fmt](path))


def kcore(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Keep the largest sub-frame in which every user and every item has at least ``k`` rows (iterated)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k-core k must be an integer >= 1, got {k!r}")
    out = df
    while True:
        user_n = out["user"].map(out["user"].value_counts())
        item_n = out["item"].map(out["item"].value_counts())
        keep = (user_n >= k) & (item_n >= k)
        if keep.all():
            return out.reset_index(drop=True)
        out = out[keep.to_numpy()]
