"""A member wants its own entries back (cobox.folders.single.available, storage.healing): its
chunk entries released to a file that then changed here are lost here, but a peer that still
holds them can give them back when another member's change needs them; asking for them
neither repeats nor wakes the folder while nobody can answer."""

from __future__ import annotations

import os

from cobox.folders import single
from storage import FeedEvent
from tests.helpers import until

from ..hostile import (
    connect,
    members_fixture,  # noqa: F401 - the fixture "members"
)
from .test_single import MiB, recorded


async def lost_here_held_there(members, size: int):  # type: ignore[no-untyped-def]
    """A records a file, B takes it, A releases its entries (held in A's file) and then A's
    file changes (not scanned yet); B records a copy of the old content, whose chunks dedup
    against A's entries. Returns (a, b, old content, the old version's chunk refs)."""
    a, b = await members("a"), await members("b")
    connect(a, b)
    old = os.urandom(size)
    await recorded(a, {"data.bin": old})
    await b.caught_up(a)
    await b.sync.round()
    await single.release_pass(a.sync)
    refs = a.sync.state.files["data.bin"].chunks
    assert all(r.seq in a.feed.outside for r in refs)
    (a.root / "data.bin").write_bytes(os.urandom(size))  # changed here, not scanned yet
    (b.root / "copy.bin").write_bytes(old)
    await b.sync.round()
    await a.caught_up(b)
    return a, b, old, refs


async def test_a_writer_fetches_back_its_own_entries_that_a_peer_still_holds(members) -> None:
    """A must write B's copy: it wants its own entries back (storage.healing), B sends them, A
    checks them against its own leaves and writes the file, where before its round waited for
    them forever."""
    a, b, old, refs = await lost_here_held_there(members, 3 * MiB)
    await b.sync.read_ops()
    assert [(r.feed, r.seq) for r in b.sync.state.files["copy.bin"].chunks] == [(r.feed, r.seq) for r in refs]
    await a.sync.round()  # records the new data.bin (copy.bin's download waits: files are moving)
    await a.sync.round()  # copy.bin's chunks turn out lost here, and are wanted back from peers
    assert all(r.seq in a.feed.cleared or a.feed.has(r.seq) for r in refs)
    await until(lambda: all(a.feed.has(r.seq) and r.seq not in a.feed.outside for r in refs), timeout=30,
                what="a to get its entries back")
    assert not any(r.seq in a.feed.cleared for r in refs)
    await a.sync.round()
    assert (a.root / "copy.bin").read_bytes() == old
    assert a.group.refusals.as_json() == {} and b.group.refusals.as_json() == {}
    # Answered, the range is no longer wanted: a later clear (a prune) is not fetched back.
    wanted = a.node.replicators.find(a.feed.key).wanted
    assert wanted is not None and not any(wanted.intersection(r.seq, r.seq + 1) for r in refs)


async def test_wanting_entries_back_that_nobody_holds_neither_repeats_nor_wakes_the_folder(members) -> None:
    """Each round asks again for the entries its download lacks; only the first ask makes a
    'want' event, and that event does not wake the folder (a round per event, with nobody to
    answer, went on at thousands of rounds a second)."""
    a, b, _, _ = await lost_here_held_there(members, 2 * MiB)
    await b.node.close()  # nobody can give A its entries back now
    kinds: list[str] = []
    a.feed.listen(lambda e: kinds.append(e.kind))
    await a.sync.start()  # the folder's loop, woken by feed events
    try:
        for _ in range(4):
            await a.sync.round()
        wants = kinds.count("want")
        assert wants >= 1 and not (a.root / "copy.bin").exists()
        a.sync._wake.clear()
        await a.sync.round()  # asks again: no new event, nothing wakes the folder
        assert kinds.count("want") == wants and not a.sync._wake.is_set()
        a.sync._on_feed_event(FeedEvent("want", 0, 1, a.feed.length))  # the folder's own wish
        assert not a.sync._wake.is_set()
        a.sync._on_feed_event(FeedEvent("download", 0, 1, a.feed.length))
        assert a.sync._wake.is_set()
    finally:
        await a.sync.stop()
