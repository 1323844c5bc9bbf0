"""The pure epoch rules: sealing, record checks, and concurrent removals (no sockets)."""

from __future__ import annotations

import itertools
import os

import msgpack
import pytest

from cobox import epochs
from cobox.entries import EPOCH_MAGIC, is_epoch_entry
from cobox.entries_epoch import EPOCH_SIGN_CONTEXT, decode_epoch, epoch_body
from cobox.errors import MalformedEpochRecordError
from networker import DeviceIdentity, GroupKeys
from networker.keys import replication_key

GENESIS = GroupKeys.from_address(bytes(range(32)))


def ids(n: int) -> list[DeviceIdentity]:
    return [DeviceIdentity.from_seed(bytes([k + 1]) * 32) for k in range(n)]


def record(by: DeviceIdentity, removed: list[DeviceIdentity], members: list[DeviceIdentity],
           seeds: list[DeviceIdentity] = (), parent: bytes = GENESIS.discovery_key, secret: bytes | None = None):
    return epochs.make_record(by.sign, by.peer_id, parent, [d.peer_id for d in removed],
                              [d.peer_id for d in members], [d.peer_id for d in seeds], secret or os.urandom(32),
                              when=1_700_000_000.0)


def resolve_as(dev: DeviceIdentity, records):
    opened = {}
    for r in records:
        share = epochs.open_record(r, dev.peer_id, dev.noise_private_key())
        if share is not None:
            opened[r.digest] = share
    return epochs.resolve(GENESIS, records, dev.peer_id, opened)


def test_sealing_round_trip_and_only_the_recipient_opens():
    a, b = ids(2)
    secret = os.urandom(32)
    box = epochs.seal_to(a.peer_id, secret)
    assert epochs.open_sealed(a.noise_private_key(), box) == secret
    with pytest.raises(MalformedEpochRecordError):
        epochs.open_sealed(b.noise_private_key(), box)


def test_a_removal_gives_members_the_new_keys_and_the_removed_device_nothing():
    a, b, c, s = ids(4)
    secret = os.urandom(32)
    r = record(a, [c], [a, b, c], [s], secret=secret)
    assert is_epoch_entry(r.entry()) and decode_epoch(r.entry()) == r
    assert epochs.verify(r.entry(), parent=GENESIS.discovery_key, owner=a.peer_id) == r
    new = GroupKeys.for_epoch([secret], GENESIS.chunker_key)
    for dev in (a, b):
        res = resolve_as(dev, [r])
        assert res.removed is None and res.current(GENESIS) == new
        assert res.current(GENESIS).chunker_key == GENESIS.chunker_key  # content ids stay
    res = resolve_as(c, [r])
    assert res.steps == () and res.removed is not None and res.removed.removers == (a.peer_id,)
    assert res.current(GENESIS) == GENESIS
    # The backup peer gets the replication level only: same discovery key, no address.
    seed = resolve_as(s, [r]).current(GENESIS)
    assert seed.address is None and seed.encryption_key is None
    assert seed.replication_key == replication_key(secret) == new.replication_key
    assert seed.discovery_key == new.discovery_key


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_concurrent_removals_resolve_equal_whatever_the_arrival_order(order):
    a, b, c, d, e = ids(5)
    members = [a, b, c, d, e]
    r1 = record(a, [d], members)
    r2 = record(b, [e], members)
    r3 = record(c, [e], members)  # the same removal twice
    arrived = [[r1, r2, r3][k] for k in order]
    results = {dev.peer_id: resolve_as(dev, arrived) for dev in (a, b, c)}
    keys = {res.current(GENESIS) for res in results.values()}
    assert len(keys) == 1  # a, b and c reach one epoch
    final = keys.pop()
    (step,) = results[a.peer_id].steps
    assert step.removed == {d.peer_id, e.peer_id} and step.members == {a.peer_id, b.peer_id, c.peer_id}
    assert resolve_as(d, arrived).removed is not None and resolve_as(e, arrived).removed is not None
    # Only the first two arrived: the union of those; the third moves everybody to the union of three.
    first = resolve_as(a, arrived[:2]).current(GENESIS)
    assert first != final and first != GENESIS and resolve_as(b, arrived[:2]).current(GENESIS) == first


def test_a_counter_removal_by_the_removed_device_does_not_keep_it():
    a, b, c = ids(3)
    honest = record(a, [c], [a, b, c])
    counter = record(c, [a], [a, b, c])  # c, removed, tries to remove its remover (any hash)
    for arrived in ([honest, counter], [counter, honest]):
        res_b = resolve_as(b, arrived)
        assert res_b.steps[-1].removed == {a.peer_id, c.peer_id}
        assert resolve_as(c, arrived).removed is not None  # removal sticks
        assert resolve_as(a, arrived).removed is not None  # the remover went with it
        assert res_b.current(GENESIS).discovery_key not in (honest.epoch, counter.epoch)


def test_a_chain_of_removals_is_followed():
    a, b, c, d = ids(4)
    s1 = os.urandom(32)
    r1 = record(a, [d], [a, b, c, d], secret=s1)
    r2 = record(b, [c], [a, b, c], parent=GroupKeys.from_address(s1).discovery_key)
    res = resolve_as(a, [r2, r1])
    assert [s.removed for s in res.steps] == [{d.peer_id}, {c.peer_id}]
    res_c = resolve_as(c, [r2, r1])
    assert len(res_c.steps) == 1 and res_c.removed is not None  # c followed one step, then was removed


def test_a_device_the_remover_did_not_know_is_not_carried():
    a, b, c, late = ids(4)
    r = record(a, [c], [a, b, c])
    res = resolve_as(late, [r])
    assert res.steps == () and res.not_carried is not None and res.removed is None


def test_a_forged_record_is_refused():
    a, b, c, stranger = ids(4)
    r = record(a, [c], [a, b, c])
    # Not in the feed of its remover (a member relays a's record as its own): refused.
    with pytest.raises(MalformedEpochRecordError, match="not the member"):
        epochs.verify(r.entry(), parent=GENESIS.discovery_key, owner=b.peer_id)
    # Signed by a stranger, claiming to be a: refused.
    body = epoch_body(GENESIS.discovery_key, r.epoch, a.peer_id, [c.peer_id], list(r.members), [], 1.0)
    forged = EPOCH_MAGIC + stranger.sign(EPOCH_SIGN_CONTEXT + body) + body
    with pytest.raises(MalformedEpochRecordError, match="not signed"):
        epochs.verify(forged, parent=GENESIS.discovery_key, owner=a.peer_id)
    # Another epoch's record replayed here: refused.
    with pytest.raises(MalformedEpochRecordError, match="another epoch"):
        epochs.verify(r.entry(), parent=os.urandom(32), owner=a.peer_id)


def test_sealing_garbage_is_refused():
    a, b, c = ids(3)
    secret, other = os.urandom(32), os.urandom(32)
    members = [(a.peer_id, epochs.seal_to(a.peer_id, secret)), (b.peer_id, epochs.seal_to(b.peer_id, other))]
    body = epoch_body(GENESIS.discovery_key, GroupKeys.from_address(secret).discovery_key, a.peer_id,
                      [c.peer_id], members, [], 1.0)
    r = epochs.verify(EPOCH_MAGIC + a.sign(EPOCH_SIGN_CONTEXT + body) + body, parent=GENESIS.discovery_key,
                      owner=a.peer_id)
    with pytest.raises(MalformedEpochRecordError, match="does not make the epoch"):
        epochs.open_record(r, b.peer_id, b.noise_private_key())  # another epoch's secret
    junk = [(a.peer_id, epochs.seal_to(a.peer_id, secret)), (b.peer_id, os.urandom(80))]
    body = epoch_body(GENESIS.discovery_key, r.epoch, a.peer_id, [c.peer_id], junk, [], 1.0)
    r = decode_epoch(EPOCH_MAGIC + a.sign(EPOCH_SIGN_CONTEXT + body) + body)
    with pytest.raises(MalformedEpochRecordError, match="does not open"):
        epochs.open_record(r, b.peer_id, b.noise_private_key())


@pytest.mark.parametrize("change", [
    {"removed": []}, {"removed": [b"x" * 31]}, {"time": float("nan")}, {"v": 2}, {"extra": 1},
    {"members": [[b"m" * 32, b"short"]]}, {"type": "log"},
])
def test_decode_is_strict(change):
    a, c = ids(2)
    r = record(a, [c], [a])
    obj = msgpack.unpackb(r.body, raw=False)
    obj.update(change)
    body = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(MalformedEpochRecordError):
        decode_epoch(EPOCH_MAGIC + a.sign(EPOCH_SIGN_CONTEXT + body) + body)
    for junk in (b"", EPOCH_MAGIC, EPOCH_MAGIC + bytes(64) + b"\xc1", os.urandom(200)):
        with pytest.raises(MalformedEpochRecordError):
            decode_epoch(junk)
