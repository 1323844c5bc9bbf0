"""Composition: the daemon, its control plane and the dashboard, wired once, here.

``Daemon(home, config, api_factory=control_plane)`` starts the device's services; once the
store, node and groups are up it calls :func:`control_plane`, which wraps the daemon in the
:class:`~cobox.app.DaemonApp` adapter and builds ``ControlServer(app)`` with the
``Dashboard(app)`` mounted on it. Nothing below imports upward: the daemon knows no API module,
the API knows only the :class:`~cobox.app.App` protocol.

``make_daemon`` is called once per daemon process (by the ``daemon`` command), so it also tunes
the process: glibc's allocator keeps freed memory for reuse (:mod:`cobox.runtime`: a large file's
buffers are otherwise faulted in and zeroed again by the kernel, batch after batch).
"""

from __future__ import annotations

from pathlib import Path

from .app import DaemonApp
from .control.server import ControlServer
from .daemon import Daemon
from .runtime import tune_allocator
from .settings import Config
from .web.routes import Dashboard


def control_plane(daemon: Daemon) -> ControlServer:
    app = DaemonApp(daemon)
    server = ControlServer(app)
    server.mount(Dashboard(app))
    return server


def make_daemon(home: Path, config: Config) -> Daemon:
    tune_allocator()  # process-wide, hence here and not in Daemon (tests run daemons in-process)
    return Daemon(home, config, api_factory=control_plane)
