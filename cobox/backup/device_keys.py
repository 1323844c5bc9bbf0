"""This device's keys backed up on, and restored from, a backup peer (the daemon's side of
``cobox keys backup|restore``).

Theory of operation
-------------------
``backup`` builds the keyring (the identity seed and every group's secret), connects to the
backup peer (its address must name its key, unless the user asked to trust it on first use)
and stores the keyring there under the password (see :mod:`cobox.backup.service`). ``restore``
fetches and decrypts it, saves its identity as this device's and records the groups this home
does not know yet; the daemon then restarts under that identity and rejoins every group.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from networker import DeviceIdentity, GroupKeys, Node
from storage import Store

from ..errors import ConfigError
from ..groups import GROUPS_SCOPE, Group, encode_info
from . import kdf
from .keyring import GroupSecret, Keyring
from .service import backup_keys, backup_peer_address, pinned_address, restore_keys

STRENGTHS = {"interactive": kdf.INTERACTIVE, "moderate": kdf.MODERATE, "sensitive": kdf.CEILING}


def keyring(identity: DeviceIdentity, groups: dict[str, Group]) -> Keyring:
    secrets = {}
    for name, g in groups.items():
        if g.keys.address is not None:
            secrets[name] = GroupSecret("address", g.keys.address)
        else:
            secrets[name] = GroupSecret("replication_key", g.keys.replication_key)
    return Keyring(identity.seed, secrets)


async def connect_backup_peer(node: Node, address: str, trust_first_use: bool) -> tuple[Any, str | None]:
    """Connect to a backup peer; with ``trust_first_use`` and no key in ``address``, also the
    address pinned to the key it presented (to show the user)."""
    addr = backup_peer_address(address, trust_first_use=trust_first_use)
    peer = await node.connect(addr)
    unpinned = any(a.peer_key is None for a in addr.alternatives)
    return peer, (pinned_address(addr, peer.remote_peer_id) if unpinned else None)


async def backup(node: Node, strength: str, ring: Keyring, address: str, username: str, password: str,
                 trust_first_use: bool = False) -> str | None:
    params = STRENGTHS.get(strength)
    if params is None:
        raise ConfigError(f"backup.keys_strength must be interactive, moderate or sensitive, not {strength!r}")
    peer, pinned = await connect_backup_peer(node, address, trust_first_use)
    await backup_keys(peer, username, password, ring, params)
    return pinned


async def restore(node: Node, store: Store, identity_path: Path, address: str, username: str, password: str,
                  trust_first_use: bool = False) -> dict[str, Any]:
    """Recover the keyring, save its identity as this device's and record its new groups."""
    peer, pinned = await connect_backup_peer(node, address, trust_first_use)
    ring = await restore_keys(peer, username, password)
    DeviceIdentity.from_seed(ring.identity_seed).save(identity_path)
    known = await store.records(GROUPS_SCOPE)
    added = []
    for name, secret in ring.groups.items():
        if name in known:
            continue
        keys = (GroupKeys.from_address(secret.key) if secret.kind == "address"
                else GroupKeys.from_replication_key(secret.key))
        await store.put_record(GROUPS_SCOPE, name, encode_info(keys, time.time()))
        added.append(name)
    return {"peer_id": bytes(DeviceIdentity.from_seed(ring.identity_seed).peer_id).hex(),
            "groups": sorted(ring.groups), "added": added, "restarting": True, "pinned": pinned}
