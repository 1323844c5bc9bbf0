"""Free disk space kept in reserve, and human reasons for per-path failures.

``DiskReserve.parse`` reads ``[folders] min_disk_free``: ``"1%"`` (of the file system's size)
or a number of bytes, optionally with a unit (``"500 MB"``, ``"2GiB"``). A download that would
leave less free space than the reserve is not started (``DiskReserveError``), as Syncthing's
``minDiskFree``. ``reason`` turns an exception raised for one path into a line a user can act on.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cobox.errors import ConfigError, DiskReserveError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_RESERVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[a-zA-Z]*)\s*$")

# (free bytes, total bytes) of the file system holding a path
SpaceFn = Callable[[Path], tuple[int, int]]


def disk_space(path: Path) -> tuple[int, int]:
    u = shutil.disk_usage(path)
    return u.free, u.total


@dataclass(frozen=True)
class DiskReserve:
    percent: float = 0.0
    bytes: int = 0

    @classmethod
    def parse(cls, text: str) -> DiskReserve:
        m = _RESERVE.match(text)
        unit = m.group(2).lower() if m else ""
        if m is None or (unit != "%" and unit not in _UNITS):
            raise ConfigError(f"folders.min_disk_free: expected a percent (\"1%\") or bytes (\"500 MB\"), not {text!r}")
        value = float(m.group(1))
        if unit == "%":
            if value > 100:
                raise ConfigError("folders.min_disk_free: a percent is at most 100")
            return cls(percent=value)
        return cls(bytes=int(value * _UNITS[unit]))

    def required(self, total: int) -> int:
        return max(self.bytes, int(total * self.percent / 100))

    def check(self, root: Path, size: int, space: SpaceFn = disk_space) -> None:
        """``DiskReserveError`` if writing ``size`` more bytes under ``root`` crosses the reserve."""
        free, total = space(root)
        keep = self.required(total)
        if free - size < keep:
            raise DiskReserveError(f"not enough free disk space: {size} bytes needed, {free} free, "
                                   f"{keep} kept in reserve (folders.min_disk_free)")


_OS_REASONS = {
    errno.ENAMETOOLONG: "name too long for this file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a parent of the path is not a directory",
    errno.EISDIR: "a directory is in the way",
    errno.EEXIST: "something is in the way",
    errno.EILSEQ: "the name is not valid on this file system",
    errno.EINVAL: "the name is not valid on this file system",
}


def reason(e: BaseException) -> str:
    """A short human reason for a per-path failure."""
    if isinstance(e, OSError) and e.errno in _OS_REASONS:
        return _OS_REASONS[e.errno]
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return str(e) or type(e).__name__
