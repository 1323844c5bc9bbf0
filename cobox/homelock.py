"""The daemon's hold on its home: one daemon per home directory.

Theory of operation
-------------------
:meth:`HomeLock.acquire` (the first step of ``Daemon.start``) sets the umask to 0077, so every
file and directory the daemon makes is this user's alone; creates the home (``Home.ensure``) or
tightens an existing one that was open to other users (``Home.tighten``, logged once); then takes
an exclusive, non-blocking ``flock`` on ``daemon.lock`` and writes this process's pid into it.
A second daemon on the same home finds the lock held and raises
:class:`~cobox.errors.DaemonRunningError`. :meth:`HomeLock.release` (the last step of the
shutdown) empties the file and closes it, which drops the lock; the kernel drops it too when
the process dies, so a crash never leaves a home locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

from .errors import DaemonRunningError
from .paths import Home

log = logging.getLogger("cobox.daemon")


class HomeLock:
    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self) -> None:
        os.umask(0o077)  # every file and directory the daemon makes is this user's alone
        self.home.ensure()
        changes = self.home.tighten()
        if changes:
            log.warning("the home %s was open to other users: tightened %d mode(s) to this user only: %s",
                        self.home.root, len(changes), "; ".join(changes[:5]) + ("; ..." if len(changes) > 5 else ""))
        fd = os.open(self.home.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonRunningError(f"another cobox daemon is running with home {self.home.root}") from None
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
