"""Composition: the daemon, its control plane and the dashboard, wired once, here.

``Daemon(home, config, api_factory=control_plane)`` starts the device's services; once the
store, node and groups are up it calls :func:`control_plane`, which wraps the daemon in the
:class:`~cobox.app.DaemonApp` adapter and builds ``ControlServer(app)`` with the
``Dashboard(app)`` mounted on it. Nothing below imports upward: the daemon knows no API module,
the API knows only the :class:`~cobox.app.App` protocol.
"""

from __future__ import annotations

from pathlib import Path

from .app import DaemonApp
from .control.server import ControlServer
from .daemon import Daemon
from .settings import Config
from .web.routes import Dashboard


def control_plane(daemon: Daemon) -> ControlServer:
    app = DaemonApp(daemon)
    server = ControlServer(app)
    server.mount(Dashboard(app))
    return server


def make_daemon(home: Path, config: Config) -> Daemon:
    return Daemon(home, config, api_factory=control_plane)
