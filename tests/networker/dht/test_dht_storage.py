from __future__ import annotations

import os

from networker.dht.records import PeerRecord, dht_key
from networker.dht.storage import RecordStorage
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
    return PeerRecord.create(identity, topic, [f"tcp:127.0.0.1:{port}"], ttl=ttl, now=at)


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


def test_per_topic_and_per_source_caps():
    clock = Clock()
    store = RecordStorage(per_topic=3, per_source=4, clock=clock)
    t1, t2 = os.urandom(32), os.urandom(32)
    results = [store.add(dht_key(t1), record(DeviceIdentity.generate(), t1), "10.0.0.1") for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert store.add(dht_key(t2), record(DeviceIdentity.generate(), t2), "10.0.0.1")
    assert not store.add(dht_key(t2), record(DeviceIdentity.generate(), t2), "10.0.0.1")
    assert store.add(dht_key(t2), record(DeviceIdentity.generate(), t2), "10.0.0.2")
    assert store.source_count("10.0.0.1") == 4


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
