"""Apply remote changes to the local disk, atomically and without clobbering local writes.

Theory of operation
-------------------
``write_file(root, path, data, ...)`` writes a file from an iterator of chunk bytes:

1. check the parents of ``path`` are real directories (``lstat``, no symlink anywhere below
   ``root``: a peer's path must not write through a local symlink), creating missing ones;
2. check the target is what the plan expected (``expect``: size and mtime of the file it may
   replace, or ``None``: nothing may be there), else ``FileChangedError``;
3. write a temp file ``.cobox-tmp-<random>`` in the same directory (``O_EXCL``, mode 0600),
   stream the chunks into it, check the size, ``fsync``, set mode and mtime; the mode keeps
   only the rwx bits (``0o777``) allowed by the process umask: a peer never makes a file
   setuid, setgid or sticky;
4. check ``expect`` again (the window left is between this check and the rename), then
   ``os.replace`` the temp file onto the target and ``fsync`` the directory.

``finish_file`` does the same for a temp file already holding the first chunks, elsewhere under
``root`` (the receiver's spool, ``spool.py``): it appends the rest.

``write_files`` does the same for a batch of small files with two file-system syncs for the
whole batch instead of two fsyncs per file: every temp file is written (and given its mode and
mtime), then ``sync_fs`` (``syncfs(2)`` of the file system holding ``root``; where it is not
available, an fsync of each temp file), then each is checked and renamed, then ``sync_fs``
again (the renames). One path's failure is returned for that path; the others go on.

``write_file`` and ``finish_file`` start the writeback of what they write as they go, and all
three drop a synced file's pages from the page cache (``writeback.py``: a download does not fill
the cache, and its fresh pages were its largest cost). Any exception removes the temp file and
leaves the old file untouched; a crash (kill -9) may leave a temp file, which scans ignore and
``clean_temp`` removes. ``remove_file`` and ``move_file`` make the same ``expect`` check;
``move_file`` refuses to replace an existing target.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cobox.errors import FileChangedError, UnsafePathError

from .paths import TMP_PREFIX, normalize_path
from .plan import LocalFile
from .writeback import DROP_AFTER, Flusher, drop

_umask_lock = threading.Lock()


def umask() -> int:
    """The process umask (read from /proc without changing it, where possible)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # the portable way sets it for a moment
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode(mode: int) -> int:
    """The permission bits a file written from a peer's ``mode`` gets."""
    return mode & 0o777 & ~umask()


def checked_path(root: Path, path: str, create: bool) -> Path:
    """``root/path`` with every parent checked to be a real directory, not a symlink (made if
    ``create``): nothing a peer names is written or removed through a link."""
    parts = normalize_path(path).split("/")
    d = root
    for part in parts[:-1]:
        d = d / part
        try:
            st = d.lstat()
        except FileNotFoundError:
            if not create:
                raise
            d.mkdir()
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{d} is not a directory (a symlink or a file): not touching {path!r}")
    return d / parts[-1]


def _check(target: Path, expect: LocalFile | None) -> None:
    try:
        st = target.lstat()
    except FileNotFoundError:
        if expect is not None:
            raise FileChangedError(f"{target} vanished since it was indexed") from None
        return
    if expect is None:
        raise FileChangedError(f"{target} appeared since the folder was indexed")
    if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (expect.size, expect.mtime):
        raise FileChangedError(f"{target} changed since it was indexed (it may be being written)")


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(root: Path, path: str, data: Iterable[bytes], *, size: int, mode: int, mtime: int,
               expect: LocalFile | None) -> LocalFile:
    """Atomically make ``root/path`` hold ``data``; return what was written (for ``Synced``)."""
    target = checked_path(root, path, create=True)
    _check(target, expect)
    tmp = target.with_name(f"{TMP_PREFIX}{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            written = 0
            flusher = Flusher(f.fileno())
            for piece in data:
                f.write(piece)
                written += len(piece)
                if flusher.due(written):
                    f.flush()
                    flusher.wrote(written)
            if written != size:
                raise ValueError(f"{path!r}: got {written} bytes, expected {size}")
            f.flush()
            os.fsync(f.fileno())
            drop(f.fileno(), written)
        return _install(tmp, target, mode, mtime, expect)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def finish_file(root: Path, path: str, tmp: Path, rest: Iterable[bytes], *, size: int, mode: int, mtime: int,
                expect: LocalFile | None) -> LocalFile:
    """``write_file`` for a temp file already holding the first bytes (``tmp``, under ``root``:
    the spool's, ``spool.py``): append ``rest``, check the size, sync it, and move it to
    ``root/path`` with the same checks. The temp file is gone afterwards, whatever happens."""
    try:
        target = checked_path(root, path, create=True)
        _check(target, expect)
        with open(tmp, "ab") as f:
            written = os.fstat(f.fileno()).st_size
            flusher = Flusher(f.fileno(), written)
            for piece in rest:
                f.write(piece)
                written += len(piece)
                if flusher.due(written):
                    f.flush()
                    flusher.wrote(written)
            f.flush()
            written = os.fstat(f.fileno()).st_size
            if written != size:
                raise ValueError(f"{path!r}: got {written} bytes, expected {size}")
            os.fsync(f.fileno())
            drop(f.fileno(), written)
        out = _install(tmp, target, mode, mtime, expect)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if tmp.parent != target.parent:
        _fsync_dir(tmp.parent)
    return out


def _install(tmp: Path, target: Path, mode: int, mtime: int, expect: LocalFile | None) -> LocalFile:
    """Give the synced temp file its mode and mtime, check ``expect`` again, rename it onto
    ``target`` and sync the directory."""
    os.chmod(tmp, file_mode(mode))
    os.utime(tmp, ns=(mtime, mtime))
    _check(target, expect)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    st = target.lstat()
    return LocalFile(st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))


def sync_fs(root: Path, fds_or_paths: Iterable[Path], root_fd: int | None = None) -> None:
    """Make everything written under ``root`` durable: ``syncfs(2)``, else an fsync of each
    path given and of their directories. ``root_fd``: ``root`` opened *before* the writes (a
    file system's writeback error is reported to the descriptors opened before it, and only
    once to one opened after: a batch syncing beside another one would miss it)."""
    if _syncfs is not None:
        fd = os.open(root, os.O_RDONLY) if root_fd is None else root_fd
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            if root_fd is None:
                os.close(fd)
    dirs = set()
    for p in fds_or_paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dirs.add(p.parent)
    for d in dirs:
        _fsync_dir(d)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_syncfs = _load_syncfs()


@dataclass(frozen=True)
class FileWrite:
    """One file of a ``write_files`` batch: what ``write_file`` takes, the data held in memory."""

    path: str
    data: list[bytes]
    size: int
    mode: int
    mtime: int
    expect: LocalFile | None


def write_files(root: Path, files: list[FileWrite]) -> list[LocalFile | Exception]:
    """Atomically write a batch of small files (see the module docstring); per file, what was
    written or why not (``FileChangedError``, ``OSError``, ``UnsafePathError``, ...)."""
    root_fd = os.open(root, os.O_RDONLY)  # before any write: see sync_fs
    try:
        return _write_files(root, files, root_fd)
    finally:
        os.close(root_fd)


def _write_files(root: Path, files: list[FileWrite], root_fd: int) -> list[LocalFile | Exception]:
    out: list[LocalFile | Exception] = []
    temps: list[tuple[int, Path, Path]] = []  # (index, temp, target)
    for k, w in enumerate(files):
        tmp = None
        try:
            target = checked_path(root, w.path, create=True)
            _check(target, w.expect)
            if sum(map(len, w.data)) != w.size:
                raise ValueError(f"{w.path!r}: got {sum(map(len, w.data))} bytes, expected {w.size}")
            tmp = target.with_name(f"{TMP_PREFIX}{secrets.token_hex(8)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                for piece in w.data:
                    f.write(piece)
            os.chmod(tmp, file_mode(w.mode))
            os.utime(tmp, ns=(w.mtime, w.mtime))
        except Exception as e:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            out.append(e)
            continue
        out.append(e_placeholder)
        temps.append((k, tmp, target))
    try:
        sync_fs(root, [t for _, t, _ in temps], root_fd)
        for k, tmp, _ in temps:  # synced: their pages may go (writeback.py)
            if files[k].size >= DROP_AFTER:
                with contextlib.suppress(OSError):
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        drop(fd, files[k].size)
                    finally:
                        os.close(fd)
        for k, tmp, target in temps:
            try:
                _check(target, files[k].expect)
                os.replace(tmp, target)
                st = target.lstat()
                out[k] = LocalFile(st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
            except Exception as e:
                out[k] = e
        sync_fs(root, [target for k, _, target in temps if isinstance(out[k], LocalFile)], root_fd)
    finally:
        for k, tmp, _ in temps:
            if out[k] is e_placeholder or isinstance(out[k], Exception):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    return out


e_placeholder = OSError("not written")  # a slot of write_files' result not decided yet


def remove_file(root: Path, path: str, expect: LocalFile) -> None:
    target = checked_path(root, path, create=False)
    _check(target, expect)
    target.unlink()
    _fsync_dir(target.parent)


def move_file(root: Path, src: str, dst: str, expect: LocalFile) -> None:
    source = checked_path(root, src, create=False)
    target = checked_path(root, dst, create=True)
    _check(source, expect)
    _check(target, None)
    os.rename(source, target)
    _fsync_dir(target.parent)
    if target.parent != source.parent:
        _fsync_dir(source.parent)


def clean_temp(root: Path) -> int:
    """Remove temp files a crash left behind; return how many."""
    n = 0
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            if name.startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
    return n
