"""The daemon's commands: ``daemon`` (run in the foreground, logging as logfmt; tells systemd it is
ready through :func:`cobox.service.notify`), ``start`` (in the background, answering once its API
does), ``stop``, and ``service install`` (the systemd user unit, :mod:`cobox.service`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import json
import logging
import logging.handlers
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from . import config as configuration
from . import service
from .control.client import Client
from .errors import CoboxError, DaemonNotRunningError
from .paths import Home
from .welcome import next_steps

_log = logging.getLogger("cobox")


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..."``: one structured line per event. For the journal
    (``journal=True``) the line starts with the sd-daemon priority (``<4>`` for a warning) and
    leaves the time to journald."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = f'level={record.levelname.lower()} logger={record.name} msg={json.dumps(record.getMessage())}'
        if record.exc_info:
            line += f" error={json.dumps(self.formatException(record.exc_info))}"
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"ts={ts} {line}"


_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def logs_to_journal(env: Mapping[str, str], fd: int) -> bool:
    """Whether ``fd`` is the stream systemd connected to the journal (``JOURNAL_STREAM`` is
    ``DEVICE:INODE`` of it), as under ``cobox service install``'s unit."""
    try:
        dev, ino = (int(x) for x in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _is_journal(stream: Any) -> bool:
    try:
        return logs_to_journal(os.environ, stream.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured stream)
        return False


LOG_MAX_BYTES = 10 * 1024 * 1024  # HOME/daemon.log rotates at this size ...
LOG_KEEP = 3                      # ... keeping daemon.log.1 .. daemon.log.3


class _RotatingLog(logging.handlers.RotatingFileHandler):
    """HOME/daemon.log for a daemon started by ``cobox start``. After each rollover the process's
    stdout and stderr point at the new file too, so a traceback or a print lands where
    ``cobox logs`` reads; every file is 0600."""

    def __init__(self, path: str) -> None:
        super().__init__(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_KEEP, encoding="utf-8")
        self._adopt()

    def doRollover(self) -> None:
        super().doRollover()
        self._adopt()

    def _adopt(self) -> None:
        if self.stream is None:
            return
        fd = self.stream.fileno()
        os.fchmod(fd, 0o600)
        for std in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                std.flush()
                os.dup2(fd, std.fileno())


def setup_logging(level: str, log_file: str | None = None) -> None:
    """One logfmt line per event, on stderr (with journal priorities when that is the journal),
    or (``log_file``, given by ``cobox start``) in a rotating HOME/daemon.log. Chatty libraries
    log at warning and above only."""
    handler: logging.Handler = _RotatingLog(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(journal=not log_file and _is_journal(sys.stderr)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kademlia").setLevel(logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # "1 change detected" on every file event


def say(text: str) -> None:
    """The daemon's startup lines on stdout: plain on a terminal, else as logfmt events of the
    ``cobox`` logger (one format in a log file or the journal), whatever the log level."""
    if sys.stdout.isatty():
        print(text, flush=True)
        return
    formatter = LogfmtFormatter(journal=_is_journal(sys.stdout))
    for line in text.splitlines():
        record = _log.makeRecord(_log.name, logging.INFO, __file__, 0, line.removeprefix("cobox: "), (), None)
        print(formatter.format(record), flush=True)


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    o: dict[str, dict[str, Any]] = {}
    if args.listen:
        o.setdefault("network", {})["listen"] = args.listen
    if args.dht_port is not None:
        o.setdefault("dht", {})["port"] = args.dht_port
    if args.dht_host is not None:
        o.setdefault("dht", {})["host"] = args.dht_host
    if args.bootstrap:
        o.setdefault("dht", {})["bootstrap"] = args.bootstrap
    if args.no_lan:
        o.setdefault("lan", {})["enabled"] = False
    if args.no_dht:
        o.setdefault("dht", {})["enabled"] = False
    if args.api_port is not None:
        o.setdefault("api", {})["port"] = args.api_port
    return o


async def daemon(args: argparse.Namespace, home: Home) -> tuple[int, bool]:
    from .main import make_daemon

    home.ensure()
    config = configuration.load(home.root, overrides=flag_overrides(args))
    first_run = not home.identity.exists()
    setup_logging(config.log.level, getattr(args, "log_file", None))
    d = make_daemon(home.root, config)
    await d.start()  # raises why it could not start
    say(f"cobox: daemon {d.identity.peer_id.hex()[:16]} running; home {home.root}")
    for address in d.listen_addresses:
        say(f"cobox: listening on {address}")
    if getattr(d.api, "where", None):
        say(f"cobox: control API on {d.api.where}")
    if d.dht is not None:
        say(f"cobox: DHT node on udp {d.dht.host}:{d.dht.port}")
    if first_run:
        say(next_steps(home))
    service.notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running; listening on {', '.join(d.listen_addresses)}")
    await d.serve()  # a fatal service failure raises FatalServiceError: the CLI prints it, exits 1
    if d.restart_requested:
        say("cobox: restarting with the recovered keys")
        service.notify("RELOADING=1\nSTATUS=restarting with the recovered keys")
    else:
        service.notify("STOPPING=1")
    return 0, d.restart_requested


def daemon_running(home: Home) -> bool:
    if not home.lock.exists():
        return False
    fd = os.open(home.lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


async def start(home: Home, timeout: float = 30.0) -> int:
    if daemon_running(home):
        print(f"cobox: a daemon is already running for {home.root}")
        return 0
    home.ensure()
    configuration.load(home.root)  # a broken config fails here, with its message, not in the background
    first_run = not home.identity.exists()
    fd = os.open(home.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    logfile = os.fdopen(fd, "ab")  # handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "cobox.cli", "--home", str(home.root), "daemon",
                             "--log-file", str(home.log)],
                            stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True)
    logfile.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = home.log.read_text(errors="replace").strip().splitlines()[-1:]
            raise CoboxError(f"the daemon exited at start: {tail[0] if tail else 'see ' + str(home.log)}")
        try:
            async with Client(home, timeout=2) as api:
                status = await api.get("/v1/status")
            print(f"cobox: daemon started (pid {proc.pid}), peer id {status['peer_id'][:16]}; log in {home.log}")
            if first_run:
                print(next_steps(home))
            return 0
        except DaemonNotRunningError:
            await asyncio.sleep(0.1)
    raise CoboxError(f"the daemon did not answer within {timeout:.0f}s; see {home.log}")


async def stop(api: Client, home: Home, timeout: float = 30.0) -> int:
    await api.post("/v1/stop")
    deadline = time.monotonic() + timeout
    while daemon_running(home):
        if time.monotonic() > deadline:
            raise CoboxError("the daemon did not stop in time")
        await asyncio.sleep(0.05)
    print("cobox: daemon stopped")
    return 0


def service_command(args: argparse.Namespace, home: Home) -> int:
    """``cobox service install``: write the systemd user unit for this interpreter and home."""
    if args.action == "install":
        # --home or COBOX_HOME is written into the unit (systemd does not pass the shell's environment)
        explicit = home.root if args.home is not None or os.environ.get("COBOX_HOME") else None
        if args.print:
            print(service.unit_text(sys.executable, explicit,
                                    pythonpath=None if service.installed_in_site_packages(service.package_root())
                                    else service.package_root()), end="")
            return 0
        path = service.install(explicit)
        print(f"cobox: wrote {path}\n"
              "cobox: start it now and at every login:\n"
              "  systemctl --user daemon-reload\n"
              "  systemctl --user enable --now cobox\n"
              "cobox: keep it running while you are logged out (a backup peer): loginctl enable-linger \"$USER\"\n"
              "cobox: its log: journalctl --user -u cobox -f")
        return 0
    raise CoboxError(f"unknown service action {args.action!r}")
