"""Replication decisions without a store or a loop: schedule(budget) -> Wants, and a whole
download between two in-memory sides."""

from __future__ import annotations

from networker import messages as m
from networker.replicator import FIRST_REQUEST_ENTRIES, FeedReplicator, Ledger, PeerFeed, Want
from tests.networker.fakes import FakeFeed, Side, group, key, pump


def peer(rep: FeedReplicator, link: object, length: int) -> PeerFeed:
    pf = PeerFeed(link, None, rep)  # type: ignore[arg-type]
    pf.remote_have.add(0, length)
    pf.remote_length = length
    rep.add_peer(pf)
    return pf


def spans(wants: list[Want]) -> list[tuple[str, int, int]]:
    return [(str(w.peer.link), w.start, w.end) for w in wants]


def test_two_peers_are_asked_for_different_ranges_within_their_budgets():
    ledger = Ledger()
    rep = FeedReplicator(FakeFeed(key("f")), ledger)  # type: ignore[arg-type]
    a, b = peer(rep, "A", 1000), peer(rep, "B", 1000)
    wants = rep.schedule(lambda pf: 2 if pf is a else 1)
    assert spans(wants) == [("B", 0, 64), ("A", 64, 128), ("A", 128, 192)]  # rotation: B first this time
    for w in wants:
        ledger.issue(w)
    assert list(rep.inflight) == [(0, 192)]
    assert rep.schedule(lambda pf: 0) == []  # no budget: nothing
    assert spans(rep.schedule(lambda pf: 1 if pf is b else 0)) == [("B", 192, 256)]


def test_a_partial_answer_frees_the_rest_and_batches_follow_entry_sizes():
    ledger = Ledger()
    feed = FakeFeed(key("f"))
    rep = FeedReplicator(feed, ledger)  # type: ignore[arg-type]
    p = peer(rep, "A", 10_000)
    (w,) = rep.schedule(lambda pf: 1)
    o = ledger.issue(w)
    feed.put(0, (b"x" * 1024,) * 10, 10_000)  # only 10 of 64 fitted one message
    rep.on_response(o, 10, 10 * 1024)
    assert not rep.inflight and rep.missing_from(p) == 10_000 - 10
    (w,) = rep.schedule(lambda pf: 1)
    assert (w.start, w.end) == (10, 10 + 1024)  # 1 MiB of 1 KiB entries, capped at MAX_REQUEST_ENTRIES
    assert FIRST_REQUEST_ENTRIES == 64


def test_paused_asks_nothing_and_resuming_wakes_the_shell():
    woken: list[FeedReplicator] = []
    rep = FeedReplicator(FakeFeed(key("f")), Ledger(), woken.append)  # type: ignore[arg-type]
    peer(rep, "A", 100)
    rep.paused = True
    assert rep.schedule(lambda pf: 5) == [] and woken == []
    rep.paused = False
    assert woken == [rep] and len(rep.schedule(lambda pf: 5)) == 2


def test_sparse_wants_and_a_peer_leaving_releases_its_ranges():
    ledger = Ledger()
    rep = FeedReplicator(FakeFeed(key("f")), ledger)  # type: ignore[arg-type]
    a = peer(rep, "A", 1000)
    rep.want(100, 120)
    (w,) = rep.schedule(lambda pf: 4)
    assert (w.start, w.end) == (100, 120)
    ledger.issue(w)
    rep.remove_peer(a)
    assert not rep.inflight and ledger.awaiting("A") == 0 and rep.peers == []


def test_claims_count_only_up_to_the_verified_length():
    rep = FeedReplicator(FakeFeed(key("f"), known_length=10), Ledger())  # type: ignore[arg-type]
    p = peer(rep, "A", 1_000_000)
    assert rep.missing_from(p) == 10 and rep.unconfirmed(p)


def test_a_whole_feed_replicates_between_two_sides_in_memory():
    src = FakeFeed(key("f"), writable=True, entries={i: bytes([i % 256]) * 100 for i in range(3000)},
                   known_length=3000)
    ga, gb = group(feeds=[src]), group()
    a, b = Side([ga], initiator=True), Side([gb], initiator=False)
    a.open(ga)
    b.open(gb)
    pump(a, b)
    (dst,) = gb.local
    assert dst.entries == src.entries and dst.length == 3000
    rep = b.reps[src.key]
    assert not rep.inflight and b.ledger.awaiting(b.mux) == 0 and rep.entries_received == 3000
    ch = next(iter(b.mux.channels.values()))
    assert ch.missing() == (0, True)
    # The writer appends: one coalesced Have, then exactly one request for the new range.
    for i in range(3000, 3010):
        src.entries[i] = b"new"
    a.changed(src, 3000, 3010)
    sent = list(a.outbox)
    assert [type(x) for x in sent] == [m.Have] and sent[0].ranges == ((3000, 3010),)  # type: ignore[union-attr]
    b.run(b.mux.receive(a.outbox.popleft()))
    assert [(x.start, x.end) for x in b.outbox if isinstance(x, m.Request)] == [(3000, 3010)]
    pump(a, b)
    assert dst.length == 3010


def test_a_writer_asks_only_for_its_own_entries_it_wants_back():
    """A writable feed's replicator requests nothing by itself; what the writer wants back
    (storage.healing: lost or cleared here, needed again) is asked of a peer that has it."""
    from storage.ranges import RangeSet

    feed = FakeFeed(key("w"), writable=True, entries={k: b"x" for k in range(10) if k not in (3, 4)},
                    known_length=10, cleared=RangeSet([(3, 5)]))
    rep = FeedReplicator(feed, Ledger())  # type: ignore[arg-type]
    p = peer(rep, "B", 10)
    assert rep.schedule(lambda pf: 5) == [] and not rep.unconfirmed(p)
    rep.want(3, 5)
    assert spans(rep.schedule(lambda pf: 5)) == [("B", 3, 5)]  # cleared here: asked for all the same
