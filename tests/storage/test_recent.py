"""A writer's latest entries served from memory (storage.recent): bounded, never a cleared or
uncommitted entry, the same answer as a read."""

from __future__ import annotations

from storage.recent import Recent

from .conftest import OpenStore, deliver


def test_recent_keeps_the_latest_bytes_and_answers_prefixes() -> None:
    r = Recent(limit=10)
    r.remember(0, [b"aaaa", b"bbbb"])
    r.remember(2, [b"cccc"])  # 12 bytes: entry 0 goes
    assert r.range(0, 3, 100, lambda s: True) is None
    assert r.range(1, 3, 100, lambda s: True) == [b"bbbb", b"cccc"]
    assert r.range(1, 3, 5, lambda s: True) == [b"bbbb"]  # what fits, at least one
    assert r.range(1, 3, 1, lambda s: True) == [b"bbbb"]
    assert r.range(1, 3, 100, lambda s: s != 2) == [b"bbbb"]  # not stored: not served
    r.forget(2, 3)
    assert r.range(2, 3, 100, lambda s: True) is None


async def test_a_writer_serves_its_latest_entries_from_memory_and_never_cleared_ones(open_store: OpenStore) -> None:
    store = await open_store("w")
    feed = await store.create_feed()
    entries = [bytes([k]) * 5000 for k in range(20)]
    await feed.append(entries[:10])
    await feed.append(entries[10:])
    assert feed.recent_range(3, 20, max_bytes=1 << 20) == entries[3:]
    assert feed.recent_range(3, 20, max_bytes=12_000) == await feed.get_range(3, 20, max_bytes=12_000)
    await feed.clear(5, 8)
    assert feed.recent_range(5, 8, max_bytes=1 << 20) is None  # cleared: NoData, not memory
    assert feed.recent_range(3, 10, max_bytes=1 << 20) == entries[3:5]
    dst = await (await open_store("r")).open_feed(feed.key)
    await deliver(feed, dst, 0, 5)
    assert dst.recent_range(0, 5, max_bytes=1 << 20) is None  # a replica keeps nothing in memory


async def test_a_writers_proof_of_a_recent_range_needs_no_query_and_equals_the_stored_one(
        open_store: OpenStore, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from storage import verify_range

    store = await open_store("w")
    feed = await store.create_feed()
    entries = [bytes([k]) * 3000 for k in range(37)]
    for k in range(0, 37, 5):
        await feed.append(entries[k:k + 5])
    ranges = [(30, 37, 0), (31, 33, 20), (35, 36, 34), (36, 37, 36)]
    from_memory = []

    async def no_query(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a node query for a recent range")

    with monkeypatch.context() as m:
        m.setattr(feed._rows, "nodes", no_query)
        for start, end, known in ranges:
            from_memory.append(await feed.proof(start, end, upgrade_from=known))
    feed._recent = Recent()  # forget: the same proofs from the store
    for (start, end, known), proof in zip(ranges, from_memory, strict=True):
        assert proof == await feed.proof(start, end, upgrade_from=known)
        verify_range(feed.key, start, entries[start:end], proof)
