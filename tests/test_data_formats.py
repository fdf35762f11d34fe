"""Tab-separated ``user item rating [timestamp]`` files (formats uirt / uir), chronological vs seeded random splits,
the split kind in meta.json / InteractionData, and the amazon-hin / yelp-hin dataset presets (small generated
files; the real raw files in ../shared/datasets at the end, skipped when absent)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from ddrm.data import load_prepared, write_prepared
from ddrm.data import presets as presets_module
from ddrm.data import prepared as prepared_module
from ddrm.data.commands import add_data_parser
from ddrm.data.fetch import ensure_dataset
from ddrm.data.presets import build_preset, find_raw
from ddrm.data.raw import detect_format, read_ratings
from ddrm.data.split import prepare, table1_stats
from ddrm.errors import ConfigError, DataError

ALLOWED = "3 fields (user item rating) or 4 fields (user item rating timestamp)"
FILES = ("train_list.npy", "valid_list.npy", "test_list.npy", "train_noise.npy", "valid_noise.npy",
         "user_ids.npy", "item_ids.npy", "meta.json")


def make_lines(n_users: int = 30, n_items: int = 50, seed: int = 0, timestamps: bool = True) -> list[str]:
    """Ratings lines (no trailing newline): users with 1..25 items, ratings 1..5, day timestamps with many ties."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=int(rng.integers(1, 26)), replace=False):
            fields = [str(u + 1), str(i + 1), str(int(rng.integers(1, 6)))]
            if timestamps:
                fields.append(str(86400 * int(rng.integers(0, 4))))  # four days: same-day ties everywhere
            lines.append("\t".join(fields))
    return lines


def write_lines(path, lines: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def shuffled(lines: list[str], seed: int) -> list[str]:
    return [lines[k] for k in np.random.default_rng(seed).permutation(len(lines))]


def file_bytes(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def raw_frames(folder, df: pd.DataFrame):
    """Per split, the raw rows (rating, timestamp) of the prepared pairs, in file order."""
    data = load_prepared(folder.name, folder.parent)
    user_ids, item_ids = np.load(folder / "user_ids.npy"), np.load(folder / "item_ids.npy")
    raw = df.set_index(["user", "item"])
    frames = {}
    for split in ("train", "valid", "test"):
        pairs = data.split(split)
        keys = pd.MultiIndex.from_arrays([user_ids[pairs[:, 0]], item_ids[pairs[:, 1]]], names=["user", "item"])
        frames[split] = raw.reindex(keys).reset_index()
        assert frames[split]["rating"].notna().all()
    return data, frames


# --------------------------------------------------------------------------------------------- formats
def test_format_detected_from_the_number_of_columns(tmp_path):
    four = write_lines(tmp_path / "four.dat", ["1\t10\t5\t100", "1\t20\t3\t200"])
    three = write_lines(tmp_path / "three.dat", ["1\t10\t5", "1\t20\t3"])
    assert detect_format(four) == "uirt" and detect_format(three) == "uir"
    assert detect_format(write_lines(tmp_path / "u.data", ["1\t10\t5\t100"])) == "ml-100k"  # by name, as before
    df4, df3 = read_ratings(four), read_ratings(three)
    assert list(df3.columns) == ["user", "item", "rating", "timestamp"] and df3["timestamp"].dtype == np.int64
    assert df4["timestamp"].tolist() == [100, 200] and df4.attrs.get("has_timestamp", True)
    assert df3["timestamp"].tolist() == [0, 0] and df3.attrs["has_timestamp"] is False
    assert df3["rating"].tolist() == [5.0, 3.0] and df3["item"].tolist() == ["10", "20"]
    pd.testing.assert_frame_equal(read_ratings(four, fmt="uirt"), read_ratings(four, fmt="ml-100k"))
    pd.testing.assert_frame_equal(read_ratings(three, fmt="uir"), df3)


@pytest.mark.parametrize("fmt, text, match", [
    ("auto", "1\t10\t5\t100\t7\n", r"line 1: found 5 tab-separated fields"),
    ("auto", "\n\n1\t10\n", r"line 3: found 2 tab-separated fields"),
    ("auto", "1\t10\t5\n1\t20\tgood\n", r"line 2: rating 'good' is not a number"),
    ("auto", "1\t10\t5\t100\n1\t20\tx\t200\n", r"line 2: rating 'x' is not a number"),
    ("auto", "", r"empty file \(no ratings\)"),
    ("auto", "\n \n", r"empty file \(no ratings\)"),
    ("auto", "1\t10\t5\t100\n1\t20\t3\n", r"line 2: expected 4 tab-separated fields, found 3"),
    ("auto", "1\t10\t5\n\n1\t20\t3\t200\n", r"line 3: expected 3 tab-separated fields, found 4"),
    ("auto", "1\t10\t5\n1\t20\t3\t200\t9\n", r"line 2: expected 3 tab-separated fields, found 5"),
    ("uir", "1\t10\t5\t100\n", r"line 1: expected 3 tab-separated fields, found 4"),
    ("uirt", "1\t10\t5\n", r"line 1: expected 4 tab-separated fields, found 3"),
    ("ml-100k", "1\t10\t5\n", r"line 1: expected 4 tab-separated fields, found 3"),
])
def test_bad_tab_input_is_one_clear_line(tmp_path, fmt, text, match):
    path = tmp_path / "ratings.tsv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_ratings(path, fmt=fmt)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    if "fields" in match:  # a column-count error says what is allowed
        assert ALLOWED in message


# --------------------------------------------------------------------------------------------- chronological
def test_same_day_ties_are_broken_by_item_id(tmp_path):
    # one user, ten positives on one day, ids whose text order differs from their numeric order
    items = [10, 2, 33, 4, 5, 100, 7, 8, 9, 1]
    path = write_lines(tmp_path / "r.dat", [f"7\t{i}\t5\t86400" for i in items])
    folder = prepare(read_ratings(path), tmp_path / "out", "natural")
    data, frames = raw_frames(folder, read_ratings(path))
    assert [int(i) for i in frames["train"]["item"]] == [1, 2, 4, 5, 7, 8, 9]
    assert [int(i) for i in frames["valid"]["item"]] == [10]
    assert [int(i) for i in frames["test"]["item"]] == [33, 100]
    assert data.split_kind == "chronological" and data.split_seed is None


def test_chronological_split_does_not_depend_on_line_order(tmp_path):
    lines = make_lines()
    path = tmp_path / "user_item.dat"
    outputs = []
    for k, order in enumerate([lines, shuffled(lines, 1), shuffled(lines, 2)]):
        write_lines(path, order)  # the same path: meta.json's "source" is the same too
        outputs.append(file_bytes(prepare(read_ratings(path), tmp_path / f"o{k}", "natural")))
    assert outputs[0] == outputs[1] == outputs[2]
    meta = json.loads(outputs[0]["meta.json"])
    assert meta["split_kind"] == "chronological" and meta["split_seed"] is None and "item id" in meta["split_order"]


# --------------------------------------------------------------------------------------------- random
def test_random_split_is_seeded_and_independent_of_line_order(tmp_path):
    lines = make_lines(timestamps=False)
    path = tmp_path / "user_business.dat"
    write_lines(path, lines)
    first = prepare(read_ratings(path), tmp_path / "s0", "natural", seed=0)
    write_lines(path, shuffled(lines, 5))
    again = prepare(read_ratings(path), tmp_path / "s0b", "natural", seed=0)
    other = prepare(read_ratings(path), tmp_path / "s1", "natural", seed=1)
    assert file_bytes(first) == file_bytes(again)
    assert not np.array_equal(np.load(first / "train_list.npy"), np.load(other / "train_list.npy"))
    for folder, seed in ((first, 0), (other, 1)):
        data = load_prepared(folder.name, folder.parent)
        assert (data.split_kind, data.split_seed, data.split_label) == ("random", seed, f"random (seed {seed})")
        assert data.meta["split_seed"] == seed and table1_stats(data)["split"] == f"random (seed {seed})"


def test_random_split_on_timestamped_data_and_chronological_refused_without_timestamps(tmp_path):
    dated = read_ratings(write_lines(tmp_path / "a.dat", make_lines()))
    chrono = prepare(dated, tmp_path / "c", "natural")
    rand = prepare(dated, tmp_path / "r", "natural", split="random", seed=3)
    assert load_prepared("r", tmp_path).split_kind == "random"
    assert not np.array_equal(np.load(chrono / "train_list.npy"), np.load(rand / "train_list.npy"))
    undated = read_ratings(write_lines(tmp_path / "b.dat", make_lines(timestamps=False)))
    with pytest.raises(DataError, match="no timestamps.*chronological split is impossible"):
        prepare(undated, tmp_path / "x", "natural", split="chronological")
    with pytest.raises(ConfigError, match="unknown split 'sorted'"):
        prepare(undated, tmp_path / "x", "natural", split="sorted")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------- 7:1:2, noise flags
@pytest.mark.parametrize("timestamps", [True, False])
def test_712_per_user_and_noise_flags(tmp_path, timestamps):
    path = write_lines(tmp_path / "r.dat", make_lines(n_users=60, seed=4, timestamps=timestamps))
    df = read_ratings(path)
    folder = prepare(df, tmp_path / "out", "natural", seed=2)
    data, frames = raw_frames(folder, df)
    # cut points on the user's full history: b1 = max(1, round(.7 n)), b2 = round(.8 n); test negatives dropped
    n = df.groupby("user").size()
    n_train, n_valid = frames["train"].groupby("user").size(), frames["valid"].groupby("user").size()
    n_test_all = n - n_train - n_valid.reindex(n.index, fill_value=0)
    for user, total in n.items():
        b1 = max(1, int(np.floor(total * 0.7 + 0.5)))
        b2 = max(b1, int(np.floor(total * 0.8 + 0.5)))
        assert n_train[user] == b1 and n_valid.get(user, 0) == b2 - b1 and n_test_all[user] == total - b2
    positives = df[df["rating"] >= 4].groupby("user").size()
    assert len(data.test) <= positives.sum() and (frames["test"]["rating"] >= 4).all()
    np.testing.assert_array_equal(data.train_noise, frames["train"]["rating"].to_numpy() < 4)
    np.testing.assert_array_equal(np.load(folder / "valid_noise.npy"), frames["valid"]["rating"].to_numpy() < 4)
    assert data.train_noise.any() and not data.train_noise.all()
    assert data.n_users == df["user"].nunique()  # nobody dropped: every user has a train row
    total = len(df)
    assert abs(len(data.train) / total - 0.7) < 0.03 and abs(len(data.valid) / total - 0.1) < 0.03


# --------------------------------------------------------------------------------------------- split kind on load
def test_split_kind_defaults_for_older_folders(tmp_path):
    train, valid, test = np.array([[0, 0], [1, 1]]), np.array([[0, 1]]), np.array([[1, 0]])
    write_prepared(tmp_path / "bare", train, valid, test)
    write_prepared(tmp_path / "old", train, valid, test, meta={"split_rule": "per user by (timestamp, item); ..."})
    bare, old = load_prepared("bare", tmp_path), load_prepared("old", tmp_path)
    assert (bare.split_kind, bare.split_seed, bare.split_label) == ("unspecified", None, "unspecified")
    assert (old.split_kind, old.split_label) == ("chronological", "chronological (ties: item id)")
    assert table1_stats(bare)["split"] == "unspecified"


# --------------------------------------------------------------------------------------------- presets
@pytest.fixture
def small_presets(tmp_path, monkeypatch):
    """amazon-hin / yelp-hin presets pointing at small generated raw files under ``tmp_path/shared``."""
    shared = tmp_path / "shared"
    for source, name, timestamps in (("amazon-hin", "user_item.dat", True), ("yelp-hin", "user_business.dat", False)):
        preset = presets_module.PRESETS[source]
        path = write_lines(shared / preset.folder / name, make_lines(seed=7, timestamps=timestamps))
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        monkeypatch.setitem(presets_module.PRESETS, source, dataclasses.replace(preset, md5=md5))
    monkeypatch.setenv("DDRM_SHARED_DATASETS", str(shared))
    monkeypatch.setattr(presets_module, "_roots", lambda data_dir: [data_dir, shared])
    return shared


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ddrm")
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prepare_presets(small_presets, tmp_path, capsys):
    data_dir = tmp_path / "data"
    assert _run(["data", "prepare", "amazon-hin_noisy", "--data-dir", str(data_dir)]) == 0
    assert _run(["data", "prepare", "yelp-hin_noisy", "--data-dir", str(data_dir), "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert str(data_dir / "amazon-hin_noisy") in out and "chronological (ties: item id)" in out
    assert str(data_dir / "yelp-hin_noisy") in out and "random (seed 4)" in out
    amazon, yelp = load_prepared("amazon-hin_noisy", data_dir), load_prepared("yelp-hin_noisy", data_dir)
    assert amazon.meta["dataset"] == "amazon-hin_noisy" and amazon.meta["raw_format"] == "uirt"
    assert amazon.meta["setting"] == "natural" and amazon.split_kind == "chronological"
    assert yelp.meta["raw_format"] == "uir" and (yelp.split_kind, yelp.split_seed) == ("random", 4)
    assert yelp.meta["source"] == str(small_presets / "yelp-hin-raw" / "user_business.dat")
    assert sorted(p.name for p in data_dir.iterdir()) == ["amazon-hin_noisy", "yelp-hin_noisy"]  # no temp left
    assert _run(["data", "stats", "yelp-hin_noisy", "--data-dir", str(data_dir)]) == 0
    assert "random (seed 4)" in capsys.readouterr().out
    # --raw, --out, and an existing output
    raw = small_presets / "amazon-hin-raw" / "user_item.dat"
    assert _run(["data", "prepare", "amazon-hin_clean", "--raw", str(raw), "--out", str(tmp_path / "c")]) == 0
    assert load_prepared("c", tmp_path).meta["setting"] == "clean"
    with pytest.raises(DataError, match="already exists"):
        _run(["data", "prepare", "amazon-hin_noisy", "--data-dir", str(data_dir)])
    # ensure_dataset (ddrm train --dataset ...) builds a preset on demand
    ensure_dataset("yelp-hin_noisy", tmp_path / "other")
    assert load_prepared("yelp-hin_noisy", tmp_path / "other").split_seed == 0


@pytest.mark.parametrize("extra, error, match", [
    (["--setting", "random"], ConfigError, "built with --setting natural, not random"),
    (["--format", "uir"], ConfigError, "built with --format uirt, not uir"),
    (["--split", "random"], ConfigError, "built with --split chronological, not random"),
    (["--noise-ratio", "0.2"], ConfigError, "no --noise-ratio"),
    (["--name", "../x"], ConfigError, "plain folder name"),
    (["--raw", "/nonexistent/user_item.dat"], DataError, "no such raw file"),
])
def test_cli_preset_bad_options(small_presets, tmp_path, extra, error, match):
    with pytest.raises(error, match=match):
        _run(["data", "prepare", "amazon-hin_noisy", "--data-dir", str(tmp_path / "d")] + extra)
    assert not (tmp_path / "d").exists()


def test_preset_errors(small_presets, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="--raw goes with a dataset name"):
        _run(["data", "prepare", str(small_presets / "amazon-hin-raw" / "user_item.dat"), "--name", "a",
              "--setting", "natural", "--raw", "x"])
    with pytest.raises(ConfigError, match="needs --setting"):
        _run(["data", "prepare", str(small_presets / "amazon-hin-raw" / "user_item.dat"), "--name", "a"])
    with pytest.raises(ConfigError, match="unknown dataset name 'amazon_noisy'"):
        find_raw("amazon_noisy", tmp_path)
    monkeypatch.setattr(presets_module, "_roots", lambda data_dir: [data_dir])
    with pytest.raises(DataError, match=r"raw file of yelp-hin_noisy not found; looked at .*pass --raw PATH"):
        build_preset("yelp-hin_noisy", tmp_path / "empty")
    other = write_lines(tmp_path / "user_business.dat", make_lines(seed=9, timestamps=False))
    with pytest.raises(DataError, match="is not the published"):
        build_preset("yelp-hin_noisy", tmp_path / "d", raw=other)
    assert not (tmp_path / "d").exists() and not (tmp_path / "empty").exists()


def test_cli_prepare_raw_path_split_option(tmp_path):
    raw = write_lines(tmp_path / "stars.tsv", make_lines(timestamps=False))
    assert _run(["data", "prepare", str(raw), "--out", str(tmp_path / "a"), "--setting", "noisy", "--seed", "2"]) == 0
    assert load_prepared("a", tmp_path).split_label == "random (seed 2)"
    with pytest.raises(DataError, match="chronological split is impossible"):
        _run(["data", "prepare", str(raw), "--out", str(tmp_path / "b"), "--setting", "natural",
              "--split", "chronological"])
    dated = write_lines(tmp_path / "dated.tsv", make_lines())
    assert _run(["data", "prepare", str(dated), "--out", str(tmp_path / "c"), "--setting", "clean",
                 "--split", "random", "--format", "uirt"]) == 0
    assert load_prepared("c", tmp_path).split_kind == "random"
    assert not (tmp_path / "b").exists()


def test_read_only_data_dir_is_refused_even_for_root(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(DataError, match=f"cannot write {locked / 'sub' / 'x'}: {locked} is read-only"):
            write_prepared(locked / "sub" / "x", np.array([[0, 0]]), np.zeros((0, 2)), np.zeros((0, 2)))
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_preset_write_failure_leaves_nothing(small_presets, tmp_path, monkeypatch):
    real_save = np.save

    def failing_save(path, array, *args, **kwargs):
        if str(path).endswith("test_list.npy"):
            raise OSError(28, "No space left on device")
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(prepared_module.np, "save", failing_save)
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="cannot write .*No space left on device"):
        build_preset("amazon-hin_noisy", tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


# --------------------------------------------------------------------------------------------- real raw files
def _real_raw(shared_datasets, folder: str, name: str):
    path = shared_datasets / folder / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.dataset
def test_real_amazon_hin(shared_datasets, tmp_path):
    raw = _real_raw(shared_datasets, "amazon-hin-raw", "user_item.dat")
    folder = build_preset("amazon-hin_noisy", tmp_path, raw=raw)
    df = read_ratings(raw)
    assert len(df) == 195_791 and df["user"].nunique() == 6_170 and df["item"].nunique() == 2_753
    data, frames = raw_frames(folder, df)
    assert (data.n_users, data.n_items, data.split_kind) == (6_170, 2_753, "chronological")
    counts = data.meta["counts"]
    assert len(data.train) + len(data.valid) + len(data.test) + counts["test_negatives_dropped"] == 195_791
    np.testing.assert_array_equal(data.train_noise, frames["train"]["rating"].to_numpy() < 4)
    assert (frames["test"]["rating"] >= 4).all()
    # chronological per user, same-day ties by item id: (timestamp, item) of train < valid < test
    key = {s: f.assign(k=f["timestamp"] * 10**6 + f["item"].astype(int)).groupby("user")["k"]
           for s, f in frames.items()}
    for early, late in (("train", "valid"), ("valid", "test"), ("train", "test")):
        last, first = key[early].max(), key[late].min()
        both = last.index.intersection(first.index)
        assert (last[both] < first[both]).all()
    # shuffled input lines: byte-identical output
    lines = raw.read_text().splitlines()
    copy = write_lines(tmp_path / "shuffled" / "user_item.dat", shuffled(lines, 0))
    again = prepare(read_ratings(copy), tmp_path / "again", "natural", source=str(raw), split="chronological",
                    extra_meta={k: data.meta[k] for k in ("dataset", "raw_format", "source_md5")})
    assert file_bytes(again) == file_bytes(folder)


@pytest.mark.dataset
def test_real_yelp_hin(shared_datasets, tmp_path):
    raw = _real_raw(shared_datasets, "yelp-hin-raw", "user_business.dat")
    folder = build_preset("yelp-hin_noisy", tmp_path, raw=raw)
    df = read_ratings(raw)
    assert len(df) == 198_397 and df["user"].nunique() == 16_239 and df.attrs["has_timestamp"] is False
    data, frames = raw_frames(folder, df)
    assert data.n_users == 16_239 and (data.split_kind, data.split_seed) == ("random", 0)
    np.testing.assert_array_equal(data.train_noise, frames["train"]["rating"].to_numpy() < 4)
    assert (frames["test"]["rating"] >= 4).all()
    assert abs(data.train_noise.mean() - 0.324) < 0.01
    same = build_preset("yelp-hin_noisy", tmp_path, raw=raw, out=tmp_path / "same")
    other = build_preset("yelp-hin_noisy", tmp_path, raw=raw, out=tmp_path / "other", seed=1)
    assert file_bytes(same) == file_bytes(folder)
    assert not np.array_equal(np.load(other / "train_list.npy"), np.load(folder / "train_list.npy"))
