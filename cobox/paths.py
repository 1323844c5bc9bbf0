"""Where things live in a cobox home directory, and its modes.

A home holds keys, the API token and every group's secrets: it is mode 0700 and every file in
it 0600. ``Home.ensure`` creates it so; ``Home.tighten`` (the daemon, at start) fixes a home that
exists with looser modes (made by hand, by an older version, or by a tool with umask 022) and
returns what it changed, so that the daemon can say so (once: the next start finds nothing).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import platformdirs


def default_home() -> Path:
    env = os.environ.get("COBOX_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("cobox", appauthor=False))


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def identity(self) -> Path:
        return self.root / "identity.key"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def pid(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def token(self) -> Path:
        return self.root / "api.token"

    @property
    def api_port(self) -> Path:
        return self.root / "api.port"

    @property
    def api_socket(self) -> Path:
        return self.root / "api.sock"

    @property
    def dht_state(self) -> Path:
        return self.root / "dht.json"

    @property
    def login_page(self) -> Path:
        return self.root / "dashboard-login.html"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def tighten(self) -> list[str]:
        """Take group and other permissions away from the home and everything in it (symlinks
        are not followed); one line per change made, e.g. ``".: 0755 -> 0700"`` (paths relative to the home)."""
        changes: list[str] = []

        def fix(path: str) -> None:
            try:
                mode = stat.S_IMODE(os.lstat(path).st_mode)
                if mode & 0o077:
                    os.chmod(path, mode & 0o700)
                    changes.append(f"{os.path.relpath(path, self.root)}: {mode:04o} -> {mode & 0o700:04o}")
            except FileNotFoundError:
                pass  # gone meanwhile (a temporary file)

        fix(str(self.root))
        for top, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = os.path.join(top, name)
                if not os.path.islink(path):
                    fix(path)
        return changes


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to a file only this user can read (mode 0600)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
