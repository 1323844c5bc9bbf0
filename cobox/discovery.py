"""Starting the daemon's discovery sources from the settings: the DHT node and LAN discovery.

Theory of operation
-------------------
Both are optional (``dht.enabled``, ``lan.enabled``) and neither is fatal: the swarm takes the
sources that started. :func:`start_dht` binds the DHT's UDP port (``dht.port``, or any free one
when it is taken: ``networker.bind_or_fallback``), bootstraps from ``dht.bootstrap`` and keeps its
routing state in the home. :func:`start_lan` announces this device's first fixed TCP listen port
on the interfaces of its listen addresses; it returns ``None`` (and says why) when the build has no
LAN discovery, the daemon listens on no fixed TCP port, or the multicast socket cannot be opened.
Both are imported lazily from ``networker``: a daemon with discovery off never loads them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from networker import DeviceIdentity, DhtSource, LanSource, NetworkError, bind_or_fallback

from . import addresses
from .settings import DhtSettings

log = logging.getLogger("cobox.daemon")


async def start_dht(identity: DeviceIdentity, settings: DhtSettings, state_path: Path) -> DhtSource:
    from networker import DHT

    d = settings
    bootstrap = [addresses.host_port(b) for b in d.bootstrap]

    async def start(port: int) -> DHT:
        dht = DHT(identity, host=d.host, port=port, bootstrap=bootstrap, state_path=state_path,
                  rpc_timeout=d.rpc_timeout, record_ttl=d.record_ttl, allow_loopback=d.allow_loopback)
        await dht.start()
        return dht

    return DhtSource(await bind_or_fallback(d.port, start, "DHT"))


async def start_lan(identity: DeviceIdentity, listen_addresses: list[str],
                    on_peer: Callable[[bytes, bytes, str], None]) -> LanSource | None:
    try:
        from networker import LanDiscovery
    except ImportError:
        log.warning("LAN discovery is not available in this build")
        return None
    port = next((a.port for a in addresses.tcp_listen(listen_addresses) if a.port), 0)
    if not port:
        return None
    lan = LanDiscovery(identity.peer_id, port, on_peer=on_peer, interfaces=addresses.lan_interfaces(listen_addresses))
    try:
        await lan.start()
    except (OSError, NetworkError) as e:
        log.warning("LAN discovery could not start: %s", e)
        return None
    return LanSource(lan)
