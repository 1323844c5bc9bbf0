"""cobox.runtime: the daemon's allocator tuning keeps freed buffers for reuse (glibc only)."""

from __future__ import annotations

import os
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
