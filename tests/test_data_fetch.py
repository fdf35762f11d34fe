"""fetch() against a local HTTP server, ensure_dataset(), and ``ddrm data fetch``."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ddrm.data import fetch as fetch_module
from ddrm.data import load_prepared
from ddrm.data.commands import add_data_parser
from ddrm.data.fetch import ensure_dataset, fetch
from ddrm.errors import DataError

U_DATA = "".join(f"{u}\t{i}\t{(u * i) % 5 + 1}\t{1000 + u * 37 + i}\n" for u in range(1, 21) for i in range(1, 16))


def _zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serves a folder on 127.0.0.1 with ml-100k.zip (u.data under ml-100k/), bad.zip (not a zip), evil.zip."""
    root = tmp_path_factory.mktemp("www")
    (root / "ml-100k.zip").write_bytes(_zip_bytes({"ml-100k/u.data": U_DATA, "ml-100k/README": "readme"}))
    (root / "bad.zip").write_bytes(b"this is not a zip file")
    (root / "evil.zip").write_bytes(_zip_bytes({"../escape.txt": "x", "ml-100k/u.data": U_DATA}))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, root
    httpd.shutdown()
    httpd.server_close()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _leftovers(data_dir: Path) -> list[str]:
    raw = data_dir / "raw"
    return sorted(p.name for p in raw.iterdir()) if raw.exists() else []


def test_fetch_ok_extracts(server, tmp_path):
    base, root = server
    path = fetch("ml-100k", tmp_path, url=f"{base}/ml-100k.zip", md5=_md5(root / "ml-100k.zip"))
    assert path == tmp_path / "raw" / "ml-100k" / "u.data"
    assert path.read_text() == U_DATA and (path.parent / "README").is_file()
    assert _leftovers(tmp_path) == ["ml-100k"]
    # already there: no download (an unreachable URL would fail otherwise)
    assert fetch("ml-100k", tmp_path, url="http://127.0.0.1:9/none.zip") == path


def test_fetch_sha256_and_env_mirror(server, tmp_path, monkeypatch):
    base, root = server
    monkeypatch.setenv("DDRM_FETCH_BASE_URL", base + "/")
    assert fetch_module.dataset_url("ml-100k") == f"{base}/ml-100k.zip"
    sha = hashlib.sha256((root / "ml-100k.zip").read_bytes()).hexdigest()
    path = fetch("ml-100k", tmp_path, sha256=sha)
    assert path.read_text() == U_DATA


def test_fetch_default_checksum_is_the_published_md5(server, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.setenv("DDRM_FETCH_BASE_URL", base)
    with pytest.raises(DataError, match="md5 mismatch \\(expected 0e33842e24a9c977be4e0107933c0723"):
        fetch("ml-100k", tmp_path)
    assert _leftovers(tmp_path) == []


def test_fetch_wrong_checksum_leaves_nothing(server, tmp_path):
    base, _ = server
    url = f"{base}/ml-100k.zip"
    with pytest.raises(DataError) as info:
        fetch("ml-100k", tmp_path, url=url, md5="0" * 32)
    assert url in str(info.value) and "mismatch" in str(info.value) and "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


def test_fetch_unreachable_port(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ml-1m.zip"
    with pytest.raises(DataError, match=f"download of {url} failed") as info:
        fetch("ml-1m", tmp_path, url=url, timeout=5)
    assert "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


def test_fetch_http_404_bad_zip_and_unsafe_zip(server, tmp_path):
    base, root = server
    with pytest.raises(DataError, match="HTTP 404"):
        fetch("ml-100k", tmp_path, url=f"{base}/missing.zip")
    with pytest.raises(DataError, match="not a valid zip"):
        fetch("ml-100k", tmp_path, url=f"{base}/bad.zip", md5=_md5(root / "bad.zip"))
    with pytest.raises(DataError, match="unsafe member path"):
        fetch("ml-100k", tmp_path, url=f"{base}/evil.zip", md5=_md5(root / "evil.zip"))
    with pytest.raises(DataError, match="holds no ratings.dat"):
        fetch("ml-1m", tmp_path, url=f"{base}/ml-100k.zip", md5=_md5(root / "ml-100k.zip"))
    assert _leftovers(tmp_path) == []
    assert not (tmp_path.parent / "escape.txt").exists()


def test_fetch_refuses_foreign_folder(tmp_path):
    (tmp_path / "raw" / "ml-1m").mkdir(parents=True)
    (tmp_path / "raw" / "ml-1m" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists but holds no ratings.dat"):
        fetch("ml-1m", tmp_path, url="http://127.0.0.1:9/x.zip")
    assert (tmp_path / "raw" / "ml-1m" / "notes.txt").read_text() == "mine"


def test_fetch_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'ml-20m'"):
        fetch("ml-20m", tmp_path)


def test_ensure_dataset_from_prebuilt_raw(tmp_path):
    raw = tmp_path / "raw" / "ml-100k"
    raw.mkdir(parents=True)
    (raw / "u.data").write_text(U_DATA)
    ensure_dataset("ml-100k_noisy", tmp_path)
    data = load_prepared("ml-100k_noisy", tmp_path)
    assert data.meta["setting"] == "natural" and data.meta["ratios"] == [0.7, 0.1, 0.2]
    assert data.train_noise.any()
    stamp = (tmp_path / "ml-100k_noisy" / "train_list.npy").stat().st_mtime_ns
    ensure_dataset("ml-100k_noisy", tmp_path)  # present: untouched
    assert (tmp_path / "ml-100k_noisy" / "train_list.npy").stat().st_mtime_ns == stamp
    ensure_dataset("ml-100k_clean", tmp_path)
    assert load_prepared("ml-100k_clean", tmp_path).meta["setting"] == "clean"


def test_ensure_dataset_keeps_existing_folder(tmp_path):
    folder = tmp_path / "ml-1m_noisy"
    folder.mkdir()
    np.save(folder / "train_list.npy", np.zeros((1, 2), dtype=np.int64))
    ensure_dataset("ml-1m_noisy", tmp_path)  # no raw file, no network: nothing to do
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-1m_noisy"]


def test_ensure_dataset_fetches_when_raw_missing(server, tmp_path, monkeypatch):
    base, root = server
    monkeypatch.setenv("DDRM_FETCH_BASE_URL", base)
    monkeypatch.setitem(fetch_module.DATASETS["ml-100k"], "md5", _md5(root / "ml-100k.zip"))
    ensure_dataset("ml-100k_natural", tmp_path)
    assert (tmp_path / "raw" / "ml-100k" / "u.data").is_file()
    assert load_prepared("ml-100k_natural", tmp_path).n_users == 20


def test_ensure_dataset_unknown_name(tmp_path):
    (tmp_path / "tiny").mkdir()
    np.save(tmp_path / "tiny" / "train_list.npy", np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(DataError, match=r"available: \['tiny'\]; buildable on demand: \['ml-1m_noisy'"):
        ensure_dataset("ml-1m_random", tmp_path)


def test_cli_fetch(server, tmp_path, capsys):
    base, root = server
    parser = argparse.ArgumentParser(prog="ddrm")
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "fetch", "ml-100k", "--data-dir", str(tmp_path), "--url",
                              f"{base}/ml-100k.zip", "--md5", _md5(root / "ml-100k.zip")])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "raw" / "ml-100k" / "u.data")
    args = parser.parse_args(["data", "fetch", "ml-100k", "--data-dir", str(tmp_path), "--url",
                              f"{base}/ml-100k.zip", "--md5", "f" * 32, "--force"])
    with pytest.raises(DataError, match="mismatch"):
        args.func(args)
    assert (tmp_path / "raw" / "ml-100k" / "u.data").read_text() == U_DATA  # the old copy survives
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "fetch", "ml-20m"])
