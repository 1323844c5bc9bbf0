from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from networker.address import Address, MultiAddress, parse
from networker.encoding import decode_key, encode_key
from networker.errors import AddressError, KeyEncodingError

KEY = bytes(range(32))
K = encode_key(KEY)


def test_tcp_unix_and_alternatives_round_trip():
    text = f"tcp:127.0.0.1:4000~noise:{K};tcp:[::1]:4001~noise:{K};unix:/tmp/x.sock~noise:{K}"
    addr = parse(text)
    assert [a.transport for a in addr.alternatives] == ["tcp", "tcp", "unix"]
    assert addr.alternatives[1].host == "::1" and addr.alternatives[1].port == 4001
    assert addr.alternatives[2].path == "/tmp/x.sock"
    assert all(a.peer_key == KEY for a in addr.alternatives)
    assert addr.format() == text


def test_listen_address_without_key():
    a = parse("tcp:0.0.0.0:0").alternatives[0]
    assert a.peer_key is None and a.port == 0


@pytest.mark.parametrize("host,scope", [
    ("127.0.0.1", "device"), ("::1", "device"), ("localhost", "device"),
    ("192.168.1.4", "local"), ("10.0.0.1", "local"), ("fe80::1", "local"), ("fd00::2", "local"),
    ("8.8.8.8", "public"), ("example.org", "public"),
])
def test_scopes(host, scope):
    assert Address("tcp", host=host, port=1).scope == scope


def test_unix_is_device_scope():
    assert Address("unix", path="/x").scope == "device"


@pytest.mark.parametrize("text,part", [
    ("", "empty"),
    ("udp:1.2.3.4:5", "unknown transport 'udp'"),
    ("tcp:1.2.3.4", "HOST:PORT"),
    ("tcp:1.2.3.4:99999", "bad port '99999'"),
    ("tcp:1.2.3.4:abc", "bad port 'abc'"),
    ("tcp:::1:80", "brackets"),
    ("tcp:[::1:80", "bad IPv6 host"),
    ("tcp:[1.2.3.4]:80", "bad IPv6 host"),
    (f"tcp:1.2.3.4:5~tls:{K}", "unknown protocol 'tls'"),
    ("tcp:1.2.3.4:5~noise:abc", "bad noise key"),
    (f"tcp:1.2.3.4:5~noise:{K};", "alternative 2 is empty"),
    ("unix:", "without a path"),
    ("1.2.3.4:5", "unknown transport"),
    ("tcp:bad host:5", "bad host"),
])
def test_malformed_addresses_name_the_bad_part(text, part):
    with pytest.raises(AddressError, match=None) as err:
        parse(text)
    assert part in str(err.value)


def test_too_long_address():
    with pytest.raises(AddressError, match="longer"):
        parse("tcp:" + "a" * 5000 + ":1")


@given(st.binary(min_size=32, max_size=32))
def test_key_encoding_round_trip(key):
    assert decode_key(encode_key(key)) == key


@pytest.mark.parametrize("bad", ["", "0" * 52, K[:-1], K + "a", K.upper() + "!", "é" * 52])
def test_bad_keys(bad):
    with pytest.raises(KeyEncodingError):
        decode_key(bad)


@given(
    st.lists(
        st.one_of(
            st.builds(lambda ip, port: Address("tcp", host=ip, port=port, peer_key=os.urandom(32)),
                      st.ip_addresses().map(str), st.integers(0, 65535)),
            st.builds(lambda p: Address("unix", path="/run/" + p, peer_key=None),
                      st.text("abcdefgh_.-/", min_size=1, max_size=30)),
        ),
        min_size=1, max_size=5,
    )
)
def test_format_parse_round_trip(alts):
    m = MultiAddress(tuple(alts))
    assert parse(m.format()) == m


# -- strictness: ASCII digits, canonical forms (issue 12.8) ----------------------------------


@pytest.mark.parametrize("text", [
    "tcp:1.2.3.4:²",  # passes str.isdigit(), int() raises a bare ValueError
    "tcp:1.2.3.4:٣٤",  # Arabic-Indic digits: int() would accept them
    "tcp:1.2.3.4:\uff11\uff12",  # fullwidth digits
    "tcp:1.2.3.4:080",  # leading zero
    "tcp:1.2.3.4:00",
    "tcp:1.2.3.4:+80",
    "tcp:1.2.3.4: 80",
    "tcp:1.2.3.4:",
    "tcp:1.2.3.4:655350",
    "tcp:01.2.3.4:80",  # leading zero in an IPv4 octet
    "tcp:1.2.3:80",  # digits and dots but not a dotted quad
    "tcp:ünicode.example:80",  # non-ASCII letters pass str.isalnum()
    "tcp:exa²mple:80",
    "tcp:-bad.example:80",
    "tcp:a..b:80",
    "tcp:[0:0::1]:80",  # not the canonical IPv6 form
    "tcp:[::FFFF:1.2.3.4]:80",
    "tcp:[fe80::1%eth0]:80",  # zone ids are not portable
    "unix:/tmp/a\x00b",
])
def test_only_ascii_canonical_forms(text):
    with pytest.raises(AddressError):
        parse(text)


@pytest.mark.parametrize("text", ["tcp:1.2.3.4:0", "tcp:1.2.3.4:65535", "tcp:[::1]:7", "tcp:my-host.example:80",
                                  "tcp:localhost:1", "tcp:[2001:db8::1]:443"])
def test_canonical_forms_accepted(text):
    assert parse(text).format() == text


@given(st.text(max_size=120))
def test_parse_raises_only_address_error(text):
    try:
        parse(text)
    except AddressError:
        pass


ADDRESSY = st.text(alphabet="tcpunix:[]0123456789.;~noise²٣abcdef-/%", max_size=80)


@given(st.one_of(ADDRESSY, st.builds(lambda a, b: f"tcp:{a}:{b}", ADDRESSY, ADDRESSY),
                 st.builds(lambda a: f"tcp:1.2.3.4:5~noise:{a}", st.text(max_size=60))))
def test_parse_raises_only_address_error_near_valid(text):
    try:
        multi = parse(text)
    except AddressError:
        return
    for alt in multi.alternatives:  # whatever is accepted is canonical: it formats back to itself
        assert parse(alt.format()).alternatives[0] == alt
        assert all(c in "0123456789" for c in str(alt.port))
