"""Process-wide tuning of a daemon's runtime: glibc's allocator.

Theory of operation
-------------------
A daemon moving a large file allocates and frees many buffers of 64 KiB to 4 MiB a second
(chunks, entries, messages). glibc serves allocations above its mmap threshold (128 KiB at
first, raised as they are freed) with fresh ``mmap`` s, and gives the free top of a heap back
to the kernel above its trim threshold (twice the mmap threshold), so the same bytes are
faulted in and zeroed by the kernel again and again (``clear_page_erms`` among the daemons' top
kernel symbols; on a VM, memory the guest gave back may be faulted in by the host as well).
``tune_allocator`` fixes both thresholds (``mallopt``): allocations up to ``MMAP_THRESHOLD``
come from the heap, and up to ``TRIM_THRESHOLD`` of free memory at a heap's top is kept for the
next ones. Measured on the 256 MiB one-file bench: A's minor page faults 83,000 -> 13,000, B's
23,000 -> 4,700; peak RSS 108 -> 121 MB (A) and 83 -> 87 MB (B).

It also caps glibc's arenas at ``ARENAS`` (``M_ARENA_MAX``). glibc gives a thread that finds
the arena it used locked an arena of its own, up to eight per core, and memory freed into an
arena stays with it. The daemon's threads (the event loop, the store's reader and writer, the
folder's workers) each free megabytes of entry and chunk buffers into their own, so the resident
size grew with the number of threads, not with what they held: B syncing 300 files of 1 MiB
ended at 142-160 MB resident; with two arenas, 129-138 MB; with one, 123-125 MB (3 runs each,
the same minutes, no clear change in time). The threads take turns at the GIL for most of their
work, so they rarely contend for an arena; two leave room for the work that runs without it.
The cap must come before the threads exist; ``MALLOC_ARENA_MAX`` in the environment, when set,
is the user's choice and is left alone.

It is a no-op where the C library has no ``mallopt`` (not glibc): nothing depends on it. The
daemon process calls it once, at start (:func:`cobox.main.make_daemon`, before any thread);
tests that run a daemon in their own process do not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Mapping

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 8 * 1024 * 1024  # above the largest feed entry (4 MiB)
TRIM_THRESHOLD = 64 * 1024 * 1024  # free heap top kept for reuse
ARENAS = 2  # malloc arenas the daemon's threads share


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None  # no mallopt: not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt  # type: ignore[no-any-return]


def tune_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds and cap its arenas (see the module docstring);
    whether the thresholds could be set."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    limit_arenas()
    mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim_ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return mmap_ok == 1 and trim_ok == 1


def limit_arenas(n: int = ARENAS, env: Mapping[str, str] | None = None) -> bool:
    """Cap glibc's malloc arenas at ``n`` unless ``MALLOC_ARENA_MAX`` is set; whether it was done."""
    if "MALLOC_ARENA_MAX" in (os.environ if env is None else env):
        return False
    mallopt = _mallopt()
    return mallopt is not None and mallopt(M_ARENA_MAX, n) == 1
