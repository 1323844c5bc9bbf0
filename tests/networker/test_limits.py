"""Connection limits without sockets: pending handshakes, slots, idle rule, log throttle."""

from __future__ import annotations

import logging

import pytest

from networker.limits import (
    ConnectionLimits,
    LogThrottle,
    PendingHandshakes,
    Slot,
    Usage,
    admit,
    ip_key,
)


def test_ip_keys():
    assert ip_key("192.0.2.7") == "192.0.2.7"
    assert ip_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert ip_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert ip_key("[2001:db8:1:2::9]") == ip_key("2001:db8:1:2:ffff::1")
    assert ip_key("fe80::1%eth0") == "fe80::/64"
    assert ip_key("127.0.0.1") == "127.0.0.1"  # loopback counts like any IP
    assert ip_key(None) is None and ip_key("") is None and ip_key("example.org") is None


# -- pending handshakes ---------------------------------------------------------------------------

def test_pending_per_ip_pushes_out_that_ips_oldest():
    p: PendingHandshakes[int] = PendingHandshakes(max_total=100, max_per_ip=3)
    assert [p.add(i, "a") for i in range(3)] == [[], [], []]
    assert p.add(3, "a") == [0]
    assert p.add(4, "b") == []
    assert p.add(5, "a") == [1]
    assert len(p) == 4 and p.count("a") == 3 and p.count("b") == 1


def test_pending_total_pushes_out_the_most_crowded_ips_oldest():
    p: PendingHandshakes[int] = PendingHandshakes(max_total=6, max_per_ip=4)
    p.add(0, "honest")
    for i in range(1, 5):
        p.add(i, "flood")
    p.add(5, "other")
    # Full: the flood pays for every newcomer while it holds the most, the honest one stays...
    assert [p.add(i, f"bot{i}") for i in range(6, 9)] == [[1], [2], [3]]
    assert 0 in p and len(p) == 6 and p.oldest() == 0
    # ...then, with one each, the oldest goes first (the honest handshake had its chance).
    assert p.add(9, "bot9") == [0]
    assert p.add(10, "bot10") == [4]


def test_pending_remove_and_unix_connections_without_ip():
    p: PendingHandshakes[int] = PendingHandshakes(max_total=2, max_per_ip=1)
    assert p.add(1, None) == [] and p.add(2, None) == []  # no per-IP limit without an IP
    assert p.add(3, None) == [1]
    p.remove(2)
    p.remove(2)
    p.remove(42)
    assert len(p) == 1 and p.oldest() == 3
    with pytest.raises(ValueError):
        p.add(3, None)


# -- slots ----------------------------------------------------------------------------------------

def slots(spec: str, ip: str = "10.0.0.1") -> list[Slot]:
    """``spec``: one letter per connection, oldest first: ``g`` group peer, ``s`` stranger."""
    return [Slot(bytes([i]) * 32, ip, float(i), kind == "g") for i, kind in enumerate(spec)]


def test_room_left_admits_without_eviction():
    lim = ConnectionLimits(max_connections=8, group_reserve=0.25, max_per_ip=100)
    assert lim.stranger_slots == 6
    assert admit(lim, slots("gss"), "10.0.0.9") == admit(lim, [], None)
    assert admit(lim, slots("gss"), "10.0.0.9").admitted


def test_strangers_are_limited_to_their_share_and_the_oldest_is_evicted():
    lim = ConnectionLimits(max_connections=8, group_reserve=0.25, max_per_ip=100)
    current = slots("ssssss")  # the strangers' share is full, the reserve is free
    decision = admit(lim, current, "10.0.0.2")
    assert decision.admitted and decision.evict == (current[0].key,)
    current = slots("ssgsssgs")  # every slot taken: still one stranger out, the oldest
    decision = admit(lim, current, "10.0.0.2")
    assert decision.admitted and decision.evict == (current[0].key,)


def test_a_full_house_evicts_strangers_never_group_peers():
    lim = ConnectionLimits(max_connections=4, group_reserve=0.0, max_per_ip=100)
    decision = admit(lim, slots("gsgs"), "10.0.0.2")
    assert decision.admitted and decision.evict == (bytes([1]) * 32,)
    decision = admit(lim, slots("gggg"), "10.0.0.2")
    assert not decision.admitted and "connection limit" in decision.reason


def test_the_reserve_keeps_slots_for_group_peers():
    lim = ConnectionLimits(max_connections=4, group_reserve=0.5, max_per_ip=100)
    # Two strangers fill the stranger share: a newcomer (a stranger until its channel opens)
    # evicts one of them; the reserve is never used by strangers.
    decision = admit(lim, slots("ss"), "10.0.0.2")
    assert decision.admitted and decision.evict == (bytes([0]) * 32,)
    assert admit(lim, slots("ggs"), "10.0.0.2").evict == ()
    assert admit(lim, slots("ggss"), "10.0.0.2").evict == (bytes([2]) * 32,)
    assert admit(lim, slots("gg"), "10.0.0.2").evict == ()


def test_per_ip_limit_evicts_that_ips_oldest_stranger_only():
    lim = ConnectionLimits(max_connections=64, max_per_ip=2)
    current = [Slot(b"a" * 32, "10.0.0.1", 1.0, False), Slot(b"b" * 32, "10.0.0.2", 2.0, False),
               Slot(b"c" * 32, "10.0.0.1", 3.0, False), Slot(b"d" * 32, "10.0.0.1", 4.0, True)]
    decision = admit(lim, current, "10.0.0.1")
    assert decision.admitted and decision.evict == (b"a" * 32,)  # the group peer d is not counted
    assert admit(lim, current, "10.0.0.3").evict == ()
    assert admit(lim, current, None).evict == ()


def test_eviction_when_full_picks_the_ip_with_most_strangers():
    lim = ConnectionLimits(max_connections=5, group_reserve=0.0, max_per_ip=100)
    current = [Slot(b"h" * 32, "10.0.0.9", 0.0, False)] + [
        Slot(bytes([i]) * 32, "10.0.0.1", float(i + 1), False) for i in range(4)]
    assert admit(lim, current, "10.0.0.5").evict == (bytes([0]) * 32,)


def test_inconsistent_limits_are_refused():
    for bad in (dict(max_connections=0), dict(group_reserve=1.0), dict(max_per_ip=0), dict(idle_timeout=0),
                dict(max_pending=0), dict(max_pending_per_ip=0)):
        with pytest.raises(ValueError):
            ConnectionLimits(**bad)
    assert ConnectionLimits(max_connections=1, group_reserve=0.9).stranger_slots == 1


# -- idle -----------------------------------------------------------------------------------------

def test_idle_rule():
    u = Usage(now=100.0)
    assert u.check(104.0, shared=False, idle_timeout=10) == 6.0
    assert u.check(110.0, shared=False, idle_timeout=10) is None
    u = Usage(now=100.0)
    assert u.check(110.0, shared=True, idle_timeout=10) == 10  # a live channel keeps it
    assert u.check(115.0, shared=False, idle_timeout=10) == 5  # counted from when it was last seen live
    assert u.check(120.0, shared=False, idle_timeout=10) is None
    u = Usage(now=100.0)
    u.call_started()
    assert u.check(130.0, shared=False, idle_timeout=10) == 10  # a call in flight keeps it
    u.call_ended(131.0)
    assert u.check(140.0, shared=False, idle_timeout=10) == 1.0
    assert u.check(141.0, shared=False, idle_timeout=10) is None


# -- log throttle ---------------------------------------------------------------------------------

def test_log_throttle_says_one_line_per_interval_with_a_count(caplog):
    now = [0.0]
    t = LogThrottle(logging.getLogger("test.throttle"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.throttle"):
        for i in range(10_000):
            now[0] = i * 0.01  # 100 s of events
            t.note("flood", logging.INFO, "refused %s", i)
        t.note("other", logging.WARNING, "something else")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused 0", "refused 6000 (and 5999 more like it in the last 60s)", "something else"]
    assert t.counts["flood"] == 10_000


def test_relayed_connections_are_counted_under_their_relay():
    """A relayed connection has no IP of its own: counted as nobody's, strangers through a relay
    would escape the per-IP cap and refusals."""
    import types

    from networker.node import connection_ip

    relay = b"r" * 32
    assert connection_ip(types.SimpleNamespace(relay_via=relay, remote_host=None)) == "relay:" + relay.hex()
    assert connection_ip(types.SimpleNamespace(relay_via=b"", remote_host="198.51.100.7")) == "198.51.100.7"
