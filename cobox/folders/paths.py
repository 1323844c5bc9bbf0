"""Paths inside a synced folder: the one spelling every device agrees on.

Theory of operation
-------------------
A folder path is relative, ``/``-separated and NFC-normalized Unicode: ``docs/café.txt``.
``normalize_path`` turns what a user or a file system gives into that form, or raises
``InvalidPathError``; ``decode`` of an operation record requires a path already in it, so a
peer cannot smuggle in ``../`` or an absolute path.

Refused: empty paths, absolute paths, ``.`` and ``..`` components, empty components, NUL and
other C0 control characters, backslashes (a separator on Windows), components longer than
255 UTF-8 bytes, paths longer than 4096 bytes, and names starting with ``.cobox-tmp-`` (the
applier's temporary files, see ``apply``).

Case: paths compare exactly (case-sensitive, after NFC). On a case-insensitive file system two
paths that differ only by case land on one file; ``case_key`` gives the key to detect that.
Unicode: macOS may hand back NFD names; they are normalized to NFC, so ``café`` typed on Linux
and listed on macOS is the same path.

Conflict copies are named ``stem.conflict-<device>-<YYYYmmdd-HHMMSS>.ext``: ``device`` is the
name the losing author first published in its feed (``label``: its profile, :mod:`cobox.devices`,
made safe for a file name: slashes, ``:`` and other risky characters become ``_``, at most
32 bytes), or the first 8 hex digits of its device id if it published none; the time is the
losing version's mtime in UTC, so every device derives the same name from the same operation. ``.ext`` is
the last suffix of the file name (``a.tar.gz`` -> ``a.tar.conflict-....gz``); a name without one,
or a dotfile like ``.bashrc``, gets no extension. A stem is shortened to keep the name within
255 bytes; if that name is already resolved (``merge``), ``-2``, ``-3``... follow the time.
"""

from __future__ import annotations

import time
import unicodedata

from cobox.errors import InvalidPathError

TMP_PREFIX = ".cobox-tmp-"
MAX_COMPONENT = 255
MAX_PATH = 4096


def normalize_path(path: str) -> str:
    """The canonical form of a folder path, or ``InvalidPathError``."""
    if not isinstance(path, str) or not path:
        raise InvalidPathError("a folder path must be a non-empty string")
    if "\\" in path:
        raise InvalidPathError(f"backslash in path {path!r}")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise InvalidPathError(f"control character in path {path!r}")
    if path.startswith("/"):
        raise InvalidPathError(f"absolute path {path!r}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPathError(f"path {path!r} is not valid Unicode") from None
    path = unicodedata.normalize("NFC", path)
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidPathError(f"empty, '.' or '..' component in path {path!r}")
        if len(part.encode()) > MAX_COMPONENT:
            raise InvalidPathError(f"a component of {path!r} is longer than {MAX_COMPONENT} bytes")
        if part.startswith(TMP_PREFIX):
            raise InvalidPathError(f"{path!r} uses the reserved prefix {TMP_PREFIX!r}")
    if len(path.encode()) > MAX_PATH:
        raise InvalidPathError(f"path longer than {MAX_PATH} bytes")
    return path


def is_normal(path: str) -> bool:
    try:
        return normalize_path(path) == path
    except InvalidPathError:
        return False


def case_key(path: str) -> str:
    """Key under which paths collide on a case-insensitive file system."""
    return unicodedata.normalize("NFC", path.casefold())


def safe_label(name: str) -> str:
    """A device name as it may stand in a file name ("" if nothing of it is left)."""
    out = "".join(c if (c.isalnum() or c in "-_+") else "_" for c in unicodedata.normalize("NFC", name))
    while len(out.encode()) > 32:
        out = out[:-1]
    return out.strip("_")


def conflict_path(path: str, author: bytes, mtime_ns: int, attempt: int = 1, label: str = "") -> str:
    """The deterministic name of the conflict copy of ``path`` written by ``author`` (named
    ``label``, if it published a name); an ``attempt`` above 1 appends ``-<attempt>`` (used
    when the first name is taken)."""
    head, sep, name = path.rpartition("/")
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(mtime_ns // 1_000_000_000))
    suffix = f".conflict-{safe_label(label) or author.hex()[:8]}-{stamp}" + (f"-{attempt}" if attempt > 1 else "")
    if len((suffix + ext).encode()) >= MAX_COMPONENT:  # an extension too long to keep: drop it
        stem, ext = name, ""
    room = MAX_COMPONENT - len((suffix + ext).encode())
    while len(stem.encode()) > room:  # keep the component within the limit
        stem = stem[:-1]
    return f"{head}{sep}{stem}{suffix}{ext}"
