"""The folder merge alone: time to merge N operations from scratch, time per incremental op,
and memory per op, for ``FolderState`` (and, with ``--before REV``, for the merge of a
former commit, loaded from git, in the same run).

    python bench/merge.py [--ops 100000] [--incremental 2000] [--before 66ae607]

The ops are a folder's life as three devices make it: 70% new files, 20% edits of a file
(based on the version shown), 5% deletions, 5% renames, one 4 KiB chunk per file, paths in
directories of 100 files; already decoded (the decoder is not measured here). Prints one JSON
line per implementation:

- ``merge_s``, ``merge_cpu_s``: all ops at once, from scratch (wall clock, and this process's
  CPU time, which a loaded machine disturbs less);
- ``merge_frozen_cpu_s``: all ops as ``FolderSync`` merges them, in batches of ``MERGE_BATCH``
  with ``gc.freeze()`` after each, so CPython's full collections do not walk the growing
  state again and again (today's merge only);
- ``add_us_per_op``: CPU time of one more op on top, median of ``--incremental`` ops (for the
  former merge each is a full merge, so it is measured over 3 ops only);
- ``bytes_per_op``: tracemalloc, what the merged state holds once the op objects are dropped,
  divided by the number of ops; ``bytes_per_op_with_ops``: the same with the decoded op
  objects still alive (what the daemon held before, when ``FolderSync`` kept every op);
- ``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _util import peak_rss_mb, report

from cobox.folders.merge import FolderState
from cobox.folders.model import ChunkRef, Delete, Op, Put
from cobox.folders.sync import MERGE_BATCH

DEVICES = [bytes([d]) * 32 for d in (0xAA, 0xBB, 0xCC)]
T0 = 1_700_000_000 * 10**9


def life(n: int, seed: int = 1) -> list[Op]:
    """``n`` ops of a plausible folder history (see the module docstring)."""
    rnd = random.Random(seed)
    state = FolderState()
    shown: list[str] = []
    ops: list[Op] = []
    feeds = [os.urandom(32) for _ in DEVICES]
    for k in range(n):
        d = rnd.randrange(len(DEVICES))
        author, clock = DEVICES[d], state.next_clock()
        r = rnd.random()
        ref = (ChunkRef(rnd.randbytes(32), feeds[d], k, 4096),)
        op: Op
        if r < 0.7 or len(shown) < 10:
            path = f"dir{k // 100}/file{k}.txt"
            op = Put(path, 4096, 0o644, T0 + k, ref, clock, author, state.head(path))
            shown.append(path)
        else:
            i = rnd.randrange(len(shown))
            path = shown[i]
            if r < 0.9:
                op = Put(path, 4096, 0o644, T0 + k, ref, clock, author, state.head(path))
            else:
                shown[i] = shown[-1]
                shown.pop()
                if r < 0.95:
                    op = Delete(path, clock, author, state.head(path))
                else:
                    op = state.rename(path, path + ".moved", author)
                    shown.append(op.dst)
        state.update([op])
        ops.append(op)
    return ops


def load_before(rev: str) -> Any:
    """``cobox.folders.merge`` as it was at ``rev`` (read with git, imported beside today's)."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "-C", str(root), "show", f"{rev}:cobox/folders/merge.py"],
                          check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "merge_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("cobox.folders.merge_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(name: str, cls: Any, ops: list[Op], incremental: int, incremental_mode: str) -> None:
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    state = cls.merge(ops[:-incremental])
    merge_s, merge_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    per_op = []
    for op in ops[-incremental:]:
        c0 = time.process_time()
        state = state.update([op]) if incremental_mode == "update" else state.add([op])
        per_op.append(time.process_time() - c0)
    assert len(state.files) > 0
    del state
    frozen_cpu_s = None
    if incremental_mode == "update":  # as FolderSync merges: batches of MERGE_BATCH, gc.freeze() after each
        gc.collect()
        c0 = time.process_time()
        state = cls()
        for k in range(0, len(ops), MERGE_BATCH):
            state.update(ops[k:k + MERGE_BATCH])
            gc.freeze()
        frozen_cpu_s = round(time.process_time() - c0, 3)
        del state
        gc.unfreeze()
        gc.collect()
    # memory: what a merge of the same ops holds once the ops are dropped (all allocations traced)
    n = len(ops)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    copies = life(n)
    gc.collect()
    state = cls.merge(copies)
    gc.collect()
    with_ops = tracemalloc.get_traced_memory()[0] - before
    del copies
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    report(bench="merge", impl=name, ops=n, files=len(state.files), merge_s=round(merge_s, 3),
           merge_cpu_s=round(merge_cpu_s, 3), merge_frozen_cpu_s=frozen_cpu_s,
           add_us_per_op=round(statistics.median(per_op) * 1e6, 1), bytes_per_op=round(held / n),
           bytes_per_op_with_ops=round(with_ops / n),
           peak_rss_mb=peak_rss_mb())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=100_000)
    p.add_argument("--incremental", type=int, default=2000, help="ops added one at a time after the merge")
    p.add_argument("--before", default="", help="also measure the merge of this git revision (e.g. 66ae607)")
    args = p.parse_args()
    ops = life(args.ops)
    measure("incremental", FolderState, ops, args.incremental, "update")
    if args.before:
        old = load_before(args.before)
        measure(f"before {args.before}", old.FolderState, ops, 3, "add")


if __name__ == "__main__":
    sys.exit(main())
