"""Walk a folder into a local index: path -> ``LocalFile``.

Theory of operation
-------------------
``scan(root, rules)`` walks ``root`` with ``os.scandir`` without following symlinks. It keeps
regular files and directories (``directory_entry``: so empty ones are synced too) only: a
symlink (to a file or a directory) and any special file (fifo, socket,
device) is skipped with a log line (once per path and process, not on every rescan), and so is
a name that is not valid Unicode or not a valid
folder path, or that collides with another name after NFC normalization. Ignored directories
(``IgnoreRules``) are pruned, not walked. Unreadable directories are logged and skipped, and a
file that vanishes during the walk is simply absent: a scan is a snapshot that may be stale the
moment it returns, which ``plan``/``apply`` tolerate (``apply`` re-checks before it writes).

Content ids are expensive (the whole file is read and chunked), so they are computed only for
the paths for which ``want_content(path, size, mtime)`` holds, typically those whose size/mtime
differ from the ``Synced`` record, to tell a touch from an edit. ``file_content`` streams one
file through the chunker in bounded memory; content ids depend on the group's chunker key, so
the daemon passes the group's ``Chunker`` (the unkeyed default is for tests).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cobox.errors import InvalidPathError

from .chunking import UNKEYED, Chunker
from .ignore import IgnoreRules
from .model import DIR_CONTENT
from .paths import normalize_path
from .plan import LocalFile

log = logging.getLogger(__name__)
MAX_NOTED = 10_000  # skipped paths remembered so that each is logged once, not on every rescan
_noted: set[tuple[str, str]] = set()


def _once(kind: str, path: str, msg: str, *args: object) -> None:
    """Log that ``path`` is skipped, once per process (a folder is rescanned every few seconds)."""
    if (kind, path) in _noted:
        return
    if len(_noted) < MAX_NOTED:
        _noted.add((kind, path))
    log.info(msg, *args)


def directory_entry(mode: int) -> LocalFile:
    """A directory in the index: size and mtime 0 (its mtime moves with its entries, which is no
    change of the directory itself), content ``DIR_CONTENT``."""
    return LocalFile(0, 0, stat.S_IMODE(mode), DIR_CONTENT)


def file_content(path: Path, chunker: Chunker = UNKEYED) -> tuple[bytes, int]:
    """``(content_id, size)`` of a file as ``chunker`` (the group's) cuts it, in bounded memory."""
    with open(path, "rb") as f:
        return chunker.hash_content(f)


def scan(root: Path, rules: IgnoreRules | None = None,
         want_content: Callable[[str, int, int], bool] | None = None,
         chunker: Chunker = UNKEYED) -> dict[str, LocalFile]:
    rules = rules if rules is not None else IgnoreRules.load(root)
    index: dict[str, LocalFile] = {}
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            log.warning("skipping unreadable directory %s: %s", directory, e)
            continue
        for entry in entries:
            try:
                entry.name.encode("utf-8")
                rel = normalize_path(prefix + entry.name)
            except (UnicodeEncodeError, InvalidPathError) as e:
                if not entry.name.startswith(".cobox-tmp-"):
                    _once("name", entry.path, "skipping %s: not a valid folder path (%s)", entry.path, e)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished
            if stat.S_ISLNK(st.st_mode):
                _once("symlink", entry.path, "skipping symlink %s", entry.path)
            elif stat.S_ISDIR(st.st_mode):
                if not rules.match(rel, is_dir=True):
                    stack.append((Path(entry.path), rel + "/"))
                    index[rel] = directory_entry(st.st_mode)
            elif not stat.S_ISREG(st.st_mode):
                _once("special", entry.path, "skipping special file %s (mode %o)", entry.path, stat.S_IFMT(st.st_mode))
            elif rules.match(rel):
                continue
            elif rel in index:
                log.warning("skipping %s: another name there normalizes to the same path %r", entry.path, rel)
            else:
                content = None
                if want_content is not None and want_content(rel, st.st_size, st.st_mtime_ns):
                    try:
                        content, _ = file_content(Path(entry.path), chunker)
                    except OSError as e:
                        log.info("cannot read %s: %s", entry.path, e)
                        continue
                index[rel] = LocalFile(st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), content)
    return index
