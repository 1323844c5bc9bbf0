from __future__ import annotations

import os

from networker.dht.policy import AddressPolicy
from networker.dht.records import PeerRecord, dht_key
from networker.dht.storage import RecordStorage, TopicLimits
from networker.encoding import encode_key
from networker.identity import DeviceIdentity

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def record(
    identity: DeviceIdentity, topic: bytes, ttl: int = 60, at: float = NOW, port: int = 1
) -> PeerRecord:
    address = f"tcp:203.0.113.7:{port}~noise:{encode_key(identity.peer_id)}"
    return PeerRecord.create(identity, topic, [address], ttl=ttl, now=at)


def test_many_records_per_topic_newer_replaces_older():
    clock, topic = Clock(), os.urandom(32)
    store = RecordStorage(clock=clock)
    key = dht_key(topic)
    peers = [DeviceIdentity.generate() for _ in range(5)]
    for p in peers:
        assert store.add(key, record(p, topic))
    assert len(store.records(key)) == 5
    newer = record(peers[0], topic, at=NOW + 5, port=2)
    assert store.add(key, newer)
    assert not store.add(key, record(peers[0], topic, at=NOW + 1, port=3))  # older: ignored
    assert len(store.records(key)) == 5
    assert newer in store.records(key)
    assert store.source_count("local") == 5


def test_refuses_invalid_and_wrong_key():
    clock, topic = Clock(), os.urandom(32)
    store = RecordStorage(clock=clock)
    rec = record(DeviceIdentity.generate(), topic)
    assert not store.add(dht_key(os.urandom(32)), rec)
    clock.now = NOW + 100
    assert not store.add(dht_key(topic), rec)  # expired
    assert store.count() == 0


def test_per_source_cap_over_all_topics():
    clock = Clock()
    store = RecordStorage(per_source=4, clock=clock)
    topics = [os.urandom(32) for _ in range(3)]
    results = [store.add(dht_key(t), record(DeviceIdentity.generate(), t), "10.0.0.1")
               for t in topics for _ in range(2)]
    assert results == [True, True, True, True, False, False]
    assert store.add(dht_key(topics[2]), record(DeviceIdentity.generate(), topics[2]), "10.0.1.1")
    assert store.source_count("10.0.0.1") == 4


def test_records_without_a_dialable_address_are_not_stored():
    clock, topic = Clock(), os.urandom(32)
    ident = DeviceIdentity.generate()
    key = encode_key(ident.peer_id)
    store = RecordStorage(clock=clock)
    for addrs in (["unix:/run/x"], ["tcp:203.0.113.7:1"], [f"tcp:127.0.0.1:1~noise:{key}"],
                  [f"tcp:169.254.1.1:1~noise:{key}"], [f"tcp:0.0.0.0:1~noise:{key}"]):
        assert not store.add(dht_key(topic), PeerRecord.create(ident, topic, addrs, ttl=60, now=NOW), "10.0.0.1")
    loopback_ok = RecordStorage(clock=clock, policy=AddressPolicy(allow_loopback=True))
    assert loopback_ok.add(dht_key(topic), PeerRecord.create(ident, topic, [f"tcp:127.0.0.1:1~noise:{key}"],
                                                             ttl=60, now=NOW), "10.0.0.1")


# -- topic slot flooding (issue 12.9) -----------------------------------------------------------


def test_one_ip_cannot_fill_a_topic():
    """An attacker announces 200 records from one IP (and 200 more from its /24): it holds at
    most per_ip (and per_subnet) slots; ten new members from other hosts are all stored."""
    clock, topic = Clock(), os.urandom(32)
    key = dht_key(topic)
    store = RecordStorage(clock=clock, limits=TopicLimits(per_topic=64, per_ip=4, per_subnet=8))
    flood = [store.add(key, record(DeviceIdentity.generate(), topic), "198.51.100.1") for _ in range(200)]
    assert sum(flood) == 4
    flood += [store.add(key, record(DeviceIdentity.generate(), topic), f"198.51.100.{2 + i % 200}")
              for i in range(200)]
    assert sum(flood) == 8
    members = [DeviceIdentity.generate() for _ in range(10)]
    for i, m in enumerate(members):
        assert store.add(key, record(m, topic), f"192.0.2.{i}" if i % 2 else f"2001:db8:{i}::1")
    held = {r.peer_id for r in store.records(key)}
    assert {m.peer_id for m in members} <= held
    assert len(held) == 18


def test_ipv6_limit_is_per_64():
    clock, topic = Clock(), os.urandom(32)
    key = dht_key(topic)
    store = RecordStorage(clock=clock, limits=TopicLimits(per_topic=64, per_ip=4, per_subnet=8))
    got = [store.add(key, record(DeviceIdentity.generate(), topic), f"2001:db8:1:2::{i:x}") for i in range(1, 30)]
    assert sum(got) == 8
    assert store.add(key, record(DeviceIdentity.generate(), topic), "2001:db8:1:3::1")
    # An IPv4-mapped address counts as its IPv4 address.
    mapped = [store.add(key, record(DeviceIdentity.generate(), topic), a) for a in ("192.0.2.1", "::ffff:192.0.2.1")]
    assert mapped == [True, True]
    assert store.limits.per_ip == 4


def test_full_topic_keeps_the_records_that_are_re_announced():
    """A full topic evicts the least re-announced record (oldest first seen among equals), so a
    many-network attacker's one-shot records make room and re-announcing members stay."""
    clock, topic = Clock(), os.urandom(32)
    key = dht_key(topic)
    store = RecordStorage(clock=clock, limits=TopicLimits(per_topic=8, per_ip=2, per_subnet=2))
    members = [DeviceIdentity.generate() for _ in range(4)]
    for i, m in enumerate(members):
        assert store.add(key, record(m, topic, at=clock.now), f"192.0.{i}.1")
    clock.now += 5
    for i, m in enumerate(members):  # members re-announce
        assert store.add(key, record(m, topic, at=clock.now), f"192.0.{i}.1")
    assert all(store.entry(key, m.peer_id).announces == 2 for m in members)
    for i in range(40):  # one-shot records from 40 networks
        clock.now += 1
        assert store.add(key, record(DeviceIdentity.generate(), topic, at=clock.now), f"10.{i}.0.1")
    held = {r.peer_id for r in store.records(key)}
    assert len(held) == 8 and {m.peer_id for m in members} <= held
    assert store.evicted == 36


def test_expired_dropped_on_access_and_by_cull():
    clock = Clock()
    store = RecordStorage(clock=clock)
    t1, t2 = os.urandom(32), os.urandom(32)
    store.add(dht_key(t1), record(DeviceIdentity.generate(), t1, ttl=10), "a")
    store.add(dht_key(t1), record(DeviceIdentity.generate(), t1, ttl=100), "a")
    store.add(dht_key(t2), record(DeviceIdentity.generate(), t2, ttl=10), "b")
    clock.now = NOW + 11
    assert len(store.records(dht_key(t1))) == 1
    assert store.cull() == 1
    assert store.count() == 1
    assert store.source_count("a") == 1 and store.source_count("b") == 0


def test_istorage_interface_takes_encoded_records():
    clock, topic = Clock(), os.urandom(32)
    store = RecordStorage(clock=clock)
    rec = record(DeviceIdentity.generate(), topic)
    store[dht_key(topic)] = rec.encode()
    store[dht_key(topic)] = b"garbage"
    assert store[dht_key(topic)] == [rec.encode()]
    assert store.get(dht_key(os.urandom(32))) is None
    assert list(store) == [(dht_key(topic), rec.encode())]
    assert store.iter_older_than(0) == []
