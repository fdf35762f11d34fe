"""prepare(): chronological per-user splits for the clean / natural / random settings, id maps, meta, atomicity,
argument validation, Table-1 stats and the ``ddrm data prepare|stats`` commands."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from ddrm.data import load_prepared
from ddrm.data import prepared as prepared_module
from ddrm.data.commands import add_data_parser
from ddrm.data.raw import read_ratings
from ddrm.data.split import format_stats, prepare, table1_stats
from ddrm.errors import ConfigError, DataError, DDRMError


def make_ratings(n_users: int = 40, n_items: int = 60, seed: int = 0) -> pd.DataFrame:
    """Users with 5..30 distinct items, ratings 1..5, timestamps with ties; user 'neg' has only ratings < 4."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=int(rng.integers(5, 31)), replace=False)
        for i in items:
            rows.append((f"u{u}", str(i), float(rng.integers(1, 6)), int(rng.integers(0, 50))))
    rows += [("neg", "1", 2.0, 5), ("neg", "2", 1.0, 6), ("neg", "3", 3.0, 7)]
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


def load_with_raw(folder, df: pd.DataFrame):
    """The prepared data plus, per split, a frame of the raw rows (or NaN rating for injected pairs)."""
    data = load_prepared(folder.name, folder.parent)
    user_ids = np.load(folder / "user_ids.npy", allow_pickle=False)
    item_ids = np.load(folder / "item_ids.npy", allow_pickle=False)
    assert user_ids.dtype.kind == "U" and item_ids.dtype.kind == "U"
    assert len(user_ids) == data.n_users and len(item_ids) == data.n_items
    raw = df.set_index(["user", "item"])
    frames = {}
    for split in ("train", "valid", "test"):
        pairs = data.split(split)
        keys = pd.MultiIndex.from_arrays([user_ids[pairs[:, 0]], item_ids[pairs[:, 1]]], names=["user", "item"])
        frames[split] = raw.reindex(keys).reset_index().assign(uid=pairs[:, 0])
    return data, frames


def check_chronology(frames) -> None:
    """Per user: max(train time) <= min(valid time), max(valid) <= min(test) (over real rows only)."""
    times = {s: f.dropna(subset=["timestamp"]).groupby("user")["timestamp"] for s, f in frames.items()}
    last_train, first_valid = times["train"].max(), times["valid"].min()
    last_valid, first_test = times["valid"].max(), times["test"].min()
    both = last_train.index.intersection(first_valid.index)
    assert (last_train[both] <= first_valid[both]).all()
    both = last_valid.index.intersection(first_test.index)
    assert (last_valid[both] <= first_test[both]).all()
    both = last_train.index.intersection(first_test.index)
    assert (last_train[both] <= first_test[both]).all()


def test_clean_setting(tmp_path):
    df = make_ratings()
    folder = prepare(df, tmp_path / "clean", "clean")
    data, frames = load_with_raw(folder, df)
    for split, frame in frames.items():
        assert frame["rating"].notna().all(), f"{split}: a pair not in the raw data"
        assert (frame["rating"] >= 4).all(), f"{split}: a negative in the clean setting"
    check_chronology(frames)
    assert not data.train_noise.any()
    positives = df[df["rating"] >= 4]
    assert len(data.train) + len(data.valid) + len(data.test) == len(positives)
    assert "neg" not in set(np.load(folder / "user_ids.npy"))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["setting"] == "clean" and meta["ratios"] == [0.7, 0.1, 0.2] and meta["threshold"] == 4.0
    assert meta["n_users"] == data.n_users and meta["counts"]["train"] == len(data.train)


def test_natural_setting_flags_exactly_the_negatives(tmp_path):
    df = make_ratings()
    folder = prepare(df, tmp_path / "nat", "natural")
    data, frames = load_with_raw(folder, df)
    for frame in frames.values():
        assert frame["rating"].notna().all()
    np.testing.assert_array_equal(data.train_noise, frames["train"]["rating"].to_numpy() < 4)
    assert data.train_noise.any() and not data.train_noise.all()
    assert (frames["valid"]["rating"] < 4).any()  # negatives stay in valid
    np.testing.assert_array_equal(np.load(folder / "valid_noise.npy"), frames["valid"]["rating"].to_numpy() < 4)
    assert (frames["test"]["rating"] >= 4).all()
    check_chronology(frames)
    # every raw row is kept except the negatives that fell in test
    meta = json.loads((folder / "meta.json").read_text())
    total = len(data.train) + len(data.valid) + len(data.test)
    assert total + meta["counts"]["test_negatives_dropped"] == len(df)
    assert "neg" in set(np.load(folder / "user_ids.npy"))  # kept: it has (noisy) training rows
    assert data.stats()["train_noisy"] == int((frames["train"]["rating"] < 4).sum())


def test_ratios_respected_and_ties_deterministic(tmp_path):
    rows = [(f"u{u}", str(i), 5.0, 7) for u in range(3) for i in range(20)]  # one timestamp: items break ties
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    folder = prepare(df.sample(frac=1, random_state=1), tmp_path / "r", "clean")
    data, frames = load_with_raw(folder, df)
    assert (len(data.train), len(data.valid), len(data.test)) == (42, 6, 12)
    first_user = frames["train"][frames["train"]["user"] == "u0"]["item"].astype(int)
    assert sorted(first_user) == list(range(14))  # items in numeric order: 0..13 train
    again = prepare(df, tmp_path / "r2", "clean")
    for name in ("train_list.npy", "valid_list.npy", "test_list.npy"):
        np.testing.assert_array_equal(np.load(folder / name), np.load(again / name))
    folder = prepare(df, tmp_path / "r3", "clean", ratios=(0.5, 0.25, 0.25))
    data = load_prepared("r3", tmp_path)
    assert (len(data.train), len(data.valid), len(data.test)) == (30, 15, 15)


def test_random_setting_injects_unobserved_pairs(tmp_path):
    df = make_ratings()
    clean = load_prepared(prepare(df, tmp_path / "clean", "clean").name, tmp_path)
    folder = prepare(df, tmp_path / "rand", "random", noise_ratio=0.4, seed=3)
    data, frames = load_with_raw(folder, df)
    injected = frames["train"][data.train_noise]
    assert injected["rating"].isna().all(), "an injected pair was observed in the raw data"
    assert frames["train"][~data.train_noise]["rating"].notna().all()
    assert (frames["train"][~data.train_noise]["rating"] >= 4).all()
    valid_noise = np.load(folder / "valid_noise.npy")
    assert frames["valid"][valid_noise]["rating"].isna().all() and valid_noise.any()
    assert (frames["test"]["rating"] >= 4).all()
    # per user: round(0.4 * clean train count) injected in train, likewise for valid
    clean_train = np.bincount(clean.train[:, 0], minlength=clean.n_users)
    clean_valid = np.bincount(clean.valid[:, 0], minlength=clean.n_users)
    got_train = np.bincount(data.train[data.train_noise, 0], minlength=data.n_users)
    got_valid = np.bincount(data.valid[valid_noise, 0], minlength=data.n_users)
    np.testing.assert_array_equal(got_train, np.floor(0.4 * clean_train + 0.5))
    np.testing.assert_array_equal(got_valid, np.floor(0.4 * clean_valid + 0.5))
    np.testing.assert_array_equal(data.train[~data.train_noise], clean.train)
    np.testing.assert_array_equal(data.test, clean.test)
    # seeded
    same = prepare(df, tmp_path / "rand2", "random", noise_ratio=0.4, seed=3)
    other = prepare(df, tmp_path / "rand3", "random", noise_ratio=0.4, seed=4)
    np.testing.assert_array_equal(np.load(folder / "train_list.npy"), np.load(same / "train_list.npy"))
    assert not np.array_equal(np.load(folder / "train_list.npy"), np.load(other / "train_list.npy"))


def test_random_setting_dense_user_gets_what_exists(tmp_path):
    # user a rated 9 of the 10 items: only one unobserved item can be injected
    rows = [("a", str(i), 5.0, i) for i in range(9)] + [("b", str(i), 5.0, i) for i in range(1, 10)]
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    folder = prepare(df, tmp_path / "dense", "random", noise_ratio=1.0)
    data, frames = load_with_raw(folder, df)
    injected = pd.concat([frames["train"][data.train_noise], frames["valid"][np.load(folder / "valid_noise.npy")]])
    assert sorted(zip(injected["user"], injected["item"])) == [("a", "9"), ("b", "0")]


def test_arguments_are_validated(tmp_path):
    df = make_ratings()
    bad = [
        (dict(setting="dirty"), ConfigError, "unknown setting"),
        (dict(setting="clean", ratios=(0.7, 0.2, 0.2)), ConfigError, "summing to 1"),
        (dict(setting="clean", ratios=(0.9, 0.1, 0.0)), ConfigError, "positive"),
        (dict(setting="clean", ratios=(0.5, 0.5)), ConfigError, "three"),
        (dict(setting="clean", noise_ratio=0.1), ConfigError, "only allowed with setting 'random'"),
        (dict(setting="random"), ConfigError, "needs noise_ratio"),
        (dict(setting="random", noise_ratio=1.5), ConfigError, r"in \[0, 1\]"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            prepare(df, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
    with pytest.raises(DataError, match="lacks column"):
        prepare(df.drop(columns="timestamp"), tmp_path / "x", "clean")
    with pytest.raises(DataError, match="no ratings"):
        prepare(df.iloc[:0], tmp_path / "x", "clean")
    with pytest.raises(DataError, match="no rating >= 4"):
        prepare(df[df["rating"] < 4], tmp_path / "x", "clean")
    prepare(df, tmp_path / "x", "noisy")  # alias of natural
    assert json.loads((tmp_path / "x" / "meta.json").read_text())["setting"] == "natural"
    with pytest.raises(DataError, match="already exists"):
        prepare(df, tmp_path / "x", "clean")
    prepare(df, tmp_path / "x", "clean", overwrite=True)
    assert json.loads((tmp_path / "x" / "meta.json").read_text())["setting"] == "clean"


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    df = make_ratings()
    calls = []
    real_save = np.save

    def failing_save(path, array, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(prepared_module.np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        prepare(df, tmp_path / "out", "natural")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_table1_stats_and_format(tmp_path):
    df = make_ratings()
    folder = prepare(df, tmp_path / "nat", "natural")
    data = load_prepared("nat", tmp_path)
    stats = table1_stats(data)
    assert stats["users"] == data.n_users and stats["items"] == data.n_items
    assert stats["interactions"] == len(data.train) + len(data.valid) + len(data.test)
    assert stats["train_noisy"] == int(data.train_noise.sum())
    assert stats["train_noise_share"] == pytest.approx(data.train_noise.mean())
    assert stats["valid_noisy"] == int(np.load(folder / "valid_noise.npy").sum())
    assert stats["density"] == pytest.approx(stats["interactions"] / (data.n_users * data.n_items))
    text = format_stats(stats, title="t")
    assert text.splitlines()[0] == "t" and "train_noise_share" in text and f"{stats['train']:,}" in text


def test_prepare_ml1m_sized_input_is_fast(tmp_path):
    import time

    rng = np.random.default_rng(0)
    n = 300_000
    df = pd.DataFrame({"user": rng.integers(0, 3000, n).astype(str), "item": rng.integers(0, 2000, n).astype(str),
                       "rating": rng.integers(1, 6, n).astype(float), "timestamp": rng.integers(0, 10**9, n)})
    start = time.perf_counter()
    prepare(df, tmp_path / "big", "random", noise_ratio=0.3)
    assert time.perf_counter() - start < 20
    load_prepared("big", tmp_path)


# --------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddrm")
    add_data_parser(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def test_cli_prepare_and_stats(tmp_path, capsys, monkeypatch):
    raw = tmp_path / "ratings.dat"
    df = make_ratings()
    raw.write_text("\n".join(f"{u}::{i}::{int(r)}::{t}" for u, i, r, t in df.itertuples(index=False, name=None)))
    assert _run(["data", "prepare", str(raw), "--out", str(tmp_path / "a"), "--setting", "natural"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "a") in out and "train_noisy" in out
    monkeypatch.setenv("DDRM_DATA_DIR", str(tmp_path / "dd"))
    assert _run(["data", "prepare", str(raw), "--name", "r", "--setting", "random", "--noise-ratio", "0.2",
                 "--ratios", "0.6,0.2,0.2", "--kcore", "2", "--seed", "1", "--threshold", "3"]) == 0
    meta = json.loads((tmp_path / "dd" / "r" / "meta.json").read_text())
    assert meta["ratios"] == [0.6, 0.2, 0.2] and meta["noise_ratio"] == 0.2 and meta["threshold"] == 3.0
    assert meta["seed"] == 1 and meta["source"] == str(raw)
    capsys.readouterr()
    assert _run(["data", "stats", str(tmp_path / "a")]) == 0
    assert "interactions" in capsys.readouterr().out
    assert _run(["data", "stats", "r"]) == 0  # a name under $DDRM_DATA_DIR
    with pytest.raises(DataError, match="already exists"):
        _run(["data", "prepare", str(raw), "--out", str(tmp_path / "a"), "--setting", "clean"])
    assert _run(["data", "prepare", str(raw), "--out", str(tmp_path / "a"), "--setting", "clean", "--force"]) == 0


@pytest.mark.parametrize("extra, match", [
    (["--setting", "clean"], "needs --out DIR or --name"),
    (["--setting", "clean", "--out", "o", "--name", "n"], "not both"),
    (["--setting", "clean", "--out", "o", "--ratios", "0.7,0.3"], "--ratios must be three numbers"),
    (["--setting", "clean", "--out", "o", "--ratios", "0.7,0.2,0.2"], "summing to 1"),
    (["--setting", "natural", "--out", "o", "--noise-ratio", "0.2"], "only allowed with setting 'random'"),
    (["--setting", "clean", "--name", "../x"], "plain folder name"),
])
def test_cli_prepare_bad_input(tmp_path, extra, match):
    raw = tmp_path / "u.data"
    raw.write_text("1\t2\t5\t10\n")
    with pytest.raises(DDRMError, match=match):
        _run(["data", "prepare", str(raw)] + extra)


def test_cli_stats_bad_folder(tmp_path):
    with pytest.raises(DataError, match="not a prepared dataset folder"):
        _run(["data", "stats", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train_list.npy"):
        _run(["data", "stats", str(tmp_path / "empty")])


# --------------------------------------------------------------------------------------------- real data
@pytest.mark.dataset
def test_prepare_real_ml100k(shared_datasets, tmp_path):
    raw = shared_datasets / "ml-100k-raw" / "u.data"
    if not raw.is_file():
        pytest.skip(f"{raw} not found")
    df = read_ratings(raw)
    assert len(df) == 100_000 and df["user"].nunique() == 943 and df["item"].nunique() == 1682
    folder = prepare(df, tmp_path / "ml-100k_natural", "natural", source=str(raw))
    data, frames = load_with_raw(folder, df)
    assert data.n_users == 943 and data.n_items <= 1682
    stats = table1_stats(data)
    positives = int((df["rating"] >= 4).sum())
    assert stats["train_noisy"] == int((frames["train"]["rating"] < 4).sum()) > 0
    assert len(data.test) <= positives and (frames["test"]["rating"] >= 4).all()
    meta = json.loads((folder / "meta.json").read_text())
    assert stats["interactions"] + meta["counts"]["test_negatives_dropped"] == 100_000
    check_chronology(frames)
    clean = load_prepared(prepare(df, tmp_path / "ml-100k_clean", "clean").name, tmp_path)
    assert clean.n_users <= 943 and len(clean.train) + len(clean.valid) + len(clean.test) == positives
