"""The daemon caps glibc's malloc arenas (cobox/malloc.py)."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from cobox import malloc


def test_a_user_setting_in_the_environment_is_left_alone() -> None:
    assert malloc.limit_arenas(env={"MALLOC_ARENA_MAX": "4"}) is False


def test_without_glibc_nothing_is_done(monkeypatch) -> None:
    def no_library(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    assert malloc.limit_arenas(env={}) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_threads_share_the_capped_arenas() -> None:
    # In a fresh interpreter: 8 threads each allocating while the others hold their arenas'
    # memory; glibc's malloc_info lists the arenas. Capped at 2, at most 2 exist.
    code = r'''
import ctypes, sys, threading
from cobox import malloc
assert malloc.limit_arenas(int(sys.argv[1]), env={}) is True
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = libc.fdopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fflush.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(8)
def work():
    p = libc.malloc(100_000)
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
f = libc.fdopen(1, b"w")
libc.malloc_info(0, f)
libc.fflush(f)
'''
    for n in (1, 2):
        out = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True,
                             timeout=60, check=True)
        assert 1 <= out.stdout.count("<heap nr=") <= n, out.stdout[:400]
