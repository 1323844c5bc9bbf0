"""Two devices, two folders, one set of ops: the pure core and the disk helpers end to end,
with a tiny executor standing in for the daemon (chunks kept in a dict instead of feeds)."""

import os
from pathlib import Path

from cobox.entries import decode_op, encode_op
from cobox.folders import dirs
from cobox.folders.apply import move_file, remove_file, write_file
from cobox.folders.chunking import chunk_id, chunks
from cobox.folders.ignore import IgnoreRules
from cobox.folders.merge import FolderState
from cobox.folders.model import DIR_CONTENT, ChunkRef, Op
from cobox.folders.plan import (
    Download,
    Forget,
    MarkSynced,
    MoveLocal,
    RecordDelete,
    RecordPut,
    RemoveLocal,
    Synced,
    plan,
)
from cobox.folders.scan import scan

from .helpers import A, B

SMALL = {"avg": 1024, "min": 256, "max": 4096}


class Device:
    def __init__(self, root: Path, author: bytes, blobs: dict[bytes, bytes], ops: list[tuple[bytes, bytes]]) -> None:
        self.root, self.author, self.blobs, self.feed_log = root, author, blobs, ops
        self.synced: dict[str, Synced] = {}
        self.seen: set[tuple[bytes, bytes]] = set()

    def state(self) -> FolderState:
        return FolderState.merge(decode_op(d, author=a, seq=None) for a, d in self.feed_log if (a, d) in self.seen)

    def sync(self) -> None:
        self.seen.update(self.feed_log)  # "replication": everything appended so far
        self.round()

    def append(self, op: Op) -> None:
        entry = (op.author, encode_op(op))
        self.feed_log.append(entry)
        self.seen.add(entry)

    def round(self) -> None:
        state = self.state()
        rules = IgnoreRules.load(self.root)  # as FolderSync.round does
        local = scan(self.root, rules, want_content=lambda *_: True)
        for a in plan(state, local, self.synced, ignored=rules):
            if dirs.handles(a):  # as FolderSync does, without a feed
                self.directory(a, state)
                state = self.state()
            elif isinstance(a, RecordPut):
                known = state.known_chunks()
                refs = []
                with open(self.root / a.path, "rb") as f:
                    for c in chunks(f, **SMALL):
                        cid = chunk_id(c)
                        if cid not in known:
                            self.blobs[cid] = c  # stored once: dedup by id
                        refs.append(known.get(cid) or ChunkRef(cid, self.author, len(self.blobs), len(c)))
                op = state.put(a.path, a.local.size, a.local.mode, a.local.mtime, tuple(refs), self.author, a.base)
                self.append(op)
                state = self.state()
                self.synced[a.path] = Synced(op.stamp, a.local.size, a.local.mtime, op.content)
            elif isinstance(a, RecordDelete):
                self.append(state.delete(a.path, self.author, a.base))
                state = self.state()
                del self.synced[a.path]
            elif isinstance(a, Download):
                v = a.version
                out = write_file(self.root, a.path, (self.blobs[c.id] for c in v.chunks), size=v.size,
                                 mode=v.mode, mtime=v.mtime, expect=a.replace)
                self.synced[a.path] = Synced(v.stamp, out.size, out.mtime, v.content)
            elif isinstance(a, MoveLocal):
                move_file(self.root, a.src, a.dst, a.expect)
                self.synced.pop(a.src, None)
                self.synced[a.dst] = Synced(a.version.stamp, a.expect.size, a.expect.mtime, a.version.content)
            elif isinstance(a, RemoveLocal):
                remove_file(self.root, a.path, a.expect)
                del self.synced[a.path]
            elif isinstance(a, MarkSynced):
                st = (self.root / a.path).stat()
                self.synced[a.path] = Synced(a.version.stamp, st.st_size, st.st_mtime_ns, a.version.content)
            elif isinstance(a, Forget):
                self.synced.pop(a.path, None)


    def directory(self, a: object, state: FolderState) -> None:
        if isinstance(a, Download | MarkSynced):
            if isinstance(a, Download):
                dirs.make_dir(self.root, a.path, a.version.mode)
            self.synced[a.path] = Synced(a.version.stamp, 0, 0, DIR_CONTENT)
        elif isinstance(a, RemoveLocal):
            dirs.remove_dir(self.root, a.path)
            self.synced.pop(a.path, None)
        elif isinstance(a, RecordPut):
            op = state.mkdir(a.path, a.local.mode, self.author, a.base)
            self.append(op)
            self.synced[a.path] = Synced(op.stamp, 0, 0, DIR_CONTENT)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def settle(*devices: Device) -> None:
    for _ in range(3):
        for d in devices:
            d.sync()


def test_two_devices_converge_with_conflict_copies_and_dedup(tmp_path) -> None:
    blobs: dict[bytes, bytes] = {}
    ops: list[tuple[bytes, bytes]] = []
    a = Device(tmp_path / "a", A, blobs, ops)
    b = Device(tmp_path / "b", B, blobs, ops)
    a.root.mkdir()
    b.root.mkdir()
    big = os.urandom(50_000)
    (a.root / "doc.txt").write_bytes(b"first draft")
    (a.root / "big.bin").write_bytes(big)
    (a.root / "empty").write_bytes(b"")
    (a.root / "ünï").mkdir()
    (a.root / "ünï" / "côde.py").write_bytes(b"print(1)")
    settle(a, b)
    assert tree(a.root) == tree(b.root) and tree(b.root)["big.bin"] == big
    stored = len(blobs)

    # a copy of a big file stores no new chunk
    (b.root / "copy.bin").write_bytes(big)
    settle(b, a)
    assert len(blobs) == stored and tree(a.root)["copy.bin"] == big

    # concurrent edits: both kept, one as a conflict copy, the same on both devices
    (a.root / "doc.txt").write_bytes(b"A's version")
    (b.root / "doc.txt").write_bytes(b"B's longer version")
    os.utime(b.root / "doc.txt", ns=(10**18, 10**18))
    a.round()
    b.round()  # neither saw the other's edit
    settle(a, b)
    files = tree(a.root)
    assert files == tree(b.root)
    conflict = [p for p in files if ".conflict-" in p]
    assert len(conflict) == 1 and {files["doc.txt"], files[conflict[0]]} == {b"A's version", b"B's longer version"}

    # delete on one side vs edit on the other: the edit survives
    os.remove(a.root / "ünï" / "côde.py")
    (b.root / "ünï" / "côde.py").write_bytes(b"print(2)")
    a.round()
    b.round()
    settle(a, b)
    assert tree(a.root)["ünï/côde.py"] == b"print(2)" == tree(b.root)["ünï/côde.py"]

    # a plain delete propagates, and history can bring it back
    os.remove(b.root / "big.bin")
    settle(b, a)
    assert "big.bin" not in tree(a.root)
    state = a.state()
    old = next(v for v in state.history("big.bin") if not v.deleted)
    a.append(state.restore("big.bin", old.stamp, A))
    settle(a, b)
    assert tree(b.root)["big.bin"] == big and tree(a.root) == tree(b.root)

