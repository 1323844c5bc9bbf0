"""How many malloc arenas the daemon's threads share (glibc only).

glibc gives a thread that finds the arena it used locked an arena of its own, up to eight per
core, and memory freed into an arena stays with it. The daemon's threads (the event loop, the
store's reader and writer, the folder's workers) each free megabytes of entry and chunk buffers
into their own, so the resident size grew with the number of threads, not with what they
held: B syncing 300 files of 1 MiB ended at 142-147 MB resident; with two arenas, 132-136 MB;
with one, 123-125 MB (3 runs each, the same minutes, no clear change in time). The threads take
turns at the GIL for most of their work, so they rarely contend for an arena; two leave room
for the work that runs without it (ChaCha20, BLAKE3, SQLite).

``mallopt(M_ARENA_MAX)`` must come before the threads exist: the daemon calls
:func:`limit_arenas` first thing. Elsewhere (musl, macOS) there is no such call and nothing is
done; ``MALLOC_ARENA_MAX`` in the environment, when set, is the user's choice and is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

ARENAS = 2
M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(n: int = ARENAS, env: Mapping[str, str] | None = None) -> bool:
    """Cap glibc's malloc arenas at ``n``; whether it was done."""
    if "MALLOC_ARENA_MAX" in (os.environ if env is None else env):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # glibc's own: another libc's mallopt means something else
    except (OSError, AttributeError):
        return False
    del gnu
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_ARENA_MAX, n) == 1
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", n)
    return done
