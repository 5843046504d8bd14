"""Data faults (issue 24): a damaged MNIST gives ONE clear message; a damaged tensor cache heals.

The shipped gzips are copied (or linked) into a temporary folder and damaged
there: one flipped byte, a bad CRC, a cut file, a file that is not gzip, the
wrong data; a missing folder; a download that cannot reach its host (the
network calls are replaced, so nothing is ever downloaded). Each is one
``BnvizError`` that names the file and the fix; the CLI prints it as one line
and exits 2, a page shows it in one error box. A truncated, zeroed or
pre-checksum ``mnist-uint8.pt`` is rebuilt from the gzips, and a cache folder
that cannot be written only loses the speed-up.
"""
from __future__ import annotations

import gzip
import logging
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from bnviz import data
from bnviz.errors import BnvizError

LABELS = "t10k-labels-idx1-ubyte"  # the smallest file (10,008 bytes uncompressed)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A private copy of data/mnist (links to the real files) and an empty cache; load_mnist forgets."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in data.MNIST_MD5:
        (folder / f"{name}.gz").symlink_to(data.SHIPPED_MNIST_DIR / f"{name}.gz")
    monkeypatch.setattr(data, "SHIPPED_MNIST_DIR", folder)
    monkeypatch.setenv("BNVIZ_CACHE_DIR", str(tmp_path / "cache"))
    data.load_mnist.cache_clear()
    yield folder
    data.load_mnist.cache_clear()


def damage(folder: Path, name: str, change) -> Path:
    """Replace the link to ``name``'s gzip by a damaged copy: ``change(bytes) -> bytes``."""
    path = folder / f"{name}.gz"
    original = path.read_bytes()
    path.unlink()
    path.write_bytes(change(original))
    return path


def flip_middle_byte(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1 :]


def bad_crc(blob: bytes) -> bytes:
    # gzip's trailer: CRC-32 of the data, then its length (RFC 1952, section 2.3.1)
    return blob[:-8] + bytes([blob[-8] ^ 0x01]) + blob[-7:]


DAMAGES = {
    "one flipped byte": flip_middle_byte,
    "bad CRC": bad_crc,
    "truncated": lambda blob: blob[: len(blob) // 2],
    "empty": lambda blob: b"",
    "not gzip": lambda blob: b"<html>404 Not Found</html>" * 100,
    "other data, valid gzip": lambda blob: gzip.compress(bytes(10_008)),
    "a byte short": lambda blob: gzip.compress(gzip.decompress(blob)[:-1]),
    "a byte too many": lambda blob: gzip.compress(gzip.decompress(blob) + b"\0"),
}


@pytest.mark.parametrize("kind", DAMAGES)
def test_a_damaged_gzip_is_one_message_with_the_fix(shipped, kind):
    path = damage(shipped, LABELS, DAMAGES[kind])
    with pytest.raises(BnvizError) as caught:
        data.read_idx(path, LABELS)
    message = str(caught.value)
    assert str(path) in message and "damaged" in message and "git checkout -- data/mnist" in message
    assert "\n" not in message


def test_a_damaged_gzip_stops_the_load_with_that_message(shipped):
    damage(shipped, LABELS, flip_middle_byte)
    with pytest.raises(BnvizError, match="damaged"):
        data.load_mnist("cpu")


def test_a_missing_data_folder_is_one_message_with_the_fix(tmp_path, monkeypatch, shipped):
    monkeypatch.setattr(data, "SHIPPED_MNIST_DIR", tmp_path / "no-data-folder")
    with pytest.raises(BnvizError, match=r"is missing\. bnviz ships MNIST in data/mnist/: restore the shipped copy with `git checkout -- data/mnist`"):
        data.load_mnist("cpu")


def test_an_unreachable_download_is_one_message(tmp_path, monkeypatch, shipped):
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(data, "SHIPPED_MNIST_DIR", tmp_path / "no-data-folder")
    with pytest.raises(BnvizError) as caught:
        data.load_mnist("cpu", allow_download=True)
    message = str(caught.value)
    assert "is missing" in message and "A download was tried and failed" in message and "connect to the internet" in message


def test_the_cli_prints_a_data_fault_as_one_line(shipped, tmp_path, monkeypatch, capsys):
    from bnviz.__main__ import main

    monkeypatch.setenv("BNVIZ_RESULTS_DIR", str(tmp_path / "results"))
    damage(shipped, LABELS, bad_crc)
    assert main(["run", "home", "--set", "steps=10"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "damaged" in errors[0] and "git checkout" in errors[0]


def test_a_page_shows_a_data_fault_in_one_error_box(shipped, tmp_path, monkeypatch):
    from apptest_helpers import open_page

    damage(shipped, LABELS, lambda blob: blob[:100])
    at = open_page("app_pages/home.py", steps=30, seed=41).run()  # a view no other test has cached
    assert not at.exception
    assert len(at.error) == 1 and "damaged" in at.error[0].value and "git checkout" in at.error[0].value


# ------------------------------------------------------------------ the tensor snapshot

def snapshot_path() -> Path:
    return data.cache_dir() / "mnist" / "mnist-uint8.pt"


@pytest.fixture
def snapshot(shipped) -> Path:
    """A freshly built snapshot in the test's cache (decompressed once from the gzips)."""
    data._load_raw_tensors(False)
    assert snapshot_path().exists()
    return snapshot_path()


def assert_rebuilt(caplog, expected: dict) -> None:
    with caplog.at_level(logging.WARNING, logger="bnviz.data"):
        tensors = data._load_raw_tensors(False)
    assert any("damaged" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert all(torch.equal(tensors[key], expected[key]) for key in expected)
    assert data._read_snapshot(snapshot_path()) is not None, "the rebuilt snapshot is intact"


def test_a_truncated_snapshot_is_rebuilt_from_the_gzips(snapshot, caplog):
    expected = data._read_snapshot(snapshot)
    snapshot.write_bytes(snapshot.read_bytes()[: snapshot.stat().st_size // 3])
    assert_rebuilt(caplog, expected)


def test_zeroed_bytes_in_the_snapshot_are_caught_by_its_checksum(snapshot, caplog):
    expected = data._read_snapshot(snapshot)
    blob = bytearray(snapshot.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 4096] = bytes(4096)  # torch.load alone reads this without complaint
    snapshot.write_bytes(bytes(blob))
    assert_rebuilt(caplog, expected)


def test_a_snapshot_without_checksums_is_rebuilt(snapshot, caplog):
    expected = data._read_snapshot(snapshot)
    torch.save(dict(expected), snapshot)  # what bnviz wrote before the checksums
    assert_rebuilt(caplog, expected)


def test_a_cache_folder_that_cannot_be_written_still_loads(shipped, tmp_path, monkeypatch, caplog):
    (tmp_path / "read-only-checkout").write_text("a file where the cache folder should be")
    monkeypatch.setenv("BNVIZ_CACHE_DIR", str(tmp_path / "read-only-checkout" / "cache"))
    with caplog.at_level(logging.WARNING, logger="bnviz.data"):
        tensors = data._load_raw_tensors(False)
    assert torch.bincount(tensors["test_labels"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert any("not written" in r.getMessage() for r in caplog.records)
