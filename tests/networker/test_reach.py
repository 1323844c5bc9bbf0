"""Issue 14 items 2 and 6 without sockets: what kind of IP an address is, the verdict on
reachability from what peers saw, what is announced where, and the ``observed`` decoders."""

from __future__ import annotations

import msgpack
import pytest

from networker.address import Address
from networker.dht.policy import AddressPolicy
from networker.identity import DeviceIdentity
from networker.reach import announce
from networker.reach.classify import DialBack, Observation, classify, dialback_verdict, nat_kind
from networker.reach.observed import (
    DIALBACK,
    WHOAMI,
    MalformedObservedError,
    Request,
    decode_result,
    decode_seen,
    encode_seen,
)
from networker.reach.scope import ip_kind

KEY = DeviceIdentity.from_seed(bytes(32)).peer_id
PORT = 47100


@pytest.mark.parametrize(("host", "kind"), [
    ("198.18.0.5", "public"), ("198.19.255.1", "public"), ("192.0.2.1", "public"), ("8.8.8.8", "public"),
    ("2001:4860::1", "public"), ("10.1.2.3", "private"), ("172.20.0.1", "private"), ("192.168.1.5", "private"),
    ("100.64.0.1", "private"), ("fd00::1", "private"), ("127.0.0.1", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:198.18.0.1", "public"), ("169.254.1.1", "link-local"),
    ("fe80::1%eth0", "link-local"), ("0.0.0.0", "unusable"), ("224.0.0.251", "unusable"),
    ("240.0.0.1", "unusable"), ("255.255.255.255", "unusable"), ("example.org", "name"),
])
def test_ip_kinds(host, kind):
    assert ip_kind(host) == kind


def test_dht_policy_keeps_test_ranges_and_refuses_private_ones():
    policy = AddressPolicy()
    for host, ok in (("198.18.0.1", True), ("203.0.113.9", True), ("2001:db8::1", True), ("10.0.0.1", False),
                     ("192.168.0.2", False), ("fd12::1", False), ("127.0.0.1", False), ("169.254.0.1", False)):
        assert policy.accepts(Address("tcp", host=host, port=PORT, peer_key=KEY), KEY) is ok, host
    assert AddressPolicy(allow_loopback=True).accepts(Address("tcp", host="127.0.0.1", port=1, peer_key=KEY), KEY)


# -- classification -----------------------------------------------------------------------------


def obs(observer: str, ip: str, port: int, outbound: bool = True, local: int = PORT) -> Observation:
    return Observation(observer, ip, port, local, outbound)


def verdict(observations=(), dialbacks=(), *, ips=("10.0.0.2",), mapped=None, peers=2, contacts=5):
    return classify(listen_port=PORT, interface_ips=ips, observations=observations, dialbacks=dialbacks,
                    mapped=mapped, peers=peers, dht_contacts=contacts)


def test_nobody_to_reach_says_what_to_do():
    v = verdict(peers=0, contacts=0)
    assert v.kind == "offline"
    assert "invite" in v.words and "bootstrap" in v.words


def test_connected_but_not_yet_observed_is_unknown():
    assert verdict().kind == "unknown"


def test_reaching_nobody_is_offline_whatever_was_seen_before_and_names_the_silent_bootstrap_nodes():
    seen = [obs("198.18.9.9", "198.18.0.2", PORT)], [DialBack("198.18.9.9", "198.18.0.2", PORT, True)]
    assert verdict(*seen, peers=0, contacts=0).kind == "offline"  # the network went away since
    v = classify(listen_port=PORT, interface_ips=["10.0.0.2"], observations=[], dialbacks=[], mapped=None, peers=0,
                 dht_contacts=0, bootstrap=["203.0.113.5:47100"])
    assert v.kind == "offline" and "203.0.113.5:47100" in v.words and "answers" in v.words and "invite" in v.words


def test_no_peer_yet_with_dht_contacts_does_not_claim_connected_peers():
    v = verdict(peers=0, contacts=3)
    assert v.kind == "unknown" and "No peer is connected" in v.words and "3 DHT nodes" in v.words
    assert "Connected to peers" in verdict().words


def test_dialled_back_at_an_interface_address_is_public():
    v = verdict([obs("198.18.9.9", "198.18.0.2", PORT)], [DialBack("198.18.9.9", "198.18.0.2", PORT, True)],
                ips=("198.18.0.2",))
    assert v.kind == "public" and v.confirmed == (("198.18.0.2", PORT),)
    assert "198.18.0.2:47100" in v.words


def test_dialled_back_at_the_mapping_is_mapped_and_elsewhere_forwarded():
    seen = [obs("198.18.9.9", "198.18.1.1", 5000)]
    back = [DialBack("198.18.9.9", "198.18.1.1", 6000, True)]
    assert verdict(seen, back, mapped=("198.18.1.1", 6000)).kind == "mapped"
    assert verdict(seen, [DialBack("198.18.9.9", "198.18.1.1", PORT, True)]).kind == "forwarded"


def test_two_observers_seeing_one_mapping_is_cone_like():
    seen = [obs("198.18.9.9", "198.18.1.1", PORT), obs("198.18.8.8", "198.18.1.1", PORT)]
    v = verdict(seen, [DialBack("198.18.9.9", "198.18.1.1", PORT, False)])
    assert v.kind == "cone" and "hole punching can work" in v.words and "47100" in v.words


def test_two_observers_seeing_different_ports_is_symmetric():
    seen = [obs("198.18.9.9", "198.18.1.1", 40001), obs("198.18.8.8", "198.18.1.1", 40002)]
    v = verdict(seen)
    assert v.kind == "symmetric" and "relay" in v.words


def test_one_observer_or_inbound_views_cannot_tell_cone_from_symmetric():
    assert verdict([obs("198.18.9.9", "198.18.1.1", PORT)]).kind == "nat"
    # the same observer twice, or views on connections the peer dialled, decide nothing
    assert nat_kind([obs("198.18.9.9", "198.18.1.1", 1), obs("198.18.9.9", "198.18.1.1", 2)]) is None
    assert nat_kind([obs("198.18.9.9", "198.18.1.1", 1, False), obs("198.18.8.8", "198.18.1.1", 2, False)]) is None


# -- announcing ---------------------------------------------------------------------------------


def test_the_dht_gets_only_addresses_others_can_dial():
    ips = ["127.0.0.1", "10.0.0.2", "192.168.1.4", "169.254.3.3", "2001:db8::7", "fd00::2"]
    out = announce.dht_addresses(key=KEY, listen_port=PORT, interface_ips=ips, confirmed=[("198.18.1.1", PORT)],
                                 mapped=("198.18.1.1", 6000), extra=["tcp:198.18.5.5:9~noise:x~relay:y"])
    k = Address("tcp", host="1.1.1.1", port=1, peer_key=KEY).format().split("~", 1)[1]
    assert out == [f"tcp:198.18.1.1:{PORT}~{k}", f"tcp:198.18.1.1:6000~{k}", f"tcp:[2001:db8::7]:{PORT}~{k}",
                   "tcp:198.18.5.5:9~noise:x~relay:y"]
    # a peer lying that it saw us at a private or loopback address changes nothing
    assert announce.dht_addresses(key=KEY, listen_port=PORT, interface_ips=["10.0.0.2"],
                                  confirmed=[("10.0.0.2", PORT), ("127.0.0.1", PORT)]) == []


def test_loopback_only_for_single_machine_setups():
    out = announce.dht_addresses(key=KEY, listen_port=PORT, interface_ips=["127.0.0.1"], allow_loopback=True)
    assert out == [Address("tcp", host="127.0.0.1", port=PORT, peer_key=KEY).format()]


def test_dual_stack_wildcard_expands_to_both_families():
    local = {"v4": ["127.0.0.1", "198.18.0.2"], "v6": ["::1", "2001:db8::7"]}
    assert announce.interface_ips(["::"], local) == ["127.0.0.1", "198.18.0.2", "::1", "2001:db8::7"]
    assert announce.interface_ips(["0.0.0.0"], local) == ["127.0.0.1", "198.18.0.2"]


# -- the observed service's decoders ------------------------------------------------------------


def test_requests_round_trip():
    assert Request.decode(Request(WHOAMI).encode()) == Request(WHOAMI)
    assert Request.decode(Request(DIALBACK, 4000).encode()) == Request(DIALBACK, 4000)
    assert decode_seen(encode_seen("::ffff:198.18.0.1", 7)) == ("198.18.0.1", 7, 0)
    assert decode_seen(encode_seen("198.18.0.1", 7, 47100)) == ("198.18.0.1", 7, 47100)


@pytest.mark.parametrize("body", [
    b"", b"\xc1", msgpack.packb({}), msgpack.packb([]), msgpack.packb([3]), msgpack.packb([True]),
    msgpack.packb([DIALBACK]), msgpack.packb([DIALBACK, 0]), msgpack.packb([DIALBACK, 70000]),
    msgpack.packb([DIALBACK, 4000, "203.0.113.5"]),  # a third party's IP: there is no such field
    msgpack.packb([DIALBACK, "4000"]), msgpack.packb([1] * 5), b"\x91" + b"\x01" * 400,
])
def test_malformed_requests_raise_only_their_error(body):
    with pytest.raises(MalformedObservedError):
        Request.decode(body)


@pytest.mark.parametrize("body", [
    msgpack.packb(["example.org", 1, 0]), msgpack.packb(["0.0.0.0", 1, 0]), msgpack.packb(["198.18.0.1", 0, 0]),
    msgpack.packb([b"\x01\x02\x03\x04", 1, 0]), msgpack.packb(["198.18.0.1"]), msgpack.packb(["x" * 250, 1, 0]),
    msgpack.packb(["198.18.0.1", 1]), msgpack.packb(["198.18.0.1", 1, False]),
    msgpack.packb(["198.18.0.1", 1, 1 << 17]),
])
def test_malformed_observed_answers_raise_only_their_error(body):
    with pytest.raises(MalformedObservedError):
        decode_seen(body)


def test_malformed_results_raise_only_their_error():
    for body in (msgpack.packb([1, ""]), msgpack.packb([True]), msgpack.packb([True, 5]), b"\x00"):
        with pytest.raises(MalformedObservedError):
            decode_result(body)


# -- the fixed port --------------------------------------------------------------------------------


async def test_a_taken_default_port_falls_back_and_an_explicit_one_fails():
    import errno

    from networker.reach import DEFAULT_PORT, RELAY_PORT
    from networker.reach.ports import bind_or_fallback

    tried: list[int] = []

    async def start(port: int) -> int:
        tried.append(port)
        if port:
            raise OSError(errno.EADDRINUSE, "in use")
        return 12345

    assert await bind_or_fallback(DEFAULT_PORT, start, "test") == 12345 and tried == [DEFAULT_PORT, 0]
    assert await bind_or_fallback(RELAY_PORT, start, "relay") == 12345 and tried[2:] == [RELAY_PORT, 0]
    with pytest.raises(OSError):
        await bind_or_fallback(4000, start, "test")  # the user chose it: say so, never replace it


def test_a_relayed_connection_tells_nothing_of_where_its_peer_is():
    """A relayed connection's address is the relay's: taken as the peer's endpoint it would make
    us believe the relay's address is ours and dial the relay's IP at any port a caller names."""
    import types

    from networker.address import Address
    from networker.identity import DeviceIdentity
    from networker.reach.observed import remote_endpoint
    from networker.relay.client import RelayedConnection
    from networker.transport import SecureConnection

    relay, peer = DeviceIdentity.generate().peer_id, DeviceIdentity.generate().peer_id
    direct = SecureConnection.__new__(SecureConnection)
    direct.remote_address = Address("tcp", "198.51.100.7", 4242, peer_key=peer).format()
    assert remote_endpoint(types.SimpleNamespace(conn=direct)) == ("198.51.100.7", 4242)  # type: ignore[arg-type]
    relayed = RelayedConnection.__new__(RelayedConnection)
    relayed.remote_address = Address("tcp", "198.51.100.7", 4242, peer_key=peer, relay_key=relay).format()
    relayed.relay_via = relay
    assert remote_endpoint(types.SimpleNamespace(conn=relayed)) is None  # type: ignore[arg-type]


def test_the_dialback_verdict_needs_one_success_or_failures_from_two_peers():
    fail = [DialBack("198.18.0.1", "198.18.0.9", PORT, False), DialBack("198.18.0.1", "198.18.0.9", PORT, False)]
    assert dialback_verdict([]) is None
    assert dialback_verdict(fail) is None  # one peer failing (twice) may be its lie or its firewall
    assert dialback_verdict([*fail, DialBack("198.18.0.2", "198.18.0.9", PORT, False)]) is False
    assert dialback_verdict([*fail, DialBack("198.18.0.2", "198.18.0.9", PORT, True)]) is True
