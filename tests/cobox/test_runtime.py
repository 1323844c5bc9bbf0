"""cobox.runtime: the daemon's allocator tuning keeps freed buffers for reuse and caps the arenas
(glibc only)."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from cobox import runtime

ROOT = Path(__file__).resolve().parents[2]

# Batches of chunk-sized buffers and an entry-sized one, allocated and freed in turn, as a
# daemon moving a large file does; prints the minor page faults this took.
CHURN = """
import resource, sys
from cobox import runtime
if sys.argv[1] == "tuned":
    assert runtime.tune_allocator()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    batch = [bytearray(80_000 + 997 * k) for k in range(32)]
    entry = bytes(3 << 20)
    del batch, entry
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's cobox
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True,
                         cwd=ROOT, env=env, timeout=60)
    return int(out.stdout)


def test_tuned_allocator_reuses_freed_buffers_instead_of_faulting_them_in_again() -> None:
    if not sys.platform.startswith("linux") or not runtime.tune_allocator():
        pytest.skip("glibc's mallopt only")
    untuned, tuned = _faults("untuned"), _faults("tuned")
    # about 30,000 faults untuned (each batch faulted in and zeroed again), 1,500 tuned
    assert tuned * 4 < untuned, (tuned, untuned)


def test_a_user_setting_in_the_environment_is_left_alone() -> None:
    assert runtime.limit_arenas(env={"MALLOC_ARENA_MAX": "4"}) is False


def test_without_glibc_nothing_is_done(monkeypatch) -> None:
    def no_library(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    assert runtime.limit_arenas(env={}) is False
    assert runtime.tune_allocator() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_threads_share_the_capped_arenas() -> None:
    # In a fresh interpreter: 8 threads each allocating while the others hold their arenas'
    # memory; glibc's malloc_info lists the arenas. Capped at 2, at most 2 exist.
    code = r'''
import ctypes, sys, threading
from cobox import runtime
assert runtime.limit_arenas(int(sys.argv[1]), env={}) is True
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
