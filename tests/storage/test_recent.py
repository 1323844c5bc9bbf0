"""A writer's proofs for its latest ranges from the nodes kept in memory (storage.recent):
bounded, and the same proofs as from the store."""

from __future__ import annotations

from storage.recent import Recent

from .conftest import OpenStore


def test_recent_keeps_the_latest_nodes() -> None:
    r = Recent(limit=3)
    r.remember_nodes([(0, b"a"), (2, b"b"), (1, b"c")])
    r.remember_nodes([(4, b"d")])  # node 0 goes
    assert r.nodes([0, 1, 2, 4, 9]) == {1: b"c", 2: b"b", 4: b"d"}


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
