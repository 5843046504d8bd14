"""The server's malloc settings and trim: plain Python (no streamlit), so the app, the
benchmarks and the tests run under the same ones."""
from __future__ import annotations

import functools

# glibc's malloc gives each new thread (training runs on worker threads) its own arena and
# keeps what a computation freed for reuse: the server's resident memory then only grows.
# Two arenas, and handing freed pages back after each computation, keep it near what is in
# use (a hosted tier counts resident memory). glibc also raises its mmap threshold to the
# size of each large block freed (up to 32 MiB): after a test-set-sized tensor (31 MB) every
# tensor below that size comes from the arenas, where it fragments them. A fixed threshold
# (which also ends that adjustment) sends tensors of 4 MiB and more (evaluation chunks, whole
# test sets) to their own mappings, returned when freed; training batches stay in the arenas
# (1 MiB made a CNN step ~1.5x slower, from page faults). Measured on the server with CPU
# torch, four light pages in a row (benchmarks/classroom_load.py's pages): 652 -> 578 MiB
# resident, peak 759 -> 668 MiB. No-ops where the C library is not glibc.
M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = -8, -3, -1  # mallopt parameter numbers in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 4 << 20
TRIM_THRESHOLD_BYTES = 8 << 20  # free space kept at a heap's top before glibc hands it back by itself


@functools.lru_cache(maxsize=1)
def glibc():
    """The C library, if it is glibc (it has ``mallopt`` and ``malloc_trim``); else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def limit_malloc_arenas() -> None:
    """The server's settings (above), for the whole process."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 2)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """Hand the pages malloc holds free back to the system (``malloc_trim``)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
