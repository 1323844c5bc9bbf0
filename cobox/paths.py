"""Where things live in a cobox home directory."""

from __future__ import annotations

import os
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

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)


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
