"""The on-disk result store, shared by the app, the CLI and ``precompute``.

Keyed by (experiment name, config JSON, code version), so a result computed by
one process (a ``precompute`` before class, another app replica) is read by
all, and a code change never serves a stale result. Storage is ``diskcache``
(SQLite-backed, safe across threads and processes, atomic writes, size bound
with least-recently-used eviction): no hand-written file format or locking.

Single flight: :meth:`ResultStore.get_or_compute` takes a per-key file lock
(``filelock``, released by the OS if the holder dies), so when a class asks
for the same cold experiment at once it is computed once; the others wait,
read the computing process's progress from the store, then read the result.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import diskcache
from filelock import FileLock, Timeout

from . import __version__
from .data import cache_dir

DEFAULT_SIZE_LIMIT_BYTES = 512 * 2**20
MEMORY_ENTRIES = 32


def code_version() -> str:
    """A hash of bnviz's own source: any change to the code invalidates old results."""
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# progress_callback(fraction, message, partial) for the computing caller;
# on_wait(fraction, message) for callers waiting on another's computation.
ComputeFn = Callable[[Callable[[float, str, Any], None]], Any]


class ResultStore:
    def __init__(self, directory: Path | str | None = None, size_limit: int = DEFAULT_SIZE_LIMIT_BYTES):
        if directory is None:
            directory = os.environ.get("BNVIZ_RESULTS_DIR") or cache_dir() / "results"
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "locks").mkdir(exist_ok=True)
        self.disk = diskcache.Cache(str(self.directory), size_limit=size_limit, eviction_policy="least-recently-used")
        self.version = code_version()
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._memory_lock = threading.Lock()

    def key(self, name: str, config) -> str:
        return hashlib.sha256(f"{name}|{config.to_json()}|{self.version}".encode()).hexdigest()[:32]

    def get(self, name: str, config):
        key = self.key(name, config)
        with self._memory_lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        result = self.disk.get(("result", key))
        if result is not None:
            self._remember(key, result)
        return result

    def put(self, name: str, config, result) -> None:
        key = self.key(name, config)
        self.disk.set(("result", key), result)
        self._remember(key, result)

    def _remember(self, key, result):
        with self._memory_lock:
            self._memory[key] = result
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def computations(self, name: str, config) -> int:
        """How many times this (config, code version) was computed: 1 under single flight."""
        return int(self.disk.get(("computations", self.key(name, config)), 0))

    def progress(self, name: str, config) -> tuple[float, str]:
        return self.disk.get(("progress", self.key(name, config)), (0.0, "waiting"))

    def get_or_compute(self, name: str, config, compute: ComputeFn, on_wait: Callable[[float, str], None] | None = None):
        """The stored result, or compute it once (across threads and processes) and store it."""
        result = self.get(name, config)
        if result is not None:
            return result
        key = self.key(name, config)
        lock = FileLock(str(self.directory / "locks" / f"{key}.lock"))
        while True:
            try:
                lock.acquire(timeout=0.25)
                break
            except Timeout:
                if on_wait is not None:
                    on_wait(*self.progress(name, config))
        try:
            result = self.get(name, config)  # computed by whoever held the lock
            if result is not None:
                return result
            last_write = [0.0]

            def report(fraction: float, message: str, partial=None):
                now = time.monotonic()
                if now - last_write[0] > 0.2 or fraction >= 1.0:  # waiters poll; no need to write every step
                    self.disk.set(("progress", key), (fraction, message), expire=3600)
                    last_write[0] = now

            result = compute(report)
            self.disk.incr(("computations", key), 1, default=0)
            self.put(name, config, result)
            self.disk.delete(("progress", key))
            return result
        finally:
            lock.release()

    def clear(self) -> None:
        self.disk.clear()
        with self._memory_lock:
            self._memory.clear()
