"""load_prepared validation: every malformed prepared folder gives a DataError naming the offending file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ddrm.data import load_prepared, write_prepared
from ddrm.errors import DataError

TRAIN = np.array([[0, 0], [0, 1], [1, 1], [1, 2], [2, 0], [2, 2]], dtype=np.int64)
VALID = np.array([[0, 2], [1, 0]], dtype=np.int64)
TEST = np.array([[2, 1]], dtype=np.int64)


@pytest.fixture
def folder(tmp_path):
    return write_prepared(tmp_path / "ds", TRAIN, VALID, TEST, train_noise=np.zeros(len(TRAIN), dtype=bool),
                          meta={"n_users": 3, "n_items": 3})


def _expect(folder, file: str, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        load_prepared(folder.name, folder.parent)
    message = str(info.value)
    assert str(folder / file) in message or (file == "" and str(folder) in message), message
    assert "\n" not in message


def test_valid_folder_loads(folder):
    data = load_prepared("ds", folder.parent)
    assert (data.n_users, data.n_items) == (3, 3)
    np.testing.assert_array_equal(data.train, TRAIN)
    assert data.train_noise.dtype == np.bool_


def test_write_prepared_refuses_existing(folder):
    with pytest.raises(DataError, match="already exists"):
        write_prepared(folder, TRAIN, VALID, TEST)
    write_prepared(folder, TRAIN, VALID, TEST, overwrite=True)
    assert not (folder / "train_noise.npy").exists()


def test_wrong_dtype(folder):
    np.save(folder / "valid_list.npy", VALID.astype(np.float64))
    _expect(folder, "valid_list.npy", "expected an integer array of shape")


def test_wrong_shape(folder):
    np.save(folder / "train_list.npy", np.zeros((4, 3), dtype=np.int64))
    _expect(folder, "train_list.npy", r"shape \(N, 2\)")


def test_malformed_npy_bytes(folder):
    (folder / "test_list.npy").write_bytes(b"\x93NUMPY garbage")
    _expect(folder, "test_list.npy", "not a readable .npy array")


def test_pickled_object_array_refused(folder):
    np.save(folder / "test_list.npy", np.array([[0, "a"]], dtype=object), allow_pickle=True)
    _expect(folder, "test_list.npy", "not a readable .npy array")


def test_negative_ids(folder):
    np.save(folder / "test_list.npy", np.array([[2, -1]], dtype=np.int64))
    _expect(folder, "test_list.npy", ">= 0")


def test_ids_out_of_range(folder):
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(dict(meta, n_items=2)))
    _expect(folder, "train_list.npy", r"item id 2 out of range \(n_items = 2 from meta.json\)")


def test_non_contiguous_ids(folder):
    (folder / "meta.json").unlink()
    shifted = TRAIN.copy()
    shifted[shifted[:, 1] == 2, 1] = 4  # item ids 0, 1, (2 only in valid), 4: 3 is never used
    np.save(folder / "train_list.npy", shifted)
    _expect(folder, "", "item ids are not contiguous")


def test_test_pair_inside_train(folder):
    np.save(folder / "test_list.npy", np.array([[2, 1], [0, 0]], dtype=np.int64))
    _expect(folder, "test_list.npy", r"also in train_list.npy \(first: user 0, item 0\)")


def test_valid_pair_inside_train(folder):
    np.save(folder / "valid_list.npy", np.array([[0, 1]], dtype=np.int64))
    _expect(folder, "valid_list.npy", "also in train_list.npy")


def test_duplicated_rows(folder):
    np.save(folder / "valid_list.npy", np.array([[0, 2], [0, 2]], dtype=np.int64))
    _expect(folder, "valid_list.npy", "duplicated")


def test_evaluated_user_without_training_history(folder):
    np.save(folder / "train_list.npy", TRAIN[TRAIN[:, 0] != 2])
    _expect(folder, "test_list.npy", "no training history")


def test_bad_train_noise_shape(folder):
    np.save(folder / "train_noise.npy", np.zeros(len(TRAIN) + 1, dtype=bool))
    _expect(folder, "train_noise.npy", r"expected bool array of shape \(6,\)")


def test_bad_train_noise_dtype(folder):
    np.save(folder / "train_noise.npy", np.zeros(len(TRAIN), dtype=np.int64))
    _expect(folder, "train_noise.npy", "expected bool array")


def test_missing_split_file(folder):
    (folder / "valid_list.npy").unlink()
    _expect(folder, "valid_list.npy", "missing")


def test_empty_train(folder):
    np.save(folder / "train_list.npy", np.zeros((0, 2), dtype=np.int64))
    _expect(folder, "train_list.npy", "no training interactions")


def test_bad_meta_json(folder):
    (folder / "meta.json").write_text("{not json")
    _expect(folder, "meta.json", "not valid JSON")


def test_unknown_dataset_lists_available(folder):
    with pytest.raises(DataError, match=r"available in .*\['ds'\]"):
        load_prepared("other", folder.parent)
