"""The pure parts of LAN discovery: the TXT record format, addresses, the peer table. No
sockets here; mDNS on loopback is in tests/integration/test_lan_mdns.py."""

from __future__ import annotations

import pytest

from networker.address import parse
from networker.encoding import encode_key
from networker.errors import MalformedLanRecordError
from networker.lan import (
    MAX_LABEL_BYTES,
    MAX_TOPICS,
    MAX_TXT_STRING,
    LanDiscovery,
    LanPeerTable,
    LanRecord,
    decode_txt,
    encode_txt,
    format_address,
    instance_name,
    service_name,
)

PEER = bytes(range(32))
TOPICS = [bytes([n]) * 32 for n in range(1, MAX_TOPICS + 1)]


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


def split_txt(text: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(text):
        out.append(text[pos + 1 : pos + 1 + text[pos]])
        pos += 1 + text[pos]
    return out


@pytest.mark.parametrize("count", [0, 1, 4, 5, MAX_TOPICS])
def test_txt_round_trip(count: int) -> None:
    record = LanRecord(PEER, frozenset(TOPICS[:count]))
    text = encode_txt(record)
    assert decode_txt(text) == record
    strings = split_txt(text)
    assert all(len(s) <= MAX_TXT_STRING for s in strings)
    assert strings[:2] == [b"v=1", b"id=" + encode_key(PEER).encode()]
    assert len(text) < 1300  # one packet on any LAN (RFC 6763 section 6.2)


def test_txt_broadcasts_nothing_but_ids_and_discovery_keys() -> None:
    strings = split_txt(encode_txt(LanRecord(PEER, frozenset(TOPICS[:5]))))
    keys = [s.partition(b"=")[0] for s in strings]
    assert keys == [b"v", b"id", b"t0", b"t1"]


def test_encode_rejects_too_many_or_bad_keys() -> None:
    with pytest.raises(ValueError):
        encode_txt(LanRecord(PEER, frozenset([*TOPICS, b"\xff" * 32])))
    with pytest.raises(ValueError):
        encode_txt(LanRecord(PEER, frozenset([b"short"])))
    with pytest.raises(ValueError):
        encode_txt(LanRecord(PEER[:31], frozenset()))


def test_decode_ignores_unknown_keys_and_takes_the_first_occurrence() -> None:
    t = encode_key(TOPICS[0]).encode()
    text = txt(b"v=1", b"ID=" + encode_key(PEER).encode(), b"id=garbage", b"t0=" + t, b"t0=garbage",
               b"future=stuff", b"flag", b"", b"=nokey")
    assert decode_txt(text) == LanRecord(PEER, frozenset([TOPICS[0]]))


@pytest.mark.parametrize(
    "text",
    [
        b"",
        txt(b"id=" + encode_key(PEER).encode()),  # no version
        txt(b"v=2", b"id=" + encode_key(PEER).encode()),  # unknown version
        txt(b"v=1"),  # no peer id
        txt(b"v=1", b"id=" + encode_key(PEER[:31]).encode()),  # peer id of 31 bytes
        txt(b"v=1", b"id=" + encode_key(PEER + b"x").encode()),  # peer id of 33 bytes
        txt(b"v=1", b"id=not!base32"),
        txt(b"v=1", b"id=" + encode_key(PEER).encode(), b"t0=" + encode_key(b"k" * 16).encode()),
        txt(b"v=1", b"id=" + encode_key(PEER).encode(), b"t0=" + encode_key(TOPICS[0]).encode() + b","),
        txt(b"v=1", b"id=" + "é".encode()),
        b"\x10v=1",  # truncated string
    ],
)
def test_decode_rejects_malformed_records(text: bytes) -> None:
    with pytest.raises(MalformedLanRecordError):
        decode_txt(text)


def test_decode_rejects_more_than_the_cap() -> None:
    strings = [b"v=1", b"id=" + encode_key(PEER).encode()]
    keys = [encode_key(bytes([n]) * 32) for n in range(MAX_TOPICS + 1)]
    for n in range(0, len(keys), 4):
        strings.append(f"t{n // 4}=".encode() + ",".join(keys[n : n + 4]).encode())
    with pytest.raises(MalformedLanRecordError):
        decode_txt(txt(*strings))


def test_instance_name_fits_one_dns_label() -> None:
    assert len(instance_name(PEER).encode()) <= MAX_LABEL_BYTES
    assert service_name(PEER) == f"{encode_key(PEER)}._cobox._tcp.local."


def test_format_address_parses_back_with_the_peer_key() -> None:
    text = format_address(["192.168.1.5"], 4000, PEER)
    assert text == f"tcp:192.168.1.5:4000~noise:{encode_key(PEER)}"
    (alt,) = parse(text).alternatives
    assert (alt.host, alt.port, alt.peer_key) == ("192.168.1.5", 4000, PEER)
    two = parse(format_address(["10.0.0.1", "192.168.1.5"], 4000, PEER))
    assert [a.host for a in two.alternatives] == ["10.0.0.1", "192.168.1.5"]
    for ips, port in [([], 4000), (["10.0.0.1"], 0), (["10.0.0.1"], 70000)]:
        with pytest.raises(MalformedLanRecordError):
            format_address(ips, port, PEER)


def test_peer_table_reports_only_what_is_new() -> None:
    table = LanPeerTable()
    t1, t2, t3 = TOPICS[:3]
    assert table.update("a", PEER, "addr1", frozenset([t1, t2])) == [(t1, PEER, "addr1"), (t2, PEER, "addr1")]
    assert table.update("a", PEER, "addr1", frozenset([t1, t2])) == []
    assert table.update("a", PEER, "addr1", frozenset([t2, t3])) == [(t3, PEER, "addr1")]
    assert table.lookup(t1) == []
    assert table.lookup(t3) == [(PEER, "addr1")]
    # a new address is news for every topic
    assert table.update("a", PEER, "addr2", frozenset([t2, t3])) == [(t2, PEER, "addr2"), (t3, PEER, "addr2")]
    table.remove("a")
    assert table.lookup(t2) == [] and len(table) == 0
    table.remove("a")  # removing twice is fine


def test_peer_table_is_bounded() -> None:
    table = LanPeerTable(max_peers=2)
    t = TOPICS[0]
    assert table.update("a", b"a" * 32, "x", frozenset([t]))
    assert table.update("b", b"b" * 32, "y", frozenset([t]))
    assert table.update("c", b"c" * 32, "z", frozenset([t])) == []
    assert len(table.lookup(t)) == 2
    table.remove("a")
    assert table.update("c", b"c" * 32, "z", frozenset([t])) == [(t, b"c" * 32, "z")]


def test_set_topics_caps_and_validates_without_starting() -> None:
    lan = LanDiscovery(PEER, 4000, interfaces=["127.0.0.1"], on_peer=lambda *a: None)
    lan.set_topics({*TOPICS, b"\xff" * 32})
    assert lan._topics == frozenset(TOPICS)  # the first MAX_TOPICS in byte order
    with pytest.raises(ValueError):
        lan.set_topics({b"short"})
    with pytest.raises(ValueError):
        LanDiscovery(PEER[:31], 4000, on_peer=lambda *a: None)
    with pytest.raises(ValueError):
        LanDiscovery(PEER, 0, on_peer=lambda *a: None)
