"""Raw rating readers: each format, auto-detection, de-duplication, k-core, malformed input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from ddrm.data.raw import deduplicate, detect_format, kcore, read_ratings
from ddrm.errors import ConfigError, DataError

ROWS = [("1", "10", 5.0, 100), ("1", "20", 3.0, 200), ("2", "10", 4.0, 150)]


def _check_frame(df: pd.DataFrame, rows=ROWS) -> None:
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert df["rating"].dtype == np.float64 and df["timestamp"].dtype == np.int64
    assert all(isinstance(v, str) for v in df["user"]) and all(isinstance(v, str) for v in df["item"])
    got = sorted(df.itertuples(index=False, name=None))
    assert got == sorted(rows)


def _write(path, text: str):
    path.write_text(text)
    return path


def test_ml1m_reader(tmp_path):
    path = _write(tmp_path / "ratings.dat", "1::10::5::100\n1::20::3::200\n\n2::10::4::150\n")
    _check_frame(read_ratings(path))
    _check_frame(read_ratings(path, fmt="ml-1m"))


def test_ml100k_reader(tmp_path):
    path = _write(tmp_path / "u.data", "1\t10\t5\t100\r\n1\t20\t3\t200\r\n2\t10\t4\t150\r\n")
    _check_frame(read_ratings(path))


def test_csv_without_and_with_header(tmp_path):
    plain = _write(tmp_path / "a.csv", "1,10,5,100\n1,20,3.0,200\n2,10,4,150\n")
    _check_frame(read_ratings(plain))
    headed = _write(tmp_path / "b.csv", "user,item,rating,timestamp\n1,10,5,100\n1,20,3,200\n2,10,4,150\n")
    _check_frame(read_ratings(headed, fmt="csv"))
    # MovieLens-style header names, an extra column and quoted fields
    named = _write(tmp_path / "c.csv",
                   'userId,movieId,rating,timestamp,tag\n"1",10,5,100,x\n1,"20",3,200,y\n2,10,4,150,z\n')
    _check_frame(read_ratings(named))


def test_ids_keep_leading_zeros(tmp_path):
    path = _write(tmp_path / "r.csv", "007,0001,5,100\n")
    df = read_ratings(path)
    assert df["user"].tolist() == ["007"] and df["item"].tolist() == ["0001"]


def test_amazon_json(tmp_path):
    lines = [{"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, "reviewText": "ok"} for u, i, r, t in ROWS]
    path = _write(tmp_path / "reviews_Books.json", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    _check_frame(read_ratings(path))
    assert detect_format(path) == "amazon"


def test_yelp_json_dates_to_unix_seconds(tmp_path):
    lines = [
        {"user_id": "a", "business_id": "b1", "stars": 5, "date": "2016-03-09 00:44:42", "text": "x"},
        {"user_id": "a", "business_id": "b2", "stars": 2, "date": "1970-01-01 00:00:10"},
        {"user_id": "a", "business_id": "b3", "stars": 2, "date": "1970-01-01T01:00:00+01:00"},
        {"user_id": "a", "business_id": "b4", "stars": 2, "date": "1970-01-02"},
    ]
    path = _write(tmp_path / "review.json", "\n".join(json.dumps(x) for x in lines))
    df = read_ratings(path)
    assert detect_format(path) == "yelp"
    assert dict(zip(df["item"], df["timestamp"])) == {"b1": 1457484282, "b2": 10, "b3": 0, "b4": 86400}


def test_gzip_and_folder(tmp_path):
    with gzip.open(tmp_path / "ratings.dat.gz", "wt") as handle:
        handle.write("1::10::5::100\n1::20::3::200\n2::10::4::150\n")
    _check_frame(read_ratings(tmp_path / "ratings.dat.gz"))
    folder = tmp_path / "ml"
    folder.mkdir()
    _write(folder / "u.data", "1\t10\t5\t100\n1\t20\t3\t200\n2\t10\t4\t150\n")
    _check_frame(read_ratings(folder))


def test_detect_by_content(tmp_path):
    assert detect_format(_write(tmp_path / "x.txt", "1::2::3::4\n")) == "ml-1m"
    assert detect_format(_write(tmp_path / "y.txt", "1\t2\t3\t4\n")) == "uirt"  # the ML-100K layout, any name
    assert detect_format(_write(tmp_path / "v.txt", "1\t2\t3\n")) == "uir"
    assert detect_format(_write(tmp_path / "z.txt", "1,2,3,4\n")) == "csv"
    with pytest.raises(DataError, match="cannot detect"):
        detect_format(_write(tmp_path / "w.txt", "1 2 3 4\n"))


def test_duplicates_keep_latest(tmp_path):
    path = _write(tmp_path / "ratings.dat", "1::10::5::300\n1::10::2::100\n1::20::1::50\n1::20::4::50\n")
    df = read_ratings(path)
    assert len(df) == 2
    latest = dict(zip(df["item"], zip(df["rating"], df["timestamp"])))
    assert latest["10"] == (5.0, 300)
    assert latest["20"] == (4.0, 50)  # a tie on time: the later line wins


def test_deduplicate_frame():
    df = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "x", "x"], "rating": [1.0, 5.0, 3.0],
                       "timestamp": np.array([9, 1, 5], dtype=np.int64)})
    out = deduplicate(df)
    assert len(out) == 2 and out.loc[out["user"] == "a", "rating"].item() == 1.0


@pytest.mark.parametrize("name, text, match", [
    ("ratings.dat", "1::10::5::100\n1::20::3\n", r"line 2: expected 4"),
    ("ratings.dat", "1::10::5::100\n\n1::20::3::200::9\n", r"line 3: expected 4"),
    ("ratings.dat", "1::10::5::100\n1::20::abc::200\n", r"line 2: rating 'abc' is not a number"),
    ("u.data", "1\t10\t5\t100\n1\t20\t3\t20x\n", r"line 2: timestamp '20x' is not an integer"),
    ("u.data", "1\t10\t5\t100\n1\t\t3\t200\n", r"line 2: field 2 is empty"),
    ("ratings.dat", "", r"empty file"),
    ("ratings.dat", "\n  \n", r"empty file"),
    ("r.csv", "user,item,rating,timestamp\n", r"empty file"),
    ("r.csv", "user,item,score\n1,2,3\n", r"no timestamp column"),
    ("r.csv", "1,10,5,100\n1,20,5\n", r"line 2: expected 4"),
])
def test_malformed_delimited(tmp_path, name, text, match):
    path = _write(tmp_path / name, text)
    with pytest.raises(DataError, match=match) as info:
        read_ratings(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("lines, match", [
    (['{"reviewerID": "u", "asin": "i", "overall": 5, "unixReviewTime": 1}', '{"reviewerID": "u", "asin": "j"}'],
     r"line 2: missing key 'overall'"),
    (['{"reviewerID": "u", "asin": "i", "overall": 5, "unixReviewTime": 1}', '', '{"reviewerID": "u", "asin": '],
     r"line 3: not valid JSON"),
    (['{"reviewerID": "u", "asin": "i", "overall": "five", "unixReviewTime": 1}'], r"line 1: rating 'five'"),
])
def test_malformed_amazon(tmp_path, lines, match):
    path = _write(tmp_path / "reviews.json", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match) as info:
        read_ratings(path, fmt="amazon")
    assert str(path) in str(info.value)


def test_malformed_yelp_date(tmp_path):
    good = {"user_id": "a", "business_id": "b", "stars": 5, "date": "2016-03-09 00:44:42"}
    bad = dict(good, business_id="c", date="yesterday")
    path = _write(tmp_path / "review.json", json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"line 3: date 'yesterday'"):
        read_ratings(path)


def test_bad_paths_and_formats(tmp_path):
    with pytest.raises(DataError, match="no such ratings file"):
        read_ratings(tmp_path / "missing.dat")
    with pytest.raises(DataError, match="folder without a ratings file"):
        read_ratings(tmp_path)
    with pytest.raises(ConfigError, match="unknown ratings format 'xml'"):
        read_ratings(tmp_path, fmt="xml")


def test_kcore_iterates_until_stable():
    # user c has 2 rows but item z has only c's row; dropping it leaves c with 1 row, then item y drops to 2...
    rows = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z"), ("d", "x")]
    df = pd.DataFrame(rows, columns=["user", "item"]).assign(rating=5.0, timestamp=np.int64(0))
    out = kcore(df, 2)
    assert sorted(zip(out["user"], out["item"])) == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    users, items = out["user"].value_counts(), out["item"].value_counts()
    assert users.min() >= 2 and items.min() >= 2
    assert len(kcore(df, 1)) == len(df)
    assert kcore(df, 5).empty
    with pytest.raises(ConfigError):
        kcore(df, 0)
