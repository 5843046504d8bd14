"""The on-disk result store, shared by the app, the CLI and ``precompute``; it heals itself.

Keyed by (experiment name, config JSON, code version), so a result computed by
one process (a ``precompute`` before class, another app replica) is read by
all, and a code change never serves a stale result. Storage is ``diskcache``
(SQLite-backed, safe across threads and processes, atomic writes, size bound
with least-recently-used eviction): no hand-written index or locking.

Single flight: :meth:`ResultStore.get_or_compute` takes a per-key thread lock
(one computation per process) and then a per-key file lock (``filelock``,
released by the OS if the holder dies), so when a class asks for the same cold
experiment at once it is computed once; the others wait, read the computing
process's progress from the store, then read the result.

Faults, and what the store does (``tests/test_cache_faults.py``):

- Every value is stored as an envelope ``MAGIC | sha256(payload) | payload``
  (:class:`ChecksummedDisk`) and the digest is checked before the payload is
  unpickled. A truncated, zeroed or altered value, a missing value file, or a
  value in any other format (an old plain pickle) is logged, dropped and
  recomputed.
- An index that is not an SQLite database any more (an overwritten header,
  "database disk image is malformed") is logged, moved out of the way and
  rebuilt empty; the results are recomputed as they are asked for.
- A folder that cannot be created, opened or written (read-only checkout,
  full disk, permissions) makes the store run in memory only, with ONE notice
  in :attr:`ResultStore.notice` for the page to show; it never raises. A
  read-only folder still serves the results stored in it.
- Locks that cannot be created fall back to the per-key thread lock: still one
  computation per process.

Why pickles, and why they are safe here: results are dataclasses of numpy
arrays, lists, dicts and nested results of many kinds (``TrainResult``,
``Comparison``, the experiments' own result types), so a code-free format
would mean a serialiser per type that every new experiment must extend. The
payload stays a pickle, and the sha256 beside it is *integrity only* (whoever
can write the file can write a matching digest). The security rule is the
folder's ownership: before reading anything the store checks that the folder
and its index are owned by the current user and not writable by group or
others (it creates them so: folder and value sub-folders 0700, index 0600), so
nobody else can place a pickle where it will be loaded. A folder that fails
the check is not read at all: the store runs in memory with a notice saying
how to fix the folder. (Where the OS has no user ids, e.g. Windows, the check
is skipped.)
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import sqlite3
import stat
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW
from filelock import FileLock, Timeout

from . import __version__
from .data import cache_dir

log = logging.getLogger(__name__)

DEFAULT_SIZE_LIMIT_BYTES = 512 * 2**20
# Results kept in memory (the most recently used), ahead of the disk: enough for every result
# of the busiest page and the next one a class opens (a page's script run reads all of its
# results; from disk a 2 MB result takes 15-40 ms to check and unpickle). Unpickled, a result
# takes about 1 MiB of resident memory (measured: 19 of them, 2.8 MB pickled, held 18 MiB):
# 32 of them were ~5 % of the hosted tier's 600 MiB budget.
MEMORY_ENTRIES = 12
INDEX_NAME = diskcache.core.DBNAME  # "cache.db"
ENVELOPE_MAGIC = b"BNVIZ1\n"
DIGEST_BYTES = 32  # sha256
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26  # sqlite3.h primary result codes: the index itself is damaged
LOCK_POLL_SECONDS = 0.25


def code_version() -> str:
    """A hash of bnviz's own source: any change to the code invalidates old results."""
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class CorruptEntry(Exception):
    """A stored value that fails its checksum or is in an unknown format (never unpickled).

    Not an ``OSError``: diskcache treats those as "deleted meanwhile" and would hide it.
    """


def seal(value: Any) -> bytes:
    """``value`` as the stored envelope: ``MAGIC | sha256(payload) | payload`` (payload a pickle)."""
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return ENVELOPE_MAGIC + hashlib.sha256(payload).digest() + payload


def unseal(envelope: bytes) -> Any:
    """The value in ``envelope``; :class:`CorruptEntry` unless its digest matches (checked first)."""
    header = len(ENVELOPE_MAGIC)
    if not envelope.startswith(ENVELOPE_MAGIC) or len(envelope) < header + DIGEST_BYTES:
        raise CorruptEntry(f"not a bnviz envelope ({len(envelope)} bytes)")
    digest, payload = envelope[header : header + DIGEST_BYTES], envelope[header + DIGEST_BYTES :]
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptEntry(f"checksum mismatch ({len(payload)} payload bytes)")
    return pickle.loads(payload)


class ChecksummedDisk(diskcache.Disk):
    """diskcache's serialiser with every value sealed (see :func:`seal`); counters stay raw ints.

    Value files live in sub-folders only the owner can enter (0700), and a value's
    file name must stay inside the store (a tampered index cannot point elsewhere).
    """

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if read or type(value) is int:  # incr()'s counters: plain SQLite integers
            return super().store(value, read, key)
        return super().store(seal(value), False, key)

    def fetch(self, mode, filename, value, read):
        if mode == MODE_RAW and type(value) is int:
            return value
        if mode not in (MODE_RAW, MODE_BINARY) or read:
            raise CorruptEntry(f"stored in diskcache mode {mode}, not as a sealed envelope")
        if filename is not None and (os.path.isabs(filename) or ".." in Path(filename).parts):
            raise CorruptEntry(f"value file {filename!r} points outside the store")
        return unseal(super().fetch(mode, filename, value, False))

    def _write(self, full_path, iterator, mode, encoding=None):
        sub_folder = os.path.dirname(full_path)
        with contextlib.suppress(OSError):  # diskcache makes them too (and retries); here only the mode
            os.makedirs(os.path.dirname(sub_folder), 0o700, exist_ok=True)
            os.makedirs(sub_folder, 0o700, exist_ok=True)
        return super()._write(full_path, iterator, mode, encoding)


def unsafe_reason(directory: Path) -> str | None:
    """Why pickles in ``directory`` must not be loaded (someone else could have written them), or None.

    Checks the folder and its index: owned by this user, not writable by group or others.
    """
    if not hasattr(os, "geteuid"):
        return None
    for path in (directory, directory / INDEX_NAME):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        if info.st_uid != os.geteuid():
            return f"{path} belongs to another user (uid {info.st_uid})"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{path} can be written by other users (mode {stat.filemode(info.st_mode)})"
    return None


def _is_index_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (SQLITE_CORRUPT, SQLITE_NOTADB)


class _ReadOnlyIndex:
    """Reads a diskcache folder that cannot be written: SQLite opened ``mode=ro``, no LRU updates."""

    def __init__(self, directory: Path):
        uri = (directory / INDEX_NAME).resolve().as_uri() + "?mode=ro"
        self._lock = threading.Lock()
        try:
            self._con = self._connect(uri)
        except sqlite3.OperationalError:
            # a WAL index needs its -shm file, which a read-only folder cannot create; nobody can
            # write this folder, so reading it as immutable is safe
            self._con = self._connect(uri + "&immutable=1")
        # keys are found by their pickled bytes: pickle them with the protocol the writer used
        settings = dict(self._con.execute("SELECT key, value FROM Settings").fetchall())
        self.disk = ChecksummedDisk(
            str(directory),
            min_file_size=settings.get("disk_min_file_size", 2**15),
            pickle_protocol=settings.get("disk_pickle_protocol", pickle.HIGHEST_PROTOCOL),
        )

    @staticmethod
    def _connect(uri: str) -> sqlite3.Connection:
        con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        con.execute("SELECT 1 FROM Cache LIMIT 1").fetchall()
        return con

    def get(self, key, default=None, retry=True):  # ``retry`` as diskcache's: nobody writes here to wait for
        db_key, raw = self.disk.put(key)
        with self._lock:
            rows = self._con.execute(
                "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ? AND (expire_time IS NULL OR expire_time > ?)",
                (db_key, raw, time.time()),
            ).fetchall()
        if not rows:
            return default
        try:
            return self.disk.fetch(*rows[0], False)
        except OSError:  # its value file is gone
            return default


# One lock per key for the whole process: every ResultStore in it computes a key once at a time.
_KEY_LOCKS: dict[str, threading.Lock] = {}
_KEY_LOCKS_GUARD = threading.Lock()


def _key_lock(key: str) -> threading.Lock:
    with _KEY_LOCKS_GUARD:
        return _KEY_LOCKS.setdefault(key, threading.Lock())


# progress_callback(fraction, message, partial) for the computing caller;
# on_wait(fraction, message) for callers waiting on another's computation.
ComputeFn = Callable[[Callable[[float, str, Any], None]], Any]


class ResultStore:
    """Results by (name, config, code version): memory, then disk; never raises for a disk fault.

    :attr:`notice` is None while the disk works, else one sentence for the page
    (the store then keeps results in memory only, or serves a read-only folder).
    """

    def __init__(self, directory: Path | str | None = None, size_limit: int = DEFAULT_SIZE_LIMIT_BYTES):
        if directory is None:
            directory = os.environ.get("BNVIZ_RESULTS_DIR") or cache_dir() / "results"
        self.directory = Path(directory)
        self.size_limit = size_limit
        self.version = code_version()
        self.notice: str | None = None
        self.disk: diskcache.Cache | None = None  # writable on-disk store; None when in memory only
        self._reader: diskcache.Cache | _ReadOnlyIndex | None = None
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._memory_progress: dict[str, tuple[float, str]] = {}
        self._memory_computations: Counter[str] = Counter()
        self._memory_lock = threading.Lock()
        self._disk_lock = threading.RLock()  # rebuilding and giving up the disk (a rebuild may give up)
        self._open()

    # ------------------------------------------------------------ opening and healing
    def _open(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            return self._give_up("cannot be created", exc)
        reason = unsafe_reason(self.directory)
        if reason is not None:
            log.warning("result store %s not used: %s", self.directory, reason)
            self.notice = (
                f"Results are not cached: {reason}, and bnviz only loads stored results that nobody else "
                f"could have written. Fix: `chmod -R go-w {self.directory}`, or point BNVIZ_RESULTS_DIR at a private folder."
            )
            return
        try:
            self.disk = self._reader = self._open_cache()
        except sqlite3.DatabaseError as exc:
            if not _is_index_corruption(exc):
                return self._open_read_only(exc)
            self._set_aside_index(exc)
            try:
                self.disk = self._reader = self._open_cache()
            except (OSError, sqlite3.DatabaseError) as again:
                self._give_up("cannot be opened", again)
        except OSError as exc:
            self._open_read_only(exc)

    def _open_cache(self) -> diskcache.Cache:
        index = self.directory / INDEX_NAME
        created = not index.exists()
        disk = diskcache.Cache(str(self.directory), size_limit=self.size_limit, eviction_policy="least-recently-used", disk=ChecksummedDisk)
        if created:
            os.chmod(index, 0o600)  # SQLite gives its -wal and -shm files the index's mode
        (self.directory / "locks").mkdir(mode=0o700, exist_ok=True)
        return disk

    def _open_read_only(self, exc: BaseException) -> None:
        """A folder we cannot write: serve what is stored in it, keep new results in memory."""
        if (self.directory / INDEX_NAME).exists():
            try:
                self._reader = _ReadOnlyIndex(self.directory)
            except sqlite3.DatabaseError as unreadable:
                log.warning("result store %s cannot be read either: %s", self.directory, unreadable)
        self._give_up("cannot be written", exc)

    def _set_aside_index(self, exc: BaseException) -> None:
        """Move a damaged SQLite index out of the way (kept for a post-mortem); a fresh one is made."""
        log.warning("result store index %s is damaged (%s): rebuilding it empty", self.directory / INDEX_NAME, exc)
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        for suffix in ("", "-wal", "-shm"):
            path = self.directory / f"{INDEX_NAME}{suffix}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, path.with_name(f"{path.name}.damaged-{stamp}"))

    def _rebuild_index(self, exc: BaseException, broken) -> None:
        """Replace the damaged index ``broken`` raised from; once, however many threads saw it."""
        with self._disk_lock:
            if broken is self._reader and broken is not self.disk:  # a read-only index: stop reading it
                log.warning("result store index %s is damaged (%s) and read-only: not read any more", self.directory / INDEX_NAME, exc)
                self._reader = None
                return
            if broken is not self.disk:  # another thread rebuilt it already
                return
            # the broken store stays in place until the new one is open: a thread that finds no
            # store in between would take itself for memory-only and not write its result
            with contextlib.suppress(Exception):
                self.disk.close()
            self._set_aside_index(exc)
            try:
                rebuilt = self._open_cache()
            except (OSError, sqlite3.DatabaseError) as again:
                self._give_up("cannot be rebuilt", again)
            else:
                self.disk = self._reader = rebuilt

    def _give_up(self, what: str, exc: BaseException) -> None:
        """Keep results in memory from now on, with one notice (the first fault's)."""
        with self._disk_lock:
            if self.disk is not None:
                with contextlib.suppress(Exception):
                    self.disk.close()
                self.disk = None
                if self._reader is not None and not isinstance(self._reader, _ReadOnlyIndex):
                    self._reader = None
        log.warning("result store %s %s (%s): keeping results in memory only", self.directory, what, exc)
        if self.notice is None:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            served = " Stored results are still served." if self._reader is not None else ""
            self.notice = (
                f"The result cache at {self.directory} {what} ({reason}), so new results are kept in memory "
                f"only and recomputed after a restart.{served} Fix: free space or permissions there, "
                "or set BNVIZ_RESULTS_DIR to a writable folder."
            )

    @contextlib.contextmanager
    def _disk_faults(self, what: str, source) -> Iterator[None]:
        """Turn a fault of ``source`` (the store or the read-only index) inside the block into
        healing (a damaged index) or memory-only mode (anything else)."""
        try:
            yield
        except (sqlite3.DatabaseError, OSError) as exc:
            with self._disk_lock:  # waits out a rebuild in progress
                replaced = source is not self.disk and source is not self._reader
            if replaced:  # e.g. "no such table" from the old store's path while the new one was made
                log.info("result store %s: an operation on the replaced index failed (%s); not a new fault", self.directory, exc)
            elif _is_index_corruption(exc):
                self._rebuild_index(exc, source)
            else:
                self._give_up(what, exc)

    def _with_disk(self, what: str, operation: Callable[[diskcache.Cache], Any]) -> Any:
        """``operation(disk)`` on the writable store; None when there is none or it failed.

        Operations pass ``retry=True``: diskcache's ``Timeout`` means another connection
        holds SQLite's write lock for a moment (busy), not a fault, so it is waited out.
        """
        for _ in range(2):  # once more when the index was rebuilt under this call (by another thread)
            disk = self.disk  # one instance per try: another thread may rebuild or drop it meanwhile
            if disk is None:
                return None
            with self._disk_faults(what, disk):
                return operation(disk)
            if self.disk is disk:
                return None
        return None

    # ------------------------------------------------------------ the public methods
    def key(self, name: str, config) -> str:
        return hashlib.sha256(f"{name}|{config.to_json()}|{self.version}".encode()).hexdigest()[:32]

    def get(self, name: str, config):
        key = self.key(name, config)
        with self._memory_lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        result = self._disk_get(("result", key))
        if result is not None:
            self._remember(key, result)
        return result

    def _disk_get(self, disk_key: tuple[str, str], default=None):
        reader = self._reader
        if reader is None:
            return default
        with self._disk_faults("cannot be read", reader):
            try:
                return reader.get(disk_key, default, retry=True)
            except (CorruptEntry, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
                # sealed but unloadable (a class renamed since): as damaged as a bad checksum
                log.warning("result store %s: dropping damaged entry %s (%s); it will be recomputed", self.directory, disk_key, exc)
                self._disk_delete(disk_key)
        return default

    def _disk_set(self, disk_key: tuple[str, str], value, **options) -> None:
        self._with_disk("cannot be written", lambda disk: disk.set(disk_key, value, retry=True, **options))

    def _disk_delete(self, disk_key: tuple[str, str]) -> None:
        self._with_disk("cannot be written", lambda disk: disk.delete(disk_key, retry=True))

    def put(self, name: str, config, result) -> None:
        key = self.key(name, config)
        self._remember(key, result)
        self._disk_set(("result", key), result)

    def _remember(self, key, result):
        with self._memory_lock:
            self._memory[key] = result
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def computations(self, name: str, config) -> int:
        """How many times this (config, code version) was computed: 1 under single flight."""
        key = self.key(name, config)
        stored = self._disk_get(("computations", key), 0)
        return int(stored if isinstance(stored, int) else 0) + self._memory_computations[key]

    def _count_computation(self, key: str) -> None:
        if self._with_disk("cannot be written", lambda disk: disk.incr(("computations", key), 1, default=0, retry=True)) is None:
            with self._memory_lock:
                self._memory_computations[key] += 1

    def progress(self, name: str, config) -> tuple[float, str]:
        key = self.key(name, config)
        with self._memory_lock:
            if key in self._memory_progress:
                return self._memory_progress[key]
        stored = self._disk_get(("progress", key))
        return stored if isinstance(stored, tuple) and len(stored) == 2 else (0.0, "waiting")

    def get_or_compute(self, name: str, config, compute: ComputeFn, on_wait: Callable[[float, str], None] | None = None):
        """The stored result, or compute it once (across threads and processes) and store it."""
        result = self.get(name, config)
        if result is not None:
            return result
        key = self.key(name, config)
        thread_lock = _key_lock(key)
        self._wait_for(lambda: thread_lock.acquire(timeout=LOCK_POLL_SECONDS), name, config, on_wait)
        try:
            result = self.get(name, config)  # computed by another thread while this one waited
            if result is not None:
                return result
            with self._file_lock(key, name, config, on_wait):
                result = self.get(name, config)  # computed by whoever held the file lock
                if result is not None:
                    return result
                try:
                    result = compute(self._progress_reporter(key))
                finally:  # a failed computation leaves no progress behind either
                    with self._memory_lock:
                        self._memory_progress.pop(key, None)
                self._count_computation(key)
                self.put(name, config, result)
                self._disk_delete(("progress", key))
                return result
        finally:
            thread_lock.release()

    def _wait_for(self, try_acquire: Callable[[], bool], name: str, config, on_wait) -> None:
        while not try_acquire():
            if on_wait is not None:
                on_wait(*self.progress(name, config))

    @contextlib.contextmanager
    def _file_lock(self, key: str, name: str, config, on_wait) -> Iterator[None]:
        """The key's lock across processes; none in memory-only mode (the thread lock suffices)."""
        if self.disk is None:
            yield
            return
        lock = FileLock(str(self.directory / "locks" / f"{key}.lock"))

        def try_acquire() -> bool:
            try:
                lock.acquire(timeout=LOCK_POLL_SECONDS)
                return True
            except Timeout:
                return False

        try:
            self._wait_for(try_acquire, name, config, on_wait)
            locked = True
        except OSError as exc:  # the locks folder cannot be written: single flight within this process only
            log.warning("result store %s: no lock file for %s (%s); computing under this process's lock only", self.directory, key, exc)
            locked = False
        try:
            yield
        finally:
            if locked:
                lock.release()

    def _progress_reporter(self, key: str) -> Callable[..., None]:
        last_write = [0.0]

        def report(fraction: float, message: str, partial=None):
            with self._memory_lock:
                self._memory_progress[key] = (fraction, message)
            now = time.monotonic()
            if now - last_write[0] > 0.2 or fraction >= 1.0:  # waiters poll; no need to write every step
                self._disk_set(("progress", key), (fraction, message), expire=3600)
                last_write[0] = now

        return report

    def clear(self) -> None:
        self._with_disk("cannot be written", lambda disk: disk.clear(retry=True))
        with self._memory_lock:
            self._memory.clear()
            self._memory_progress.clear()
            self._memory_computations.clear()
