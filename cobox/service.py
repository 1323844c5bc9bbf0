"""cobox under systemd: the user unit ``cobox service install`` writes, and sd_notify readiness.

Theory of operation
-------------------
``cobox service install`` writes ``$XDG_CONFIG_HOME/systemd/user/cobox.service`` (default
``~/.config/systemd/user``) for the interpreter that runs the command, so the unit starts the very
cobox the user just ran, whether it came from pipx, a venv or a clone (``python -m cobox``; a
package not installed in site-packages gets its directory on ``PYTHONPATH``). The unit is
``Type=notify``: systemd counts the service as started when the daemon says ``READY=1``, that is
once its store is open, it listens and its control API answers, so ``systemctl --user start cobox
&& cobox status`` works. A user unit has no ``network-online.target`` (that is the system
manager's), so none is named: cobox redials by itself when the network comes up.

:func:`notify` speaks the sd_notify datagram protocol without a library: when ``NOTIFY_SOCKET`` is
set (a path, or ``@name`` for the abstract namespace), one ``AF_UNIX`` datagram of
``KEY=VALUE`` lines goes to it (``READY=1``, ``STATUS=...``, ``STOPPING=1``). Without the
variable it does nothing, so the daemon calls it unconditionally. A failed send is logged at debug
level and never stops the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .paths import write_private

log = logging.getLogger(__name__)

UNIT_NAME = "cobox.service"
TIMEOUT_START = 120  # seconds: a schema migration of a large store runs before READY=1
TIMEOUT_STOP = 90    # seconds: a stop closes channels and the store; well above what it takes


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=listening"``) to systemd's ``NOTIFY_SOCKET``;
    False if there is none or the send failed."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), target)
        return True
    except OSError as e:
        log.debug("sd_notify to %s failed: %s", address, e)
        return False


def unit_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "systemd" / "user"


def _quote(arg: str) -> str:
    """One ``ExecStart`` word: ``%`` escaped as systemd specifiers demand, quoted if it has to be."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in " \t\"'\\;$"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'


def package_root() -> Path:
    """The directory holding the ``cobox`` package the running interpreter imported."""
    return Path(__file__).resolve().parent.parent


def unit_text(python: str, home: Path | None, *, pythonpath: Path | None = None) -> str:
    """The user unit running ``python -m cobox [--home HOME] daemon``."""
    command = [python, "-m", "cobox", *(["--home", str(home)] if home is not None else []), "daemon"]
    env = f"Environment={_quote('PYTHONPATH=' + str(pythonpath))}\n" if pythonpath is not None else ""
    return f"""# Written by `cobox service install`; `cobox service install` again rewrites it.
#   systemctl --user daemon-reload && systemctl --user enable --now cobox
#   journalctl --user -u cobox -f        (or `cobox logs --follow`)
#   loginctl enable-linger "$USER"       keeps it running while you are logged out (backup peers)
[Unit]
Description=cobox peer-to-peer sync and backup daemon

[Service]
Type=notify
NotifyAccess=main
ExecStart={" ".join(_quote(a) for a in command)}
{env}Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=5
TimeoutStartSec={TIMEOUT_START}
# SIGTERM stops cobox gracefully (flushes the store, closes channels, leaves topics).
KillSignal=SIGTERM
TimeoutStopSec={TIMEOUT_STOP}
NoNewPrivileges=true

[Install]
WantedBy=default.target
"""


def installed_in_site_packages(root: Path, paths: Sequence[str] | None = None) -> bool:
    """Whether ``root`` (the directory holding the package) is one of the interpreter's
    site-packages directories (pipx, pip install), not a clone on ``PYTHONPATH``."""
    import site

    dirs = list(paths) if paths is not None else [*site.getsitepackages(), site.getusersitepackages()]
    return any(Path(d).resolve() == root for d in dirs if d)


def install(home: Path | None, *, python: str | None = None, directory: Path | None = None) -> Path:
    """Write the unit for ``python`` (default: this interpreter); return its path."""
    root = package_root()
    pythonpath = None if installed_in_site_packages(root) else root
    path = (directory or unit_dir()) / UNIT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, unit_text(python or sys.executable, home, pythonpath=pythonpath).encode())
    return path
