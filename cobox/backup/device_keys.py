"""This device's keys backed up on, and restored from, a backup peer (the daemon's side of
``cobox keys backup|restore``).

Theory of operation
-------------------
``backup`` builds the keyring (the identity seed and every group's secret), connects to the
backup peer (its address must name its key, unless the user asked to trust it on first use)
and stores the keyring there under the password (see :mod:`cobox.backup.service`). ``restore``
fetches and decrypts it, saves its identity as this device's and records the groups this home
does not know yet; the daemon then restarts under that identity and rejoins every group.

Safe restore: a home whose identity is in use (it has groups) is not overwritten unless the
user says ``force``; whenever the identity changes, the old key file is kept beside it as
``identity.key.replaced-<UTC time>`` (0600), so nothing is lost. The keyring's folder bindings
are returned, not bound: the user is asked first (``cobox keys restore`` binds them once the
restarted daemon answers).

The digest of a keyring (:func:`digest`) covers its group names, kinds and folders, no secret:
the daemon keeps the digest of the last backup, so ``status`` can say when the backup no longer
matches this device (a group joined or left since).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgpack
from blake3 import blake3

from networker import DeviceIdentity, GroupKeys, Node
from storage import Store

from ..errors import ConfigError, IdentityInUseError
from ..groups import GROUPS_SCOPE, Group, encode_info
from . import kdf
from .keyring import GroupSecret, Keyring
from .service import backup_keys, backup_peer_address, pinned_address, restore_keys

BACKUP_SCOPE = "keys-backup"  # record "last": where and when this device's keyring was last backed up
STRENGTHS = {"interactive": kdf.INTERACTIVE, "moderate": kdf.MODERATE, "sensitive": kdf.CEILING}


def keyring(identity: DeviceIdentity, groups: dict[str, Group], folders: dict[str, str] | None = None) -> Keyring:
    secrets = {}
    for name, g in groups.items():
        if g.keys.address is not None:
            secrets[name] = GroupSecret("address", g.keys.address)
        else:
            secrets[name] = GroupSecret("replication_key", g.keys.replication_key)
    return Keyring(identity.seed, secrets, {n: p for n, p in (folders or {}).items() if n in secrets})


def digest(ring: Keyring) -> bytes:
    """What a backup of ``ring`` covers, without its secrets: group names and kinds, folders."""
    shape = [sorted((n, s.kind) for n, s in ring.groups.items()), sorted(ring.folders.items())]
    return blake3(msgpack.packb(shape, use_bin_type=True)).digest()


def replace_identity(identity_path: Path, seed: bytes, *, in_use: bool, force: bool) -> str | None:
    """Make ``seed`` this home's identity; the old key file kept as ``.replaced-<time>`` (its
    name returned), unless it already was that identity (``None``). Refused if the old one is
    ``in_use`` and not ``force``."""
    new = DeviceIdentity.from_seed(seed)
    old: DeviceIdentity | None = DeviceIdentity.load(identity_path) if identity_path.exists() else None
    if old is not None and old.seed == new.seed:
        return None
    kept = None
    if old is not None:
        if in_use and not force:
            raise IdentityInUseError(
                f"this home already has the identity {bytes(old.peer_id).hex()[:16]}, in use by its groups: restoring "
                "would replace it (two devices would then share the restored identity if the original still runs); "
                "use --force to replace it (the old key is kept as identity.key.replaced-<time>)")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = identity_path.with_name(f"{identity_path.name}.replaced-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = identity_path.with_name(f"{identity_path.name}.replaced-{stamp}-{n}")
        os.link(identity_path, target)  # the old key stays on disk under its new name
        os.chmod(target, 0o600)
        kept = target.name
    new.save(identity_path)
    return kept


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


async def remember_backup(store: Store, address: str, username: str, ring: Keyring) -> None:
    """Note a backup just made: where, as whom, when, and what it covers (no secret)."""
    await store.put_record(BACKUP_SCOPE, "last", msgpack.packb(
        {"peer": address, "user": username, "time": time.time(), "digest": digest(ring)}, use_bin_type=True))


async def backup_state(store: Store, ring: Keyring) -> dict[str, Any] | None:
    """The last backup (peer, user, time) and whether it still covers ``ring`` (``current``);
    ``None`` if this device never backed its keys up."""
    value = (await store.records(BACKUP_SCOPE)).get("last")
    if value is None:
        return None
    last = msgpack.unpackb(value, raw=False)
    return {"peer": last["peer"], "user": last["user"], "time": last["time"],
            "current": last["digest"] == digest(ring)}


async def restore(node: Node, store: Store, identity_path: Path, address: str, username: str, password: str,
                  trust_first_use: bool = False, force: bool = False) -> dict[str, Any]:
    """Recover the keyring, save its identity as this device's (see :func:`replace_identity`)
    and record its new groups; its folders are returned for the user to accept."""
    peer, pinned = await connect_backup_peer(node, address, trust_first_use)
    ring = await restore_keys(peer, username, password)
    known = await store.records(GROUPS_SCOPE)
    kept = replace_identity(identity_path, ring.identity_seed, in_use=bool(known), force=force)
    added = []
    for name, secret in ring.groups.items():
        if name in known:
            continue
        keys = (GroupKeys.from_address(secret.key) if secret.kind == "address"
                else GroupKeys.from_replication_key(secret.key))
        await store.put_record(GROUPS_SCOPE, name, encode_info(keys, time.time()))
        added.append(name)
    return {"peer_id": bytes(DeviceIdentity.from_seed(ring.identity_seed).peer_id).hex(),
            "groups": sorted(ring.groups), "added": added, "restarting": True, "pinned": pinned,
            "folders": dict(ring.folders), "replaced": kept}
