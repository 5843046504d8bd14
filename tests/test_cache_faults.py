"""The result store heals itself (issue 24, cache faults a-f).

Each test damages a real store the way a deployment does (a read-only folder,
one that cannot be created, a full disk, an overwritten SQLite header, a
truncated, zeroed or foreign value) and asserts what a visitor then gets: the
right numbers (from the store, or recomputed once), at most one notice, never
an exception. Runs as root too: where root's rights would hide a read-only
folder, SQLite is opened ``mode=ro`` as it is for any other user.
"""
from __future__ import annotations

import errno
import logging
import os
import pickle
import sqlite3
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import diskcache
import numpy as np
import pytest

import bnviz.cache as cache_module
from bnviz.cache import INDEX_NAME, ResultStore, seal, unseal
from bnviz.config import Config

SMALL = 3  # floats: a value kept inside the SQLite index
LARGE = 20_000  # floats (160 kB): a value in its own file (diskcache's threshold is 32 kB)


@dataclass(frozen=True)
class Toy(Config):
    value: int = 1


def curve(value: int, size: int) -> np.ndarray:
    return np.full(size, float(value))


class Computer:
    """A compute function that counts its calls, as get_or_compute would call it."""

    def __init__(self, value: int, size: int):
        self.value, self.size, self.calls = value, size, 0

    def __call__(self, report):
        self.calls += 1
        report(0.5, "half way")
        return curve(self.value, self.size)


def filled_store(directory: Path, size: int = LARGE, values=(1,)) -> ResultStore:
    store = ResultStore(directory)
    for value in values:
        store.put("toy", Toy(value), curve(value, size))
    return store


def fresh(directory: Path) -> ResultStore:
    """A new process's view of the folder (no results in memory)."""
    return ResultStore(directory)


def row(store: ResultStore, value: int = 1) -> tuple[str | None, bytes | None]:
    """(value file, value blob) of a stored result, read straight from the index."""
    db_key, raw = store.disk.disk.put(("result", store.key("toy", Toy(value))))
    with sqlite3.connect(store.directory / INDEX_NAME) as con:
        return con.execute("SELECT filename, value FROM Cache WHERE key = ? AND raw = ?", (db_key, raw)).fetchone()


def set_blob(store: ResultStore, blob: bytes, value: int = 1) -> None:
    db_key, raw = store.disk.disk.put(("result", store.key("toy", Toy(value))))
    with sqlite3.connect(store.directory / INDEX_NAME) as con:
        con.execute("UPDATE Cache SET value = ? WHERE key = ? AND raw = ?", (sqlite3.Binary(blob), db_key, raw))


def assert_heals(directory: Path, caplog, value: int = 1, size: int = LARGE) -> None:
    """A fresh store drops the damaged entry (logged), recomputes it once, stores it again."""
    store = fresh(directory)
    with caplog.at_level(logging.WARNING, logger="bnviz.cache"):
        assert store.get("toy", Toy(value)) is None
    assert any("damaged" in record.getMessage() for record in caplog.records), [r.getMessage() for r in caplog.records]
    compute = Computer(value, size)
    result = store.get_or_compute("toy", Toy(value), compute)
    assert compute.calls == 1 and np.array_equal(result, curve(value, size))
    assert store.notice is None
    again = fresh(directory).get("toy", Toy(value))
    assert again is not None and np.array_equal(again, curve(value, size))


# ------------------------------------------------------------------ the envelope

def test_envelope_round_trips_and_rejects_every_damage():
    envelope = seal({"curve": curve(2, 10)})
    assert np.array_equal(unseal(envelope)["curve"], curve(2, 10))
    zeroed = envelope[:60] + bytes(8) + envelope[68:]
    for damaged in (envelope[:-1], envelope[:20], b"", zeroed, pickle.dumps(curve(2, 10))):
        with pytest.raises(cache_module.CorruptEntry):
            unseal(damaged)


# ------------------------------------------------------------------ (a) read-only folder

@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only: permissions for a normal user; for root (whom they do not
    stop) SQLite opens the index ``mode=ro`` and file writes under it fail, as they would."""
    folders: list[Path] = []

    def make(folder: Path) -> Path:
        for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        folders.append(folder.resolve())
        return folder

    def inside(path) -> bool:
        return any(Path(path).resolve().is_relative_to(folder) for folder in folders)

    if os.geteuid() == 0:
        connect, write = sqlite3.connect, diskcache.Disk._write

        def read_only_connect(database, *args, **kwargs):
            if not kwargs.get("uri") and inside(database):
                return connect(Path(database).resolve().as_uri() + "?mode=ro", *args, uri=True, **kwargs)
            return connect(database, *args, **kwargs)

        monkeypatch.setattr(diskcache.core.sqlite3, "connect", read_only_connect)

        def refuse_write(self, full_path, *args, **kwargs):
            if not inside(full_path):
                return write(self, full_path, *args, **kwargs)
            raise PermissionError(errno.EACCES, "Permission denied", full_path)

        monkeypatch.setattr(diskcache.Disk, "_write", refuse_write)
    yield make
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_folder_serves_what_it_holds_and_computes_the_rest_in_memory(tmp_path, read_only):
    filled_store(tmp_path / "store", values=(1,)).disk.close()
    read_only(tmp_path / "store")
    store = fresh(tmp_path / "store")
    assert store.notice is not None and "cannot be written" in store.notice and "still served" in store.notice
    assert np.array_equal(store.get("toy", Toy(1)), curve(1, LARGE))  # the stored result: no recompute
    compute = Computer(2, SMALL)
    assert np.array_equal(store.get_or_compute("toy", Toy(2), compute), curve(2, SMALL))
    assert np.array_equal(store.get_or_compute("toy", Toy(2), compute), curve(2, SMALL))
    assert compute.calls == 1 and store.computations("toy", Toy(2)) == 1
    notice = store.notice
    store.put("toy", Toy(3), curve(3, LARGE))  # another failed write: still the one notice
    assert store.notice == notice


def test_a_read_only_folder_without_an_index_runs_in_memory(tmp_path, read_only):
    (tmp_path / "store").mkdir(mode=0o700)
    read_only(tmp_path / "store")
    store = fresh(tmp_path / "store")
    assert store.notice is not None and "still served" not in store.notice
    compute = Computer(4, SMALL)
    assert np.array_equal(store.get_or_compute("toy", Toy(4), compute), curve(4, SMALL)) and compute.calls == 1


def test_single_flight_holds_in_memory_only_mode(tmp_path, read_only):
    (tmp_path / "store").mkdir(mode=0o700)
    read_only(tmp_path / "store")
    calls = []
    started = threading.Barrier(6)

    def compute(report):
        calls.append(1)
        threading.Event().wait(0.3)
        return {"answer": 42}

    results = []
    store = fresh(tmp_path / "store")  # one per process, as the app keeps it

    def visit():
        started.wait()
        results.append(store.get_or_compute("toy", Toy(5), compute))

    threads = [threading.Thread(target=visit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results == [{"answer": 42}] * 6


def test_lock_files_that_cannot_be_made_fall_back_to_the_process_lock(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "locks")

    monkeypatch.setattr(cache_module.FileLock, "acquire", refuse)
    compute = Computer(6, SMALL)
    threads = [threading.Thread(target=lambda: fresh(tmp_path).get_or_compute("toy", Toy(6), compute)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert compute.calls == 1 and np.array_equal(fresh(tmp_path).get("toy", Toy(6)), curve(6, SMALL))


# ------------------------------------------------------------------ (b) a folder that cannot be created

def test_a_folder_that_cannot_be_created_runs_in_memory_with_one_notice(tmp_path):
    (tmp_path / "checkout").write_text("a file where the cache folder should go")
    store = ResultStore(tmp_path / "checkout" / "results")  # mkdir fails for root too
    assert store.notice is not None and "cannot be created" in store.notice and "BNVIZ_RESULTS_DIR" in store.notice
    compute = Computer(7, SMALL)
    assert np.array_equal(store.get_or_compute("toy", Toy(7), compute), curve(7, SMALL))
    assert np.array_equal(store.get("toy", Toy(7)), curve(7, SMALL)) and compute.calls == 1
    assert store.progress("toy", Toy(7)) == (0.0, "waiting")
    store.clear()
    assert store.get("toy", Toy(7)) is None


# ------------------------------------------------------------------ (c) a full disk

def test_a_full_disk_keeps_the_result_in_memory(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)

    def disk_full(self, full_path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), full_path)

    monkeypatch.setattr(diskcache.Disk, "_write", disk_full)  # a large value's file
    compute = Computer(8, LARGE)
    result = store.get_or_compute("toy", Toy(8), compute)  # trained, then the write fails
    assert np.array_equal(result, curve(8, LARGE)) and compute.calls == 1
    assert store.notice is not None and "No space left on device" in store.notice
    assert np.array_equal(store.get_or_compute("toy", Toy(8), compute), curve(8, LARGE)) and compute.calls == 1


def test_a_full_index_keeps_the_result_in_memory(tmp_path):
    store = ResultStore(tmp_path)
    store.put("toy", Toy(9), curve(9, SMALL))
    (pages,) = store.disk._con.execute("PRAGMA page_count").fetchone()
    store.disk._con.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    compute = Computer(10, 5_000)  # 40 kB pickled -> a file, but the index row needs a page too
    small = Computer(11, 2_000)  # 16 kB: inside the index
    assert np.array_equal(store.get_or_compute("toy", Toy(11), small), curve(11, 2_000))
    assert np.array_equal(store.get_or_compute("toy", Toy(10), compute), curve(10, 5_000))
    assert store.notice is not None and "full" in store.notice
    assert np.array_equal(store.get("toy", Toy(9)), curve(9, SMALL))
    assert small.calls == 1 and compute.calls == 1


def test_reads_that_fail_on_a_full_disk_compute_instead(tmp_path, monkeypatch):
    filled_store(tmp_path, values=(12,)).disk.close()

    def full(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(diskcache.Cache, "get", full)
    store = fresh(tmp_path)
    compute = Computer(12, LARGE)
    assert np.array_equal(store.get_or_compute("toy", Toy(12), compute), curve(12, LARGE))
    assert compute.calls == 1 and store.notice is not None and "cannot be read" in store.notice


# ------------------------------------------------------------------ (d) an overwritten SQLite header

def test_an_overwritten_sqlite_header_is_set_aside_and_rebuilt(tmp_path, caplog):
    filled_store(tmp_path, values=(1, 2)).disk.close()
    with open(tmp_path / INDEX_NAME, "r+b") as index:
        index.write(b"this is not SQLite" * 6)  # the 100-byte header and more
    with caplog.at_level(logging.WARNING, logger="bnviz.cache"):
        store = fresh(tmp_path)
    assert store.notice is None and any("damaged" in r.getMessage() for r in caplog.records)
    assert list(tmp_path.glob(f"{INDEX_NAME}.damaged-*")), "the damaged index is kept for a post-mortem"
    compute = Computer(1, LARGE)
    assert np.array_equal(store.get_or_compute("toy", Toy(1), compute), curve(1, LARGE)) and compute.calls == 1
    assert np.array_equal(fresh(tmp_path).get("toy", Toy(1)), curve(1, LARGE))


def test_an_index_damaged_while_open_is_rebuilt(tmp_path, caplog):
    store = filled_store(tmp_path, values=(1,))
    with open(tmp_path / INDEX_NAME, "r+b") as index:
        index.write(bytes(100))
    answers = []
    # diskcache keeps a connection per thread: a new thread opens the damaged file
    with caplog.at_level(logging.WARNING, logger="bnviz.cache"):
        thread = threading.Thread(target=lambda: answers.append(fresh_memory(store).get("toy", Toy(1))))
        thread.start()
        thread.join()
    assert answers == [None] and any("damaged" in r.getMessage() for r in caplog.records)
    compute = Computer(1, LARGE)
    assert np.array_equal(store.get_or_compute("toy", Toy(1), compute), curve(1, LARGE)) and compute.calls == 1
    assert store.notice is None


def test_threads_that_all_meet_a_damaged_index_rebuild_it_once(tmp_path):
    store = filled_store(tmp_path, values=(1,))
    with open(tmp_path / INDEX_NAME, "r+b") as index:
        index.write(bytes(100))
    start = threading.Barrier(4)
    computes = [Computer(1, LARGE) for _ in range(4)]

    def visit(compute):
        start.wait()
        store.get_or_compute("toy", Toy(2), compute)  # each thread opens its own connection

    threads = [threading.Thread(target=visit, args=(compute,)) for compute in computes]
    store._memory.clear()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list(tmp_path.glob(f"{INDEX_NAME}.damaged-*"))) == 1, "one rebuild, not one per thread"
    assert sum(c.calls for c in computes) == 1 and store.notice is None
    assert np.array_equal(fresh(tmp_path).get("toy", Toy(2)), curve(1, LARGE))


def fresh_memory(store: ResultStore) -> ResultStore:
    """The same open store with its memory emptied (as another session on the server would miss it)."""
    store._memory.clear()
    return store


# ------------------------------------------------------------------ (e) truncated or foreign values

def test_a_truncated_value_file_is_dropped_and_recomputed(tmp_path, caplog):
    store = filled_store(tmp_path)
    filename, _ = row(store)
    path = tmp_path / filename
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_heals(tmp_path, caplog)


def test_a_truncated_value_in_the_index_is_dropped_and_recomputed(tmp_path, caplog):
    store = filled_store(tmp_path, size=SMALL)
    _, blob = row(store)
    set_blob(store, blob[: len(blob) - 7])
    assert_heals(tmp_path, caplog, size=SMALL)


def test_a_missing_value_file_is_recomputed(tmp_path):
    store = filled_store(tmp_path)
    filename, _ = row(store)
    (tmp_path / filename).unlink()
    compute = Computer(1, LARGE)
    assert np.array_equal(fresh(tmp_path).get_or_compute("toy", Toy(1), compute), curve(1, LARGE)) and compute.calls == 1


class Explodes:
    """Unpickling this runs code: what a planted pickle would do."""

    ran: list = []

    def __reduce__(self):
        return (Explodes.ran.append, ("code ran",))


def test_a_plain_pickle_in_the_store_is_never_unpickled(tmp_path, caplog):
    store = filled_store(tmp_path, size=SMALL)
    plain = diskcache.Cache(str(tmp_path))  # diskcache's own pickling, as the old store wrote
    plain.set(("result", store.key("toy", Toy(1))), Explodes())
    plain.set(("result", store.key("toy", Toy(2))), Explodes(), read=False)
    plain.close()
    assert_heals(tmp_path, caplog, size=SMALL)
    assert Explodes.ran == []


# ------------------------------------------------------------------ (f) zeroed or altered bytes

def test_zeroed_bytes_in_a_value_file_are_detected(tmp_path, caplog):
    store = filled_store(tmp_path)
    filename, _ = row(store)
    data = bytearray((tmp_path / filename).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeros inside the array: a plain pickle would load 0.0s silently
    (tmp_path / filename).write_bytes(bytes(data))
    assert_heals(tmp_path, caplog)


def test_an_altered_value_in_the_index_is_detected(tmp_path, caplog):
    store = filled_store(tmp_path, size=SMALL)
    _, blob = row(store)
    altered = bytearray(blob)
    altered[-12] ^= 0x01  # one bit of one float
    set_blob(store, bytes(altered))
    assert_heals(tmp_path, caplog, size=SMALL)


# ------------------------------------------------------------------ ownership: no pickles from a shared folder

def test_a_folder_others_can_write_is_not_read(tmp_path):
    filled_store(tmp_path / "store", size=SMALL).disk.close()
    (tmp_path / "store").chmod(0o777)
    store = fresh(tmp_path / "store")
    assert store.get("toy", Toy(1)) is None and store.disk is None
    assert store.notice is not None and "written by other users" in store.notice and "chmod" in store.notice
    compute = Computer(1, SMALL)
    assert np.array_equal(store.get_or_compute("toy", Toy(1), compute), curve(1, SMALL)) and compute.calls == 1


def test_a_folder_of_another_user_is_not_read(tmp_path):
    filled_store(tmp_path / "store", size=SMALL).disk.close()
    try:
        os.chown(tmp_path / "store", os.geteuid() + 1, -1)
    except PermissionError:
        pytest.skip("only root can give a folder away")
    store = fresh(tmp_path / "store")
    assert store.get("toy", Toy(1)) is None and "another user" in store.notice


def test_the_store_creates_its_folder_and_index_private(tmp_path):
    store = filled_store(tmp_path / "new" / "store")
    filename, _ = row(store)
    value_folder = (store.directory / filename).parent
    for path in (store.directory, store.directory / INDEX_NAME, value_folder, value_folder.parent):
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    assert cache_module.unsafe_reason(store.directory) is None


# ------------------------------------------------------------------ the page's one notice

def test_the_page_shows_the_store_notice_once_per_session():
    from streamlit.testing.v1 import AppTest

    def page():
        from types import SimpleNamespace

        from bnviz.app import show_store_notice

        store = SimpleNamespace(notice="The result cache at /x cannot be written (Read-only file system).")
        show_store_notice(store)
        show_store_notice(store)  # a page that runs two experiments

    at = AppTest.from_function(page).run()
    assert [w.value for w in at.warning] == ["The result cache at /x cannot be written (Read-only file system)."]
    at.run()
    assert len(at.warning) == 0 and not at.exception
