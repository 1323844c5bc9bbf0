"""What the backup peers claim to hold: the receipts a member keeps, and the status they back.

Theory of operation
-------------------
A backup peer sends a :class:`~cobox.backup.receipts.Receipt` per feed it holds
(``cobox.backup.seeding``). A member keeps one per (backup peer, feed): ``Group.receipts``,
persisted in scope ``receipts:<namespace>`` and loaded with the group (:func:`load`).
:func:`keep` takes a receipt only if it verifies, was signed by the peer that sent it and names
our data exactly: no more entries than the feed has, and, where the tree at that length can be
rebuilt here, the same root hash. A receipt that fails is the sender's fault
(``RemoteProtocolError``: the peer is disconnected). A receipt for a feed that is not ours, or
older than the one kept, is ignored. A receipt is a claim; ``cobox.backup.audit`` checks it, and
:func:`status` reports a feed as backed up only with a passed audit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from networker import RemoteProtocolError
from storage import Store
from storage.errors import StorageError

from .receipts import BadReceiptError, Receipt

if TYPE_CHECKING:
    from ..groups import Group


def scope(namespace: str) -> str:
    return f"receipts:{namespace}"


async def load(store: Store, namespace: str) -> dict[tuple[bytes, bytes], Receipt]:
    """The receipts kept for the epoch ``namespace``, by (backup peer, feed)."""
    out = {}
    for value in (await store.records(scope(namespace))).values():
        r = Receipt.decode(value)
        out[(r.signer, r.feed)] = r
    return out


async def keep(group: Group, peer_id: bytes, r: Receipt) -> bool:
    """Keep backup peer ``peer_id``'s receipt ``r`` if it verifies and names our data exactly;
    return whether it was kept. Raise ``RemoteProtocolError`` if it is false."""
    try:
        if r.signer != peer_id:
            raise BadReceiptError("a receipt signed by another peer than the sender")
        r.verify()
        feed = next((f for f in group.feeds() if f.key == r.feed), None)
        if feed is None:
            return False  # not a feed of ours to track
        if r.length > feed.length:
            raise BadReceiptError("a receipt for more entries than the feed has")
        try:
            ours = await feed.tree_hash_at(r.length)
        except StorageError:
            ours = None  # a length whose tree we cannot rebuild here: the signature stands
        if ours is not None and ours != r.root_hash:
            raise BadReceiptError("a receipt for data that differs from ours")
    except BadReceiptError as e:
        raise RemoteProtocolError(str(e)) from None
    previous = group.receipts.get((r.signer, r.feed))
    if previous is not None and previous.time_ms >= r.time_ms:
        return False
    group.receipts[(r.signer, r.feed)] = r
    await group.store.put_record(scope(group.namespace), f"{r.signer.hex()}:{r.feed.hex()}", r.encode())
    return True


def status(group: Group) -> list[dict[str, Any]]:
    """For each backup peer that sent receipts: how far it claims to hold each of this
    device's feeds and the audit that backs the claim (``backed_up`` needs a passed one)."""
    own = [f for f in group.feeds() if f.writable]
    peers = sorted({signer for signer, _ in group.receipts})
    out = []
    for signer in peers:
        feeds = []
        for f in own:
            r = group.receipts.get((signer, f.key))
            held = r.length if r else 0
            feeds.append({"feed": f.key.hex(), "length": f.length, "held": held,
                          "confirmed": r.time_ms / 1000 if r else None,
                          **group.audits.feed_status(signer, f, held)})
        quota = any(r.quota_full for (s, _), r in group.receipts.items() if s == signer)
        keep_days = max((r.keep_days for (s, _), r in group.receipts.items() if s == signer), default=0)
        out.append({"peer": signer.hex(), "feeds": feeds, "quota_full": quota, "keep_days": keep_days,
                    "audit": group.audits.peer_status(signer),
                    "backed_up": all(x["backed_up"] for x in feeds)})
    return out
