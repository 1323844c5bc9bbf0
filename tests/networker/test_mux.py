"""The mux without sockets or a loop: opening, capabilities, closing, the request budget."""

from __future__ import annotations

import pytest

from networker import channel as c
from networker import messages as m
from networker.channel import ChannelState
from networker.errors import RemoteProtocolError
from tests.networker.fakes import FakeFeed, Side, capability, group, key, pump


def kinds(actions: list[c.Action]) -> list[str]:
    return [type(a).__name__ if not isinstance(a, c.Send) else type(a.msg).__name__ for a in actions]


def test_open_answered_with_a_valid_capability_goes_live_with_exact_actions():
    g = group(feeds=[FakeFeed(key("f"), writable=True, entries={0: b"a", 1: b"b"})])
    b = Side([g], initiator=False)
    ch, actions = b.mux.open(g)  # type: ignore[arg-type]
    assert kinds(actions) == ["Open"] and ch.state is ChannelState.OPENING
    actions = b.mux.receive(m.Open(5, g.discovery_key, capability(g, True)))
    assert kinds(actions) == ["Feeds", "Have", "Live"]
    feeds, have = actions[0].msg, actions[1].msg  # type: ignore[union-attr]
    assert feeds == m.Feeds(1, ((key("f"), b""),), more=False)
    assert have == m.Have(1, key("f"), 2, ((0, 2),), incremental=False)
    assert ch.live and ch.remote_id == 5


def test_open_for_a_group_we_hold_is_answered_with_our_open():
    g = group()
    b = Side([g], initiator=False)
    assert kinds(b.mux.receive(m.Open(3, g.discovery_key, capability(g, True)))) == ["Open", "Feeds", "Live"]


def test_a_capability_for_the_other_role_or_key_is_refused():
    g = group()
    b = Side([g], initiator=False)
    with pytest.raises(RemoteProtocolError, match="capability"):
        b.mux.receive(m.Open(1, g.discovery_key, capability(g, False)))  # our own role: a replay
    other = group("other")
    b2 = Side([g], initiator=False)
    with pytest.raises(RemoteProtocolError, match="capability"):
        b2.mux.receive(m.Open(1, g.discovery_key, capability(other, True)))


def test_open_for_an_unknown_group_waits_until_we_join():
    g = group()
    b = Side([], initiator=False)
    assert b.mux.receive(m.Open(2, g.discovery_key, capability(g, True))) == []
    b.groups[g.discovery_key] = g
    ch, actions = b.mux.open(g)  # type: ignore[arg-type]
    assert kinds(actions) == ["Open", "Feeds", "Live"] and ch.remote_id == 2


def test_a_reused_channel_number_and_a_second_open_are_protocol_errors():
    g, h = group("g"), group("h")
    b = Side([g, h], initiator=False)
    b.mux.receive(m.Open(1, g.discovery_key, capability(g, True)))
    with pytest.raises(RemoteProtocolError, match="reused"):
        b.mux.receive(m.Open(1, h.discovery_key, capability(h, True)))
    with pytest.raises(RemoteProtocolError, match="twice"):
        b.mux.receive(m.Open(2, g.discovery_key, capability(g, True)))


def test_close_in_one_place_either_side():
    f = FakeFeed(key("f"), entries={0: b"x"})
    g = group(feeds=[f])
    b = Side([g], initiator=False)
    ch, _ = b.mux.open(g)  # type: ignore[arg-type]
    b.mux.receive(m.Open(4, g.discovery_key, capability(g, True)))
    assert kinds(b.mux.receive(m.Close(4, "bye"))) == ["Closed", "Schedule"]
    assert ch.state is ChannelState.CLOSED and b.mux.channels == {} and not b.reps[f.key].peers
    assert b.mux.receive(m.Close(4)) == []  # a late Close is ignored
    with pytest.raises(RemoteProtocolError, match="not open"):
        b.mux.receive(m.Have(4, f.key, 1, ((0, 1),)))
    # Our side closing: a Close is sent, then the same steps.
    ch2, _ = b.mux.open(g)  # type: ignore[arg-type]
    b.mux.receive(m.Open(6, g.discovery_key, capability(g, True)))
    assert kinds(b.mux.close_channel(g.discovery_key, "left")) == ["Close", "Closed", "Schedule"]


def test_messages_in_flight_on_a_channel_we_closed_are_dropped_until_its_close():
    f = FakeFeed(key("f"), entries={0: b"x"})
    g = group(feeds=[f])
    b = Side([g], initiator=False)
    b.mux.open(g)  # type: ignore[arg-type]
    b.mux.receive(m.Open(4, g.discovery_key, capability(g, True)))
    assert kinds(b.mux.close_channel(g.discovery_key, "removed"))[0] == "Close"
    # The peer sent these before our Close reached it: not misbehaviour.
    assert b.mux.receive(m.Feeds(4, ((key("x"), b""),), more=False)) == []
    assert b.mux.receive(m.Have(4, f.key, 1, ((0, 1),))) == []
    assert b.mux.receive(m.Close(4)) == []
    with pytest.raises(RemoteProtocolError, match="not open"):  # after its Close: a protocol error again
        b.mux.receive(m.Have(4, f.key, 1, ((0, 1),)))


def test_budget_caps_requests_and_a_freed_slot_runs_the_starved_replicator():
    src = FakeFeed(key("f"), writable=True, entries={i: b"e" for i in range(1000)})
    a = Side([group(feeds=[src])], initiator=True)
    b = Side([group(feeds=[FakeFeed(key("f"))])], initiator=False, max_outstanding=2)
    a.open(next(iter(a.groups.values())))
    b.open(next(iter(b.groups.values())))
    # Deliver until b has sent its first requests (Have -> Schedule -> 2 Requests).
    while not any(isinstance(x, m.Request) for x in b.outbox):
        for src_side, dst in ((a, b), (b, a)):
            if src_side.outbox:
                dst.run(dst.mux.receive(src_side.outbox.popleft()))
    requests = [x for x in b.outbox if isinstance(x, m.Request)]
    assert [(r.start, r.end) for r in requests] == [(0, 64), (64, 128)]
    assert b.ledger.awaiting(b.mux) == 2 and b.reps[src.key] in b.mux.starved
    pump(a, b)
    assert b.reps[src.key].feed.length == 1000 and b.ledger.awaiting(b.mux) == 0
    assert not b.reps[src.key].inflight and "SlotFreed" in b.log
