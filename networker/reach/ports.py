"""The fixed default port, and what happens when it is taken.

A daemon listens on TCP :data:`networker.reach.DEFAULT_PORT` and runs its DHT node on the same
UDP port (and a relay it offers on :data:`networker.reach.RELAY_PORT`), so a user can forward
one port on a router and a port-keeping NAT maps it the same at each start. When a *default*
port is already in use (a second daemon on the machine, a test run), the daemon takes a free
port instead and logs why; a port the user configured explicitly is never replaced: failing to
bind it is an error the user must see.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from ..address import Address, parse
from . import DEFAULT_PORT, RELAY_PORT

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger(__name__)
T = TypeVar("T")


async def bind_or_fallback(port: int, start: Callable[[int], Awaitable[T]], what: str) -> T:
    """``await start(port)``; if ``port`` is a default (:data:`DEFAULT_PORT`, :data:`RELAY_PORT`)
    and in use, ``await start(0)``."""
    try:
        return await start(port)
    except OSError as e:
        if port not in (DEFAULT_PORT, RELAY_PORT) or e.errno != errno.EADDRINUSE:
            raise
    log.warning("%s: the default port %d is in use (another cobox daemon?); using a random port, "
                "which a router's port forward cannot follow", what, port)
    return await start(0)


async def listen_fixed(node: Node, address: str, handshake_timeout: float) -> list[str]:
    """``node.listen(address)`` with :func:`bind_or_fallback` on its TCP port."""
    alt = parse(address).alternatives[0]
    if alt.transport != "tcp":
        return await node.listen(address, handshake_timeout=handshake_timeout)

    async def start(port: int) -> list[str]:
        return await node.listen(Address("tcp", host=alt.host, port=port).format(),
                                 handshake_timeout=handshake_timeout)

    return await bind_or_fallback(alt.port, start, "peer connections")
