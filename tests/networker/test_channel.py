"""The channel state machine without sockets, a store or a loop: exact actions per input."""

from __future__ import annotations

import pytest

from networker import channel as c
from networker import messages as m
from networker.channel import ChannelState, StoreOutcome
from networker.errors import RemoteProtocolError
from networker.replicator import Want
from tests.networker.fakes import FakeFeed, Side, capability, group, key


def live(feeds: list[FakeFeed], *, admits: bool = True, max_feeds: int | None = None) -> tuple[Side, c.Channel]:
    g = group(feeds=feeds)
    g.admits = admits
    side = Side([g], initiator=False)
    ch, _ = side.mux.open(g)  # type: ignore[arg-type]
    if max_feeds is not None:
        ch.max_feeds = max_feeds
    side.mux.receive(m.Open(9, g.discovery_key, capability(g, True)))
    return side, ch


def kinds(actions: list[c.Action]) -> list[str]:
    return [type(a).__name__ if not isinstance(a, c.Send) else type(a.msg).__name__ for a in actions]


def test_illegal_transitions_raise():
    side, ch = live([])
    with pytest.raises(RemoteProtocolError, match="remote open while live"):
        ch.remote_open(3)
    ch.close()
    assert ch.state is ChannelState.CLOSED and ch.close() == []
    with pytest.raises(RemoteProtocolError, match="remote open while closed"):
        ch.remote_open(3)


def test_feed_offers_go_to_the_group_one_at_a_time_and_the_list_completes_on_the_last_page():
    side, ch = live([])
    k1, k2, k3 = key("1"), key("2"), key("3")
    actions = ch.receive(m.Feeds(9, ((k1, b"t1"), (k2, b"")), more=True))
    assert actions == [c.Accept(ch, k1, b"t1")]  # one at a time: the next after the answer
    actions = ch.accepted(k1, FakeFeed(k1))
    assert kinds(actions) == ["Have", "Accept"] and actions[1] == c.Accept(ch, k2, b"")
    assert kinds(ch.accepted(k2, None)) == []  # refused: counted, nothing sent
    assert ch.feeds_refused == 1 and ch.last_refused == k2 and not ch.feeds_received
    actions = ch.receive(m.Feeds(9, ((k2, b""), (k3, b"")), more=False))  # k2 refused before: not asked again
    assert actions == [c.Accept(ch, k3, b"")]
    assert ch.accepted(k3, FakeFeed(k3)) == [c.Send(m.Have(1, k3, 0, (), incremental=False))]
    assert ch.feeds_received and set(ch.feeds) == {k1, k3}


def test_offers_beyond_max_feeds_are_counted_not_accepted():
    side, ch = live([], max_feeds=1)
    keys = [key(str(i)) for i in range(4)]
    actions = ch.receive(m.Feeds(9, tuple((k, b"") for k in keys)))
    assert actions == [c.Accept(ch, keys[0], b"")]
    assert ch.accepted(keys[0], FakeFeed(keys[0])) == [c.Send(m.Have(1, keys[0], 0, (), incremental=False))]
    assert ch.feeds_taken == 1 and ch.feeds_over_limit == 3 and ch.feeds_received


def test_have_is_clipped_to_its_signed_length_and_schedules():
    f = FakeFeed(key("f"))
    side, ch = live([f])
    actions = ch.receive(m.Have(9, f.key, 10, ((0, 50),)))
    assert actions == [c.Schedule(side.reps[f.key])]
    pf = ch.feeds[f.key]
    assert list(pf.remote_have) == [(0, 10)] and pf.remote_length == 10 and pf.have_received


def test_data_must_answer_our_request_exactly():
    f = FakeFeed(key("f"))
    side, ch = live([f])
    ch.receive(m.Have(9, f.key, 10, ((0, 10),)))
    rep = side.reps[f.key]
    req = side.mux.request(Want(ch.feeds[f.key], 0, 5))
    with pytest.raises(RemoteProtocolError, match="not requested"):
        ch.receive(m.Data(9, req.id + 1, f.key, 0, (b"x",), 10, bytes(64), ()))
    with pytest.raises(RemoteProtocolError, match="not requested"):
        ch.receive(m.Data(9, req.id, key("other"), 0, (b"x",), 10, bytes(64), ()))
    with pytest.raises(RemoteProtocolError, match="does not match"):
        ch.receive(m.Data(9, req.id, f.key, 1, (b"x",), 10, bytes(64), ()))
    with pytest.raises(RemoteProtocolError, match="does not match"):
        ch.receive(m.Data(9, req.id, f.key, 0, (b"x",) * 6, 10, bytes(64), ()))
    with pytest.raises(RemoteProtocolError, match="proves only 3"):  # claimed 10 before the request
        ch.receive(m.Data(9, req.id, f.key, 0, (b"x",), 3, bytes(64), ()))
    data = m.Data(9, req.id, f.key, 0, (b"x", b"y"), 10, bytes(64), ())
    actions = ch.receive(data)
    o = actions[1].request  # type: ignore[union-attr]
    assert actions == [c.SlotFreed(), c.Store(ch, o, data)]
    assert side.ledger.awaiting(side.mux) == 0 and list(rep.inflight) == [(0, 5)]  # slot free, range taken
    assert ch.stored(o, StoreOutcome.STORED, 2, 2) == [c.Schedule(rep)]
    assert not rep.inflight and rep.entries_received == 2


def test_invalid_data_raises_and_stale_data_from_a_peer_behind_us_is_not_asked_again():
    f = FakeFeed(key("f"), known_length=20)
    side, ch = live([f])
    ch.receive(m.Have(9, f.key, 10, ((0, 10),)))
    pf = ch.feeds[f.key]
    req = side.mux.request(Want(pf, 0, 5))
    o = ch.receive(m.Data(9, req.id, f.key, 0, (b"x",), 10, bytes(64), ()))[1].request  # type: ignore[union-attr]
    assert ch.stored(o, StoreOutcome.STALE) == [c.Schedule(side.reps[f.key])]
    assert list(pf.remote_have) == [(5, 10)]  # behind us (10 < 20): that range is not asked again
    req = side.mux.request(Want(pf, 5, 10))
    o = ch.receive(m.Data(9, req.id, f.key, 5, (b"x",), 10, bytes(64), ()))[1].request  # type: ignore[union-attr]
    with pytest.raises(RemoteProtocolError, match="does not verify: bad"):
        ch.stored(o, StoreOutcome.INVALID, reason="bad")
    assert not side.reps[f.key].inflight


def test_no_data_beyond_the_verified_length_withdraws_the_claim():
    f = FakeFeed(key("f"), entries={i: b"e" for i in range(4)}, known_length=4)
    side, ch = live([f])
    ch.receive(m.Have(9, f.key, 100, ((0, 100),)))
    pf = ch.feeds[f.key]
    assert pf.replicator.unconfirmed(pf) and pf.replicator.missing_from(pf) == 0
    req = side.mux.request(Want(pf, 4, 68))
    with pytest.raises(RemoteProtocolError, match="not made"):
        ch.receive(m.NoData(9, req.id + 7))
    assert ch.receive(m.NoData(9, req.id)) == [c.SlotFreed(), c.Schedule(pf.replicator)]
    assert list(pf.remote_have) == [(0, 4)] and pf.remote_length == 4 and not pf.replicator.unconfirmed(pf)
    assert ch.missing() == (0, False)  # the peer's feed list has not come yet
    assert ch.receive(m.Feeds(9, ((f.key, b""),))) == []  # a feed we hold: nothing to ask the group
    assert ch.missing() == (0, True)


def test_requests_are_served_by_the_shell_or_refused_for_unknown_feeds():
    f = FakeFeed(key("f"), entries={0: b"a"})
    side, ch = live([f])
    req = m.Request(9, 1, f.key, 0, 1, 0)
    assert ch.receive(req) == [c.Serve(ch, f, req)]  # type: ignore[arg-type]
    assert ch.receive(m.Request(9, 2, key("x"), 0, 1, 0)) == [c.Send(m.NoData(1, 2, "unknown feed"))]


def test_announcements_are_coalesced_into_one_have():
    f = FakeFeed(key("f"), writable=True, entries={i: b"e" for i in range(8)})
    side, ch = live([f])
    assert ch.announce(f.key, 0, 4) == [c.FlushLater(ch)]
    assert ch.announce(f.key, 4, 8) == []
    assert ch.flush() == [c.Send(m.Have(1, f.key, 8, ((0, 8),), incremental=True))]
    assert ch.flush() == []


def test_extensions_are_carried_not_read():
    side, ch = live([])
    assert ch.receive(m.Extension(9, "cobox/receipt", b"\x01")) == [c.Deliver(ch, "cobox/receipt", b"\x01")]
    assert ch.extension("x", b"y") == [c.Send(m.Extension(1, "x", b"y"))]
    ch.close()
    assert ch.extension("x", b"y") == []


def test_a_feeds_page_while_the_last_is_being_accepted_is_a_protocol_error():
    side, ch = live([])
    ch.receive(m.Feeds(9, ((key("1"), b""), (key("2"), b"")), more=True))
    with pytest.raises(RemoteProtocolError, match="previous one"):
        ch.receive(m.Feeds(9, ((key("3"), b""),)))


def test_messages_before_the_channel_is_live_are_refused():
    g = group()
    side = Side([g], initiator=False)
    ch, _ = side.mux.open(g)  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError, match="before the channel is open"):
        ch.receive(m.Have(9, key("f"), 1, ((0, 1),)))
